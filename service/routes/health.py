"""`/healthz`: 200 once the API serves and its database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from editaudit.service.deps import SessionDep
from editaudit.service.schemas.health import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz(s: SessionDep):
    s.execute(text("SELECT 1"))
    return HealthOut(status="ok")
