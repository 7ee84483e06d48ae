"""`/datasets`: safetensors or .npz uploads with x, y (and x_orig, mask), validated before anything is stored, and
image-folder archives, checked member by member here and decoded into shards by a worker."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from editaudit.contracts.formats import FormatError, scan_archive, scan_dataset
from editaudit.contracts.scopes import Scope
from editaudit.contracts.statuses import IngestStatus
from editaudit.core import db, repo
from editaudit.core.storage import content_key, sha256_file
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.datasets import DatasetOut
from editaudit.service.schemas.listing import CreatedAfter, Page
from editaudit.service.services.archives import archive_facts, archive_suffix, is_archive, parse_options
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.ingest import enqueue_ingest
from editaudit.service.services.listing import MAX_PAGE, page
from editaudit.service.services.shards import upload_shards
from editaudit.service.services.uploads import created_response, insert_once, spooled_upload

router = APIRouter(tags=["datasets"])


def dataset_out(row: db.Dataset) -> DatasetOut:
    return DatasetOut.model_validate(row, from_attributes=True)


@router.post("/datasets", status_code=201, response_model=DatasetOut,
             **op("upload_dataset", Scope.models_write, 409, 413, 415, upload=True, store=True,
                  responses={200: {"model": DatasetOut, "description": "the same file exists: that dataset"}}))
def upload_dataset(svc: SvcDep, s: SessionDep, sessions: TenantSessionsDep, request: Request,
                   file: list[UploadFile] = File(description="safetensors or .npz with x, y (optional x_orig, mask), "
                                                             "or an image-folder archive (.tar, .tar.gz, .zip), or "
                                                             "several safetensors shards (x uint8 [k,H,W,C], y int64 "
                                                             "[k]) as one dataset"),
                   options: str | None = Form(None, description='archives only, JSON: {"resize": 256, "crop": '
                                                                '[224, 224], "class_to_idx": {"cat": 0}}')):
    """Identical content (and options) in the same tenant returns the existing dataset (200, not a second row),
    however many arrive at once. A tensor file is checked here and is `ready` at once. An archive is checked here
    member by member without decoding anything (a hostile or malformed member is a 422 naming it, and nothing is
    stored), then it is `validating` until a worker has decoded it into shards: `ready`, or `invalid` naming the
    member it could not decode."""
    if len(file) > 1:
        if options is not None:
            raise Problem(422, "options apply to image-folder archives only", field="options")
        return upload_shards(svc, s, sessions, request, file)
    spooled, _ = spooled_upload(file[0], "file", svc.settings.max_upload_mb)
    filename = _filename(file[0])
    if is_archive(spooled, filename):
        return _upload_archive(svc, s, sessions, request, spooled, filename, options)
    if options is not None:
        raise Problem(422, "options apply to image-folder archives only", field="options")
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


def _filename(part: UploadFile) -> str:
    filename = PurePath(part.filename or "upload").name[:200]
    if "\x00" in filename:
        raise Problem(422, "the file name holds a NUL byte", field="file")
    return filename


def _upload_archive(svc, s, sessions, request: Request, spooled, filename: str, raw_options: str | None):
    opts = parse_options(raw_options)
    try:
        summary = scan_archive(spooled, filename, svc.settings.archive_limits, resize=opts.resizes)
    except FormatError as e:
        raise Problem(422, e.reason, field=e.field or "file") from None
    facts = archive_facts(summary, opts, svc.settings.archive_max_image_pixels)
    digest, _ = sha256_file(spooled)
    options = opts.model_dump(exclude_none=True)
    identity = repo.upload_key(digest, options)

    def create() -> JSONResponse:
        key = content_key("archives", digest, archive_suffix(summary.container))
        row, created = insert_once(s, svc.store, db.Dataset, identity, key, spooled, lambda: db.Dataset(
            sha256=digest, filename=filename, object_key=key, upload_key=identity, status=IngestStatus.validating,
            options=options, progress={"done": 0, "total": summary.n}, **facts))
        if created:
            enqueue_ingest(svc, s, row)
        return created_response(dataset_out(row), f"/datasets/{row.id}", created=created)

    return idempotent(request, sessions, payload_hash(digest, options), create)


@router.get("/datasets", response_model=Page[DatasetOut], **op("list_datasets", Scope.audits_read))
def list_datasets(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                  cursor: str | None = None, created_after: CreatedAfter = None):
    """The tenant's uploaded datasets, newest first (built-in ones are named `builtin:...`, see README)."""
    rows, nxt = page(s, db.Dataset, limit, cursor, created_after)
    return Page[DatasetOut](items=[dataset_out(r) for r in rows], next_cursor=nxt)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, **op("get_dataset", Scope.audits_read, 404))
def get_dataset(dataset_id: str, s: SessionDep):
    return dataset_out(repo.get_or_404(s, db.Dataset, dataset_id))
