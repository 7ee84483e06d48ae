"""`/datasets`: safetensors or .npz uploads with x, y (and x_orig, mask), validated before anything is stored."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, File, Response, UploadFile

from editaudit.contracts.formats import FormatError, parse_dataset
from editaudit.core import db, repo
from editaudit.core.storage import content_key, sha256
from editaudit.service.deps import SessionDep, SvcDep
from editaudit.service.errors import Problem
from editaudit.service.schemas.datasets import DatasetOut
from editaudit.service.services.uploads import read_upload, store_and_insert

router = APIRouter(tags=["datasets"])


@router.post("/datasets", status_code=201, response_model=DatasetOut)
def upload_dataset(svc: SvcDep, s: SessionDep, response: Response,
                   file: UploadFile = File(description="safetensors or .npz with x, y (optional x_orig, mask)")):
    data = read_upload(file, "file", svc.settings.max_upload_mb)
    filename = PurePath(file.filename or "upload").name[:200]
    if "\x00" in filename:
        raise Problem(422, "the file name holds a NUL byte", field="file")
    try:
        arrays = parse_dataset(data, filename, max_expanded=svc.settings.max_upload_mb * 1024 * 1024)
    except FormatError as e:
        raise Problem(415 if e.pickle else 422, e.reason, field=e.field or "file") from None
    digest = sha256(data)
    suffix = ".npz" if data[:4] == b"PK\x03\x04" else ".safetensors"
    key = content_key("datasets", digest, suffix)
    row = store_and_insert(s, svc.store, key, data, lambda: db.Dataset(
        sha256=digest, filename=filename, object_key=key, n=arrays.n, shape=arrays.shape,
        label_max=int(arrays.y.max()), has_x_orig=arrays.x_orig is not None, has_mask=arrays.mask is not None))
    response.headers["Location"] = f"/datasets/{row.id}"
    return DatasetOut.model_validate(row, from_attributes=True)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: str, s: SessionDep):
    return DatasetOut.model_validate(repo.get_or_404(s, db.Dataset, dataset_id), from_attributes=True)
