"""`/healthz`: 200 once the API serves and its database answers; in the embedded mode, the local worker's state.
`/readyz`: every dependency (database and its migration, broker, store, a live worker), 503 naming what is not."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from sqlalchemy import text

from editaudit.core.migrate import current_revision, head_revision
from editaudit.service.deps import SvcDep
from editaudit.service.errors import unavailable_response
from editaudit.service.openapi import op
from editaudit.service.schemas.health import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, **op("healthz", None, public=True))
def healthz(svc: SvcDep, request: Request):
    with svc.sessions() as s:  # public, so no tenant: a plain session, which may touch no tenant's table
        s.execute(text("SELECT 1"))
    worker = getattr(request.app.state, "worker_health", None)  # set by the embedded server's supervisor
    return HealthOut(status="ok", worker=worker() if worker else None)


def _probe(check: Callable[[], object]) -> str:
    """ "ok", or why the dependency `check` touches is not reachable (readiness reports failures, never raises)."""
    try:
        check()
        return "ok"
    except Exception as e:  # noqa: BLE001
        return f"unreachable: {type(e).__name__}"


def _migration_state(svc) -> str:
    with svc.sessions() as s:
        at = current_revision(s.connection())
    head = head_revision(svc.settings.resolved_database_url)
    return "ok" if at == head else f"the database is at {at}, the code expects {head}: run migrate"


def _ping_broker(svc) -> None:
    with svc.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _checks(request: Request) -> dict[str, str]:
    """Each dependency: "ok" or why not."""
    svc = request.app.state.services
    out = {}
    try:
        out["migrations"] = _migration_state(svc)
        out["database"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["database"] = f"unreachable: {type(e).__name__}"
    out["broker"] = _probe(lambda: _ping_broker(svc))
    out["store"] = _probe(lambda: svc.store.exists("readyz-probe"))
    embedded = getattr(request.app.state, "worker_health", None)
    if embedded is not None:
        out["worker"] = "ok" if embedded()["alive"] else "the local worker is not running (restarting)"
    elif out["broker"] == "ok":
        try:
            out["worker"] = "ok" if svc.celery.control.ping(timeout=1.0) else "no worker answered a ping"
        except Exception as e:  # noqa: BLE001
            out["worker"] = f"ping failed: {type(e).__name__}"
    return out


READY_CACHE_S = 2.0  # a probe pings the workers (~1 s): a flood of public probes must not multiply that


def _cached_checks(request: Request) -> dict[str, str]:
    state = request.app.state
    at, checks = getattr(state, "ready_checks", (float("-inf"), None))
    if time.monotonic() - at > READY_CACHE_S:
        checks = _checks(request)
        state.ready_checks = (time.monotonic(), checks)
    return checks


@router.get("/readyz", response_model=ReadyOut, **op("readyz", None, public=True))
def readyz(request: Request):
    """Ready to take work: database reachable and migrated to this code's head, broker, object store, and a live
    worker. 503 problem+json naming what is not ready (with Retry-After) otherwise."""
    checks = _cached_checks(request)
    bad = {k: v for k, v in checks.items() if v != "ok"}
    if bad:
        return unavailable_response("not ready: " + "; ".join(f"{k}: {v}" for k, v in bad.items()), request.url.path,
                                    [{"field": k, "reason": v} for k, v in bad.items()], checks=checks)
    return ReadyOut(status="ready", checks=checks)
