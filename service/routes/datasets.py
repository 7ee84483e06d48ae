"""`/datasets`: safetensors or .npz uploads with x, y (and x_orig, mask), validated before anything is stored."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from editaudit.contracts.formats import FormatError, scan_dataset
from editaudit.contracts.scopes import Scope
from editaudit.core import db, repo
from editaudit.core.storage import content_key, sha256_file
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.datasets import DatasetOut
from editaudit.service.schemas.listing import CreatedAfter, Page
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.service.services.uploads import created_response, insert_once, spooled_upload

router = APIRouter(tags=["datasets"])


def dataset_out(row: db.Dataset) -> DatasetOut:
    return DatasetOut.model_validate(row, from_attributes=True)


@router.post("/datasets", status_code=201, response_model=DatasetOut,
             **op("upload_dataset", Scope.models_write, 409, 415, upload=True, store=True,
                  responses={200: {"model": DatasetOut, "description": "the same file exists: that dataset"}}))
def upload_dataset(svc: SvcDep, s: SessionDep, sessions: TenantSessionsDep, request: Request,
                   file: UploadFile = File(description="safetensors or .npz with x, y (optional x_orig, mask)")):
    """Identical content in the same tenant returns the existing dataset (200, not a second row), however many
    arrive at once."""
    spooled, _ = spooled_upload(file, "file", svc.settings.max_upload_mb)
    filename = PurePath(file.filename or "upload").name[:200]
    if "\x00" in filename:
        raise Problem(422, "the file name holds a NUL byte", field="file")
    try:
        summary = scan_dataset(spooled, filename, max_expanded=svc.settings.max_upload_mb * 1024 * 1024)
    except FormatError as e:
        raise Problem(415 if e.pickle else 422, e.reason, field=e.field or "file") from None
    digest, _ = sha256_file(spooled)

    def create() -> JSONResponse:
        key = content_key("datasets", digest, summary.suffix)
        row, created = insert_once(s, svc.store, db.Dataset, digest, key, spooled, lambda: db.Dataset(
            sha256=digest, filename=filename, object_key=key, n=summary.n, shape=summary.shape,
            label_max=summary.label_max, has_x_orig=summary.has_x_orig, has_mask=summary.has_mask,
            upload_key=digest))
        return created_response(dataset_out(row), f"/datasets/{row.id}", created=created)

    return idempotent(request, sessions, payload_hash(digest), create)


@router.get("/datasets", response_model=Page[DatasetOut], **op("list_datasets", Scope.audits_read))
def list_datasets(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                  cursor: str | None = None, created_after: CreatedAfter = None):
    """The tenant's uploaded datasets, newest first (built-in ones are named `builtin:...`, see README)."""
    rows, nxt = page(s, db.Dataset, limit, cursor, created_after)
    return Page[DatasetOut](items=[dataset_out(r) for r in rows], next_cursor=nxt)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, **op("get_dataset", Scope.audits_read, 404))
def get_dataset(dataset_id: str, s: SessionDep):
    return dataset_out(repo.get_or_404(s, db.Dataset, dataset_id))
