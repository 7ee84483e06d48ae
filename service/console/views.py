"""What each console page shows, read through the caller's tenant session (another tenant's rows are invisible
to every query here, as to the API's) and reusing the API's own reads (lineage, the gate, a study's summary), so a
page and the JSON it mirrors cannot disagree. Read-only: the gate is evaluated without recording an event."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.contracts.statuses import ACTIVE, Status
from editaudit.core import db, repo
from editaudit.service.errors import Problem
from editaudit.service.routes.models import get_model_lineage
from editaudit.service.routes.studies import study_out
from editaudit.service.services import reports, studies
from editaudit.service.services.listing import page
from editaudit.service.services.reports.view import Gate

PAGE = 50
DEFAULT_POLICY = "default"


def active(rows) -> bool:
    """Whether a page shows work still in progress (it then refreshes itself)."""
    return any(r.status in ACTIVE for r in rows)


def audit_ids(s: Session, edits: list[db.Edit]) -> dict[str, str]:
    """edit id -> its audit's id, in one query."""
    if not edits:
        return {}
    q = select(db.Audit.edit_id, db.Audit.id).where(db.Audit.edit_id.in_([e.id for e in edits]))
    return {edit_id: audit_id for edit_id, audit_id in s.execute(q)}


def edits_page(s: Session, cursor: str | None, status: str | None = None, method: str | None = None,
               model_id: str | None = None) -> dict[str, Any]:
    """Edits newest first, filtered as GET /edits is (status, method, model); a sweep's sub-edits on their sweep's
    page rather than here."""
    q = select(db.Edit).where(db.Edit.sweep_id.is_(None))
    for column, value in ((db.Edit.status, status), (db.Edit.method, method), (db.Edit.model_id, model_id)):
        q = q.where(column == value) if value else q
    rows, nxt = page(s, db.Edit, PAGE, cursor, None, q)
    return {"edits": rows, "audits": audit_ids(s, rows), "cursor": cursor, "next_cursor": nxt,
            "refresh": active(rows), "statuses": [st.value for st in Status],
            "methods": sorted(EDIT_PARAMS.names()),
            "filters": {"status": status or "", "method": method or "", "model_id": model_id or ""}}


def gate_view(s: Session, edit: db.Edit, scopes: frozenset[str]) -> Gate:
    """The edit's gate under the default policy, as the reports show it (reports.gate_of: the verdict only for a
    key holding gate:read, why not otherwise); a policy the gate cannot apply is said on the page, not a 500."""
    try:
        return reports.gate_of(s, edit, DEFAULT_POLICY, scopes)
    except Problem as p:
        return Gate(None, DEFAULT_POLICY, [], [], why=p.detail)


def promotions_of(s: Session, edit_id: str | None = None, offset: int = 0, limit: int = PAGE) -> list[db.Promotion]:
    q = select(db.Promotion).order_by(db.Promotion.id.desc())
    if edit_id is not None:
        q = q.filter_by(edit_id=edit_id)
    return list(s.scalars(q.offset(offset).limit(limit)))


def edit_page(s: Session, edit: db.Edit, scopes: frozenset[str]) -> dict[str, Any]:
    subs = repo.sub_edits(s, edit)
    return {"edit": edit, "audit": repo.audit_of(s, edit.id), "subs": subs, "sub_audits": audit_ids(s, subs),
            "gate": gate_view(s, edit, scopes), "promotions": promotions_of(s, edit.id, limit=1000),
            "refresh": active([edit, *subs])}


def models_page(s: Session, cursor: str | None) -> dict[str, Any]:
    rows, nxt = page(s, db.Model, PAGE, cursor, None)
    return {"models": rows, "cursor": cursor, "next_cursor": nxt, "refresh": False}


def model_page(s: Session, model: db.Model) -> dict[str, Any]:
    """The model, its lineage (ancestors root first, children), the aliases of its family and its edits."""
    family = repo.family_of(s, model.id)
    aliases = list(s.scalars(select(db.Alias).filter_by(family=family).order_by(db.Alias.name)))
    edits = list(s.scalars(select(db.Edit).filter_by(model_id=model.id)
                           .order_by(db.Edit.created_at.desc(), db.Edit.id.desc()).limit(PAGE)))
    return {"model": model, "lineage": get_model_lineage(model.id, s), "family": family, "aliases": aliases,
            "edits": edits, "audits": audit_ids(s, edits), "refresh": active(edits)}


def promotions_page(s: Session, number: int) -> dict[str, Any]:
    """The tenant's audit trail of gate decisions at promotion (promoted, overridden, refused) and reverts."""
    rows = promotions_of(s, offset=(number - 1) * PAGE, limit=PAGE + 1)
    return {"promotions": rows[:PAGE], "page": number, "more": len(rows) > PAGE, "refresh": False}


def studies_page(s: Session, cursor: str | None) -> dict[str, Any]:
    rows, nxt = page(s, db.Study, PAGE, cursor, None)
    runs: dict[str, list[db.Edit]] = {r.id: [] for r in rows}
    if rows:
        for edit in s.scalars(select(db.Edit).where(db.Edit.study_id.in_(list(runs)))):
            runs[str(edit.study_id)].append(edit)
    states = {r.id: studies.status_of(r, runs[r.id]) for r in rows}
    return {"studies": rows, "states": states, "cursor": cursor, "next_cursor": nxt,
            "refresh": any(status == Status.running for status, _ in states.values())}


def study_page(s: Session, study: db.Study) -> dict[str, Any]:
    out = study_out(s, study)
    return {"study": out, "refresh": out.status == Status.running}
