"""`/healthz`: 200 once the API serves and its database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from editaudit.service.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(s: SessionDep) -> dict:
    s.execute(text("SELECT 1"))
    return {"status": "ok"}
