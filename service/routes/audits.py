"""`/audits/{id}`: the measured numbers of baseline vs candidate, keyed by the metric names of
editaudit.contracts.metrics, and the audit's reports."""

from __future__ import annotations

import hashlib
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select

from editaudit.contracts.formats import samples as samples_file
from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.gate.evaluate import GateResult
from editaudit.gate.render import as_junit
from editaudit.service.deps import PrincipalDep, SessionDep, SvcDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.audits import AuditOut, SampleOut, SamplePage
from editaudit.service.schemas.listing import AuditSummary, CreatedAfter, Page
from editaudit.service.services import reports
from editaudit.service.services import samples as per_sample
from editaudit.service.services.audits import audit_out
from editaudit.service.services.gating import gate_for
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.service.services.uploads import object_response

router = APIRouter(tags=["audits"])

REPORT_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8",
                "xml": "application/xml"}
PARQUET = {200: {"content": {"application/octet-stream": {}}, "description": "a Parquet file"}}
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
            **op("get_audit_report", Scope.audits_read, 404, 409, store=True, responses=REPORT_DOC))
def get_report(audit_id: str, fmt: str, s: SessionDep, svc: SvcDep, caller: PrincipalDep, request: Request,
               policy: str = "default"):
    """json (versioned), md (a CI comment: verdict, what changed, top regressions, a link to the HTML one), html
    (one offline page: the gate verdict under `policy` first, then what changed, the edit, regressions, plots and
    the samples the edit broke and fixed), xml (JUnit: the gate under `policy`)."""
    if fmt not in REPORT_TYPES:
        raise Problem(404, f"no report format {fmt!r}; valid: {sorted(REPORT_TYPES)}", field="fmt")
    audit = repo.get_or_404(s, db.Audit, audit_id)
    if fmt == "xml":
        result = gate_for(s, audit.edit_id, policy)
        body = as_junit(GateResult.from_dict(result), suite=f"editaudit gate {audit.edit_id}")
    else:
        link = f"{str(request.base_url).rstrip('/')}/audits/{audit.id}/report.html?{urlencode({'policy': policy})}"
        body = reports.audit_report(s, svc, audit, fmt, policy, caller.scopes, link)
    return Response(body, media_type=REPORT_TYPES[fmt])


@router.get("/audits/{audit_id}/samples", response_model=SamplePage,
            **op("list_audit_samples", Scope.audits_read, 404, 409, store=True))
def list_samples(audit_id: str, s: SessionDep, svc: SvcDep, condition: str = "clean", split: str = "test",
                 flipped: Literal["broken", "fixed"] | None = None, cursor: str | None = None,
                 limit: int = Query(100, ge=1, le=MAX_PAGE)):
    """The audit's samples under one condition (`clean`, `adv.<attack id>`, `corruption.<type>.<severity>`), by index:
    all of them, or those the edit `broken` (baseline right, candidate wrong) or `fixed`. From the audit's per-sample
    file, the one its statistics were computed from."""
    audit = repo.get_or_404(s, db.Audit, audit_id)
    block = per_sample.block(svc.store, audit, split, condition)
    after = per_sample.decode_cursor(cursor) if cursor else None
    rows, last = samples_file.select(block, flipped, after, limit)
    kept = samples_file.kept_indices(per_sample.images(svc.store, audit), split, condition) if audit.images_key \
        else set()
    edit = s.get(db.Edit, audit.edit_id)
    model = s.get(db.Model, edit.model_id) if edit else None
    names = (model.spec or {}).get("class_names") if model else None
    items = [SampleOut(**r, label_name=per_sample.class_name(names, r["label"]),
                       baseline_class=per_sample.class_name(names, r["baseline_pred"]),
                       candidate_class=per_sample.class_name(names, r["candidate_pred"]),
                       image=f"/audits/{audit_id}/samples/{r['index']}/image?split={split}&condition={condition}"
                       if r["index"] in kept else None) for r in rows]
    return SamplePage(split=split, condition=condition, flipped=flipped, items=items,
                      next_cursor=per_sample.encode_cursor(last) if last is not None else None,
                      conditions=per_sample.conditions(svc.store, audit)[split])


@router.get("/audits/{audit_id}/samples.parquet", response_class=Response,
            **op("download_audit_samples", Scope.audits_read, 404, 409, store=True, responses=PARQUET))
def download_samples(audit_id: str, s: SessionDep, svc: SvcDep):
    """The per-sample outcomes file itself (Parquet: split, condition, index, label, both models' predictions), for
    pandas or DuckDB: recompute a statistic, a clustered interval or a policy without running the attacks again."""
    audit = repo.get_or_404(s, db.Audit, audit_id)
    key = per_sample.need(audit, "samples_key")
    return object_response(svc.store, key, f"{audit_id}.samples.parquet", key.rsplit("/", 1)[-1].split(".")[0])


@router.get("/audits/{audit_id}/samples/{index}/image", response_class=Response,
            **op("get_audit_sample_image", Scope.audits_read, 404, 409, store=True,
                 responses={200: {"description": "the input as PNG", "content": {"image/png": {}}}}))
def get_sample_image(audit_id: str, s: SessionDep, svc: SvcDep, index: int = Path(ge=0, lt=per_sample.MAX_INDEX),
                     condition: str = "clean", split: str = "test"):
    """The input the candidate saw for sample `index` under `condition` (the corrupted image, or the attack's
    adversarial input against the candidate), as PNG. Audits keep the inputs of the first flipped samples per
    condition and direction (`audit_keep_images`); others are a 404."""
    audit = repo.get_or_404(s, db.Audit, audit_id)
    per_sample.check_condition(svc.store, audit, split, condition)
    png = samples_file.find_image(per_sample.images(svc.store, audit), split, condition, index)
    if png is None:
        raise Problem(404, f"the audit did not keep the input of sample {index} under {condition} on {split}: it keeps "
                           "the first flipped samples per condition and direction (the `image` field of "
                           f"/audits/{audit_id}/samples says which)", field="index")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400",
                                                          "X-Content-SHA256": hashlib.sha256(png).hexdigest()})
