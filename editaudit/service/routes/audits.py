"""`/audits/{id}`: the measured numbers of baseline vs candidate, keyed by DESIGN.md's metric names."""

from __future__ import annotations

from fastapi import APIRouter

from editaudit.service import db
from editaudit.service.deps import SessionDep
from editaudit.service.errors import not_found
from editaudit.service.schemas import AuditOut

router = APIRouter(tags=["audits"])


def audit_dict(audit: db.Audit) -> dict:
    r = audit.result or {}
    return AuditOut(id=audit.id, status=audit.status, edit_id=audit.edit_id,
                    metrics=r.get("metrics", {"baseline": {}, "candidate": {}}), deltas=r.get("deltas", {}),
                    samples=r.get("samples"), durations_s=r.get("durations_s"), device=r.get("device"),
                    config=audit.config, versions=audit.versions, created_at=audit.created_at,
                    finished_at=audit.finished_at).model_dump()


@router.get("/audits/{audit_id}", response_model=AuditOut)
def get_audit(audit_id: str, s: SessionDep):
    audit = s.get(db.Audit, audit_id)
    if audit is None:
        raise not_found("audit", audit_id)
    return audit_dict(audit)
