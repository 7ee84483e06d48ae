"""`/healthz`: 200 once the API serves and its database answers; in the embedded mode, the local worker's state.
`/readyz`: every dependency (database and its migration, broker, store, a live worker), 503 naming what is not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from editaudit.service.deps import SessionDep
from editaudit.core.migrate import current_revision, head_revision
from editaudit.service.errors import RETRY_AFTER_S, problem_response
from editaudit.service.schemas.health import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz(s: SessionDep, request: Request):
    s.execute(text("SELECT 1"))
    worker = getattr(request.app.state, "worker_health", None)  # set by the embedded server's supervisor
    return HealthOut(status="ok", worker=worker() if worker else None)


def _checks(request: Request) -> dict[str, str]:
    """Each dependency: "ok" or why not. Failures never raise: readiness reports them."""
    svc = request.app.state.services
    out = {}
    try:
        with svc.sessions() as s:
            at = current_revision(s.connection())
        head = head_revision(svc.settings.resolved_database_url)
        out["database"] = "ok"
        out["migrations"] = "ok" if at == head else f"the database is at {at}, the code expects {head}: run migrate"
    except Exception as e:  # noqa: BLE001
        out["database"] = f"unreachable: {type(e).__name__}"
    try:
        with svc.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        out["broker"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["broker"] = f"unreachable: {type(e).__name__}"
    try:
        svc.store.exists("readyz-probe")
        out["store"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["store"] = f"unreachable: {type(e).__name__}"
    embedded = getattr(request.app.state, "worker_health", None)
    if embedded is not None:
        out["worker"] = "ok" if embedded()["alive"] else "the local worker is not running (restarting)"
    elif out["broker"] == "ok":
        try:
            out["worker"] = "ok" if svc.celery.control.ping(timeout=1.0) else "no worker answered a ping"
        except Exception as e:  # noqa: BLE001
            out["worker"] = f"ping failed: {type(e).__name__}"
    return out


@router.get("/readyz", response_model=ReadyOut, responses={503: {"description": "a dependency is not ready"}})
def readyz(request: Request):
    """Ready to take work: database reachable and migrated to this code's head, broker, object store, and a live
    worker. 503 problem+json naming what is not ready (with Retry-After) otherwise."""
    checks = _checks(request)
    bad = {k: v for k, v in checks.items() if v != "ok"}
    if bad:
        response = problem_response(503, "not ready: " + "; ".join(f"{k}: {v}" for k, v in bad.items()),
                                    [{"field": k, "reason": v} for k, v in bad.items()], request.url.path,
                                    checks=checks)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return ReadyOut(status="ready", checks=checks)
