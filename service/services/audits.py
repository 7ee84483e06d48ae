"""An audit row as the API serves it (`GET /audits/{id}`, reports, the gate)."""

from __future__ import annotations

from editaudit.core import db
from editaudit.service.schemas.audits import AuditOut


def audit_dict(audit: db.Audit) -> dict:
    r = audit.result or {}
    return AuditOut(id=audit.id, status=audit.status, edit_id=audit.edit_id,
                    metrics=r.get("metrics", {"baseline": {}, "candidate": {}}), deltas=r.get("deltas", {}),
                    samples=r.get("samples"), durations_s=r.get("durations_s"), device=r.get("device"),
                    curves=r.get("curves"), baseline_cached=r.get("baseline_cached"),
                    intervals=r.get("intervals"), notes=r.get("notes"),
                    alpha_curve=r.get("alpha_curve"), mli=r.get("mli"), sweep=r.get("sweep"),
                    config=audit.config, profile=audit.profile, versions=audit.versions, created_at=audit.created_at,
                    finished_at=audit.finished_at).model_dump()
