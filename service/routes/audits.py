"""`/audits/{id}`: the measured numbers of baseline vs candidate, keyed by the metric names of
editaudit.contracts.metrics, and the audit's reports."""

from __future__ import annotations

from fastapi import APIRouter, Response

from editaudit.core import db, repo
from editaudit.gate.evaluate import GateResult
from editaudit.gate.render import as_junit
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem
from editaudit.service.schemas.audits import AuditOut
from editaudit.service.services import reports
from editaudit.service.services.audits import audit_dict
from editaudit.service.services.gating import gate_for

router = APIRouter(tags=["audits"])

REPORT_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
                "xml": "application/xml"}


@router.get("/audits/{audit_id}", response_model=AuditOut)
def get_audit(audit_id: str, s: SessionDep):
    return audit_dict(repo.get_or_404(s, db.Audit, audit_id))


@router.get("/audits/{audit_id}/report.{fmt}")
def get_report(audit_id: str, fmt: str, s: SessionDep, tenant: TenantDep, policy: str = "default"):
    """json (versioned), md (PR comment), html (self-contained, with plots), xml (JUnit: the gate under `policy`)."""
    if fmt not in REPORT_TYPES:
        raise Problem(404, f"no report format {fmt!r}; valid: {sorted(REPORT_TYPES)}", field="fmt")
    audit = repo.get_or_404(s, db.Audit, audit_id)
    if fmt == "xml":
        result = gate_for(s, tenant, audit.edit_id, policy)
        body = as_junit(GateResult.from_dict(result),
                        suite=f"editaudit gate {audit.edit_id}")
    else:
        body = {"json": reports.as_json, "md": reports.as_markdown, "html": reports.as_html}[fmt](audit_dict(audit))
    return Response(body, media_type=REPORT_TYPES[fmt])
