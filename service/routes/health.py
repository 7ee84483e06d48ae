"""`/healthz`: 200 once the API serves and its database answers; in the embedded mode, the local worker's state.
`/readyz`: every dependency the API needs to serve (database and its migration, broker, store), 503 naming what is
not; the workers' heartbeats are reported beside them, never a reason for 503.

Why workers do not decide readiness: a readiness probe takes an API replica out of rotation, which helps only when
that replica cannot serve. Without a free worker it still serves everything (reads, gates, uploads; submitted jobs
wait in the queue and run when a worker frees up), and a busy solo-pool worker, which answers no ping, is the normal
state of a working system. So a worker that has not beaten within `worker_stale_s` is a warning in the body (and
the age is in /metrics, for an alert), not a 503."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from editaudit.core import db
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


def _workers(request: Request) -> tuple[dict[str, dict], list[str]]:
    """Each worker's heartbeat age, and warnings: none fresh, or (embedded) the local worker process is down."""
    svc = request.app.state.services
    stale_s = svc.settings.worker_stale_s
    warnings = []
    try:
        with svc.sessions() as s:  # worker_heartbeats belongs to no tenant: a plain session may read it
            ages = db.heartbeat_ages(s)
    except Exception as e:  # noqa: BLE001 - the database check reports an outage; here it is only unknown
        return {}, [f"worker heartbeats could not be read ({type(e).__name__})"]
    workers = {name: {"age_s": round(age, 1), "fresh": age <= stale_s} for name, age in ages.items()}
    if not any(w["fresh"] for w in workers.values()):
        warnings.append(f"no worker has beaten in the last {stale_s:g} s: jobs wait in the queue until one runs "
                        "(start a worker, or see its logs)")
    embedded = getattr(request.app.state, "worker_health", None)
    if embedded is not None and not embedded()["alive"]:
        warnings.append("the local worker is not running (restarting)")
    return workers, warnings


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
    return out


READY_CACHE_S = 2.0  # a probe touches the database, broker and store: a flood of public probes must not multiply it


def _cached_checks(request: Request) -> tuple[dict[str, str], dict[str, dict], list[str]]:
    state = request.app.state
    cached: tuple[float, Any] = getattr(state, "ready_checks", (float("-inf"), None))
    at, found = cached
    if time.monotonic() - at > READY_CACHE_S:
        found = (_checks(request), *_workers(request))
        state.ready_checks = (time.monotonic(), found)
    return found


@router.get("/readyz", response_model=ReadyOut, **op("readyz", None, public=True))
def readyz(request: Request):
    """Ready to take work: database reachable and migrated to this code's head, broker and object store. 503
    problem+json naming what is not ready (with Retry-After) otherwise. `workers` (each one's heartbeat age) and
    `warnings` (e.g. no worker beat recently) inform; they never make it 503: busy workers are a working system."""
    checks, workers, warnings = _cached_checks(request)
    bad = {k: v for k, v in checks.items() if v != "ok"}
    if bad:
        return unavailable_response("not ready: " + "; ".join(f"{k}: {v}" for k, v in bad.items()), request.url.path,
                                    [{"field": k, "reason": v} for k, v in bad.items()], checks=checks,
                                    workers=workers, warnings=warnings)
    return ReadyOut(status="ready", checks=checks, workers=workers, warnings=warnings)
