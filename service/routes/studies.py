"""`/studies`: a grid of edits + audits on one model and scenario. Validated in full (every run, as an edit) before
anything is stored; each run is then an ordinary edit on the queue, so workers run them in parallel."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.core.queue import RUN_EDIT
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.listing import CreatedAfter, Page
from editaudit.service.schemas.studies import StudyAccepted, StudyOut, StudyRequest, StudySummaryRow
from editaudit.service.services import studies
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.study import render
from editaudit.study.summary import summarise

router = APIRouter(tags=["studies"])
log = logging.getLogger(__name__)
REPORT_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}
REPORT_DOC = {200: {"description": "the report", "content": {t.split(";")[0]: {} for t in REPORT_TYPES.values()}}}


@router.post("/studies", status_code=202, response_model=StudyAccepted,
             **op("submit_study", Scope.edits_write, 404, 409))
def create_study(req: StudyRequest, s: SessionDep, svc: SvcDep, sessions: TenantSessionsDep, request: Request):
    """Every run is validated as `POST /edits` would validate it (a bad one is a 422 naming `grid.runs.<i>`), then
    the study and all its runs are stored in one transaction and sent to the workers. 202 with
    `Location: /studies/{id}`."""
    def create() -> JSONResponse:
        study, edits = studies.add_study_rows(s, studies.validate_study(s, req, svc.settings.max_job_passes))
        s.commit()  # the rows exist before any worker can see a message
        for i, edit in enumerate(edits):
            try:
                svc.enqueue(RUN_EDIT, edit.id)
            except Exception as exc:  # noqa: BLE001 - broker down: the whole study fails visibly, sent runs too
                # (a worker that gets a sent one finds it failed and runs nothing), so a retry of the request, with
                # the same Idempotency-Key or not, is the one study that runs
                log.exception("could not enqueue run %s of study %s", i, study.id)
                for edit in edits:
                    repo.finish_edit(s, edit, Status.failed, f"could not enqueue the study's runs: {exc}")
                s.commit()
                raise Problem(503, f"the job queue is unreachable; every run of study {study.id} was marked failed",
                              field="broker", study_id=study.id) from None
        audits = studies.audits_of(s, edits)
        out = StudyAccepted(id=study.id, runs=[studies.run_out(study, e, audits[e.id]) for e in edits])
        return JSONResponse(jsonable_encoder(out), status_code=202, headers={"Location": f"/studies/{study.id}"})

    return idempotent(request, sessions, payload_hash(req.model_dump(mode="json")), create)


@router.get("/studies", response_model=Page[StudySummaryRow], **op("list_studies", Scope.audits_read))
def list_studies(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE), cursor: str | None = None,
                 created_after: CreatedAfter = None):
    """The tenant's studies, newest first."""
    rows, nxt = page(s, db.Study, limit, cursor, created_after)
    return Page[StudySummaryRow](items=[StudySummaryRow(id=r.id, name=r.name, model_id=r.model_id, runs=len(r.cells),
                                                        created_at=r.created_at, canceled_at=r.canceled_at)
                                        for r in rows], next_cursor=nxt)


def study_out(s, study: db.Study) -> StudyOut:
    edits = studies.study_edits(s, study)
    audits = studies.audits_of(s, edits)
    status, counts = studies.status_of(study, edits)
    summary = summarise(studies.summary_rows(s, study, edits, audits),
                        policy_name=_policy_name(study.request["pinned_policy"]["ref"]))
    return StudyOut(id=study.id, name=study.name, model_id=study.model_id, status=status, counts=counts,
                    created_at=study.created_at, canceled_at=study.canceled_at, request=study.request,
                    runs=[studies.run_out(study, e, audits[e.id]) for e in edits], summary=summary)


def _policy_name(ref: dict) -> str:
    """`default (builtin)`, `team v3`, `inline`: the policy as pinned when the study was submitted."""
    if "inline" in ref:
        return "inline"
    return f"{ref['name']} ({ref['version']})" if ref["version"] == "builtin" else f"{ref['name']} v{ref['version']}"


@router.get("/studies/{study_id}", response_model=StudyOut, **op("get_study", Scope.audits_read, 404))
def get_study(study_id: str, s: SessionDep):
    """Its runs and their state, and the summary of those that have finished (it grows as runs finish)."""
    return study_out(s, repo.get_or_404(s, db.Study, study_id))


@router.get("/studies/{study_id}/report.{fmt}", response_class=Response,
            **op("get_study_report", Scope.audits_read, 404, responses=REPORT_DOC))
def get_study_report(study_id: str, fmt: str, s: SessionDep):
    """json (versioned), md (the recommendation and findings first), html (self-contained, with plots)."""
    if fmt not in REPORT_TYPES:
        raise Problem(404, f"no report format {fmt!r}; valid: {sorted(REPORT_TYPES)}", field="fmt")
    out = study_out(s, repo.get_or_404(s, db.Study, study_id))
    meta = {"id": out.id, "name": out.name, "model_id": out.model_id, "created_at": out.created_at.isoformat(),
            "status": out.status, "counts": out.counts}
    body = {"json": render.as_json, "md": render.markdown, "html": render.html}[fmt](out.summary, meta)
    return Response(body, media_type=REPORT_TYPES[fmt])


@router.post("/studies/{study_id}/cancel", response_model=StudyOut, **op("cancel_study", Scope.edits_write, 404, 409))
def cancel_study(study_id: str, s: SessionDep):
    """Cancels every run still queued or running (a running one stops at its next batch and stores nothing);
    finished runs keep their results."""
    study = repo.get_or_404(s, db.Study, study_id)
    studies.cancel(s, study)  # 409 when no run is queued or running
    s.commit()
    return study_out(s, study)
