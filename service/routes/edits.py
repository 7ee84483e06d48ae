"""`/edits`: validate an edit request fully, commit its rows, then enqueue it by task name (no torch here)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import select

from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import ACTIVE, Status
from editaudit.core import db, repo
from editaudit.core.queue import RUN_EDIT
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.edits import EditAccepted, EditOut, EditRequest, SubEdit
from editaudit.service.schemas.listing import CreatedAfter, EditSummary, Page
from editaudit.service.services.edit_requests import add_edit_rows, validate_edit
from editaudit.service.services.gating import get_succeeded_edit
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.service.services.uploads import object_response

router = APIRouter(tags=["edits"])
log = logging.getLogger(__name__)
DOWNLOAD = {200: {"content": {"application/octet-stream": {}}, "description": "a safetensors file"}}


@router.post("/edits", status_code=202, response_model=EditAccepted, **op("submit_edit", Scope.edits_write, 404, 409))
def create_edit(req: EditRequest, s: SessionDep, svc: SvcDep, sessions: TenantSessionsDep, request: Request):
    """Validated in full before anything is stored; 202 with `Location: /edits/{id}`. With `Idempotency-Key`, a
    retry of the same request returns this response instead of a second job."""
    def create() -> JSONResponse:
        edit, audit, subs = add_edit_rows(s, validate_edit(s, req, svc.settings.max_job_passes))
        s.commit()  # the rows exist before any worker can see the message
        try:
            svc.enqueue(RUN_EDIT, edit.id)
        except Exception as exc:  # noqa: BLE001 - broker down: fail the job visibly rather than leave it queued
            log.exception("could not enqueue edit %s", edit.id)
            for e in [edit] + [e for _, e, _ in subs]:
                repo.finish_edit(s, e, Status.failed, f"could not enqueue: {exc}")
            s.commit()
            raise Problem(503, f"the job queue is unreachable; edit {edit.id} was marked failed",
                          field="broker") from None
        out = EditAccepted(id=edit.id, status=edit.status, audit_id=audit.id,
                           sub_edits=[SubEdit(layer=layer, id=e.id, audit_id=a.id) for layer, e, a in subs] or None)
        return JSONResponse(jsonable_encoder(out), status_code=202, headers={"Location": f"/edits/{edit.id}"})

    return idempotent(request, sessions, payload_hash(req.model_dump(mode="json")), create)


def edit_out(s, edit: db.Edit) -> EditOut:
    subs = [SubEdit(layer=e.layers[0], id=e.id, audit_id=repo.audit_of(s, e.id).id) for e in repo.sub_edits(s, edit)]
    return EditOut.model_validate({**{c.name: getattr(edit, c.name) for c in db.Edit.__table__.columns},
                                   "audit_id": repo.audit_of(s, edit.id).id, "sub_edits": subs or None})


@router.get("/edits", response_model=Page[EditSummary], **op("list_edits", Scope.audits_read))
def list_edits(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE), cursor: str | None = None,
               model_id: str | None = None, status: Status | None = None, method: str | None = None,
               created_after: CreatedAfter = None):
    """The tenant's edits, newest first, filtered by model, status, method and creation time."""
    q = select(db.Edit)
    for column, value in ((db.Edit.model_id, model_id), (db.Edit.status, status), (db.Edit.method, method)):
        if value is not None:
            q = q.where(column == value)
    rows, nxt = page(s, db.Edit, limit, cursor, created_after, q)
    return Page[EditSummary](items=[EditSummary.model_validate(e, from_attributes=True) for e in rows],
                             next_cursor=nxt)


@router.get("/edits/{edit_id}", response_model=EditOut, **op("get_edit", Scope.audits_read, 404))
def get_edit(edit_id: str, s: SessionDep):
    return edit_out(s, repo.get_or_404(s, db.Edit, edit_id))


@router.get("/edits/{edit_id}/weights", response_class=Response,
            **op("download_edit_weights", Scope.audits_read, 404, 409, store=True, responses=DOWNLOAD))
def get_edit_weights(edit_id: str, s: SessionDep, svc: SvcDep):
    edit = get_succeeded_edit(s, edit_id, "weights")
    assert edit.edited_model_id is not None  # a succeeded edit made a model
    model = repo.get_or_404(s, db.Model, edit.edited_model_id)
    return object_response(svc.store, model.object_key, f"{model.id}.safetensors", model.sha256)


@router.get("/edits/{edit_id}/delta", response_class=Response,
            **op("download_edit_delta", Scope.audits_read, 404, 409, store=True, responses=DOWNLOAD))
def get_edit_delta(edit_id: str, s: SessionDep, svc: SvcDep):
    """The changed tensors (new values) as safetensors: the parent's weights updated with these are the edit's."""
    edit = get_succeeded_edit(s, edit_id, "delta")
    if edit.delta_object_key is None or edit.delta_sha256 is None:
        raise Problem(404, f"edit {edit_id} finished before deltas were recorded; diff its weights with its parent's",
                      field="edit_id")
    return object_response(svc.store, edit.delta_object_key, f"{edit_id}.delta.safetensors", edit.delta_sha256)


@router.post("/edits/{edit_id}/cancel", response_model=EditOut, **op("cancel_edit", Scope.edits_write, 404, 409))
def cancel_edit(edit_id: str, s: SessionDep):
    """Cooperative: a queued edit never starts; a running one stops at its next batch and stores nothing."""
    edit = repo.get_or_404(s, db.Edit, edit_id)
    if edit.status not in ACTIVE:
        raise Problem(409, f"edit {edit_id} is already {edit.status}", field="edit_id")
    for e in [edit] + [e for e in repo.sub_edits(s, edit) if e.status in ACTIVE]:
        repo.finish_edit(s, e, Status.canceled, "canceled by request")
    s.commit()
    return edit_out(s, edit)
