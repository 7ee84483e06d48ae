"""`/healthz`: 200 once the API serves and its database answers; in the embedded mode, the local worker's state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from editaudit.service.deps import SessionDep
from editaudit.service.schemas.health import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz(s: SessionDep, request: Request):
    s.execute(text("SELECT 1"))
    worker = getattr(request.app.state, "worker_health", None)  # set by the embedded server's supervisor
    return HealthOut(status="ok", worker=worker() if worker else None)
