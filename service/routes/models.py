"""`/models`: checkpoints in (safetensors only, checked against the architecture), weights out."""

from __future__ import annotations

import logging

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select

from editaudit.contracts.formats import FormatError, nonfinite_tensors, read_safetensors_header
from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import IngestStatus
from editaudit.core import arch_manifest, db, layers, repo
from editaudit.core.storage import content_key, sha256_file
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.listing import CreatedAfter, Page
from editaudit.service.schemas.models import LayersOut, LineageOut, ModelOut
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.ingest import enqueue_ingest
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.service.services.model_specs import json_upload, parse_spec, stored_spec
from editaudit.service.services.uploads import created_response, insert_once, object_response, spooled_upload

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)
MIB = 1024 * 1024
DOWNLOAD = {200: {"content": {"application/octet-stream": {}}, "description": "the safetensors file"}}


def model_out(m: db.Model) -> ModelOut:
    return ModelOut.model_validate(m, from_attributes=True)


@router.post("/models", status_code=201, response_model=ModelOut,
             **op("upload_model", Scope.models_write, 409, 413, 415, upload=True, store=True,
                  responses={200: {"model": ModelOut, "description": "the same upload exists: that model"}}))
def upload_model(svc: SvcDep, s: SessionDep, sessions: TenantSessionsDep, request: Request,
                 weights: UploadFile = File(description="a safetensors state_dict (Hugging Face: model.safetensors)"),
                 spec: str | None = Form(None, description='JSON, e.g. {"arch": "torchvision/resnet18", '
                                                           '"num_classes": 10, "input_shape": [3, 32, 32]} or '
                                                           '{"arch": "timm/resnet50"}; optional with `config`'),
                 config: UploadFile | None = File(None, description="a Hugging Face config.json"),
                 preprocessor_config: UploadFile | None = File(None, description="its preprocessor_config.json")):
    """Identical weights and spec in the same tenant return the existing model (200, not a second row), however
    many arrive at once. A registered architecture's checkpoint is checked here and is `ready` at once; a timm or
    Hugging Face one is `validating` until a worker has built the model and loaded the weights (`ready`, with the
    spec resolved from the model's config, or `invalid` naming the first tensor that does not fit)."""
    parts = ((config, "config"), (preprocessor_config, "preprocessor_config"))
    model_spec = parse_spec(spec, *(None if part is None else json_upload(part, name) for part, name in parts))
    spooled, size = spooled_upload(weights, "weights", svc.settings.max_upload_mb)
    try:
        header = read_safetensors_header(spooled, max_header_bytes=int(svc.settings.max_safetensors_header_mb * MIB))
    except FormatError as e:
        raise Problem(415 if e.pickle else 422, e.reason, field="weights") from None
    by_worker = arch_manifest.worker_checked(model_spec.arch)
    if not by_worker:
        assert model_spec.num_classes is not None and model_spec.input_shape is not None  # parse_spec checked
        mismatch = arch_manifest.first_mismatch(model_spec.arch, model_spec.num_classes, model_spec.input_shape[0],
                                                header)
        if mismatch:
            raise Problem(422, f"state_dict does not fit {model_spec.arch}: {mismatch}", field="weights")
    nonfinite = nonfinite_tensors(spooled, header)
    if nonfinite:  # a NaN weight poisons every audit number computed from it
        raise Problem(422, f"weights hold NaN or infinity in {nonfinite[:3]}", field="weights")
    digest, _ = sha256_file(spooled)
    spec_dict = stored_spec(model_spec)
    identity = repo.upload_key(digest, spec_dict)
    status = IngestStatus.validating if by_worker else IngestStatus.ready

    def create() -> JSONResponse:
        key = content_key("models", digest, ".safetensors")
        row, created = insert_once(s, svc.store, db.Model, identity, key, spooled, lambda: db.Model(
            sha256=digest, arch=model_spec.arch, spec=spec_dict, object_key=key, size_bytes=size, upload_key=identity,
            status=status))
        if created and row.status == IngestStatus.validating:
            enqueue_ingest(svc, s, row)
        return created_response(model_out(row), f"/models/{row.id}", created=created)

    return idempotent(request, sessions, payload_hash(digest, spec_dict), create)


@router.get("/models", response_model=Page[ModelOut], **op("list_models", Scope.audits_read))
def list_models(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                cursor: str | None = None, created_after: CreatedAfter = None):
    """The tenant's models (uploads and edited ones), newest first."""
    rows, nxt = page(s, db.Model, limit, cursor, created_after)
    return Page[ModelOut](items=[model_out(m) for m in rows], next_cursor=nxt)


@router.get("/models/{model_id}", response_model=ModelOut, **op("get_model", Scope.audits_read, 404))
def get_model(model_id: str, s: SessionDep):
    return model_out(repo.get_or_404(s, db.Model, model_id))


@router.get("/models/{model_id}/weights", response_class=Response,
            **op("download_model_weights", Scope.audits_read, 404, store=True, responses=DOWNLOAD))
def get_model_weights(model_id: str, s: SessionDep, svc: SvcDep):
    row = repo.get_or_404(s, db.Model, model_id)
    return object_response(svc.store, row.object_key, f"{row.id}.safetensors", row.sha256)


@router.get("/models/{model_id}/layers", response_model=LayersOut,
            **op("get_model_layers", Scope.audits_read, 404, 409))
def get_model_layers(model_id: str, s: SessionDep):
    """The modules an edit may name in `layers` (each owns parameters; a block's path, e.g. `layer4`, and globs
    such as `layer4.1.*` name several), with their type, weight shape, parameter count and what `rewrite` matches
    there. 409 while a timm / Hugging Face model is still validating."""
    row = repo.get_or_404(s, db.Model, model_id)
    repo.require_ready(row, "model_id")
    return {"model_id": row.id, "arch": row.arch, "layers": layers.module_table(row.arch, row.spec, row.info)}


@router.get("/models/{model_id}/lineage", response_model=LineageOut,
            **op("get_model_lineage", Scope.audits_read, 404))
def get_model_lineage(model_id: str, s: SessionDep):
    """Ancestors (root first, each with the edit that made the next one) and the models edited from this one."""
    repo.get_or_404(s, db.Model, model_id)
    chain = [{"id": m.id, "edit_id": m.edit_id, "parent_model_id": m.parent_model_id, "sha256": m.sha256,
              "created_at": m.created_at} for m in repo.ancestors(s, model_id)]
    children = s.scalars(select(db.Model).filter_by(parent_model_id=model_id)).all()
    return {"model_id": model_id, "ancestors": chain,
            "children": [{"id": c.id, "edit_id": c.edit_id, "created_at": c.created_at} for c in children]}
