"""`/audits/{id}`: the measured numbers of baseline vs candidate, keyed by the metric names of
editaudit.contracts.metrics, and the audit's reports."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.gate.evaluate import GateResult
from editaudit.gate.render import as_junit
from editaudit.service.deps import SessionDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.audits import AuditOut
from editaudit.service.schemas.listing import AuditSummary, CreatedAfter, Page
from editaudit.service.services import reports
from editaudit.service.services.audits import audit_out
from editaudit.service.services.gating import gate_for
from editaudit.service.services.listing import MAX_PAGE, page

router = APIRouter(tags=["audits"])

REPORT_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
                "xml": "application/xml"}
REPORT_DOC = {200: {"description": "the report", "content": {t.split(";")[0]: {} for t in REPORT_TYPES.values()}}}


@router.get("/audits", response_model=Page[AuditSummary], **op("list_audits", Scope.audits_read))
def list_audits(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                cursor: str | None = None, edit_id: str | None = None, model_id: str | None = None,
                status: Status | None = None, method: str | None = None, created_after: CreatedAfter = None):
    """The tenant's audits, newest first, filtered by edit, the edited model, status, method and creation time."""
    q = select(db.Audit)
    if edit_id is not None:
        q = q.where(db.Audit.edit_id == edit_id)
    if status is not None:
        q = q.where(db.Audit.status == status)
    if model_id is not None or method is not None:
        q = q.join(db.Edit, db.Edit.id == db.Audit.edit_id)
        q = q.where(db.Edit.model_id == model_id) if model_id is not None else q
        q = q.where(db.Edit.method == method) if method is not None else q
    rows, nxt = page(s, db.Audit, limit, cursor, created_after, q)
    return Page[AuditSummary](items=[AuditSummary.model_validate(a, from_attributes=True) for a in rows],
                              next_cursor=nxt)


@router.get("/audits/{audit_id}", response_model=AuditOut, **op("get_audit", Scope.audits_read, 404))
def get_audit(audit_id: str, s: SessionDep):
    return audit_out(repo.get_or_404(s, db.Audit, audit_id))


@router.get("/audits/{audit_id}/report.{fmt}", response_class=Response,
            **op("get_audit_report", Scope.audits_read, 404, 409, responses=REPORT_DOC))
def get_report(audit_id: str, fmt: str, s: SessionDep, policy: str = "default"):
    """json (versioned), md (PR comment), html (self-contained, with plots), xml (JUnit: the gate under `policy`)."""
    if fmt not in REPORT_TYPES:
        raise Problem(404, f"no report format {fmt!r}; valid: {sorted(REPORT_TYPES)}", field="fmt")
    audit = repo.get_or_404(s, db.Audit, audit_id)
    if fmt == "xml":
        result = gate_for(s, audit.edit_id, policy)
        body = as_junit(GateResult.from_dict(result), suite=f"editaudit gate {audit.edit_id}")
    else:
        body = reports.rendered(audit_out(audit), fmt)
    return Response(body, media_type=REPORT_TYPES[fmt])
