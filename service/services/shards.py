"""A dataset uploaded as several safetensors shards (POST /datasets with more than one `file` part): each shard is
checked as an ordinary dataset and against the shard layout (x uint8 [k,H,W,C], y int64 [k], optional x_orig and
mask, as the ingest job writes them), they must agree with one another, and they become one sharded dataset the
worker streams shard by shard, `ready` at once. Each shard is its own object, content addressed within the tenant
(one tenant's upload or cleanup never touches another's objects); the manifest is the row's object, stored with the
row (store-then-row); shards stored by an upload that then fails are removed unless a dataset's manifest lists
them."""

from __future__ import annotations

import io
import json

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from editaudit.contracts.formats import FormatError, read_safetensors_header, scan_dataset
from editaudit.contracts.formats.shards import check_shard_header, parse_manifest
from editaudit.core import db
from editaudit.core.storage import content_key, sha256, sha256_file
from editaudit.service.errors import Problem
from editaudit.service.schemas.datasets import DatasetOut
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.uploads import created_response, insert_once, spooled_upload

MAX_SHARDS = 4096


def upload_shards(svc, s, sessions, request: Request, parts: list[UploadFile]) -> JSONResponse:
    if len(parts) > MAX_SHARDS:
        raise Problem(422, f"at most {MAX_SHARDS} shards in one upload, got {len(parts)}", field="file")
    checked = [_check_part(svc, i, part) for i, part in enumerate(parts)]
    first = checked[0]["summary"]
    for i, c in enumerate(checked[1:], start=1):
        got = c["summary"]
        if (got.shape, got.has_x_orig, got.has_mask) != (first.shape, first.has_x_orig, first.has_mask):
            raise Problem(422, f"shard {i} holds {got.shape} images (x_orig: {got.has_x_orig}, mask: {got.has_mask}); "
                               f"shard 0 holds {first.shape} (x_orig: {first.has_x_orig}, mask: {first.has_mask})",
                          field=f"file.{i}")
    prefix = f"tenants/{sha256(db.session_tenant(s).encode())[:16]}/shards"  # never another tenant's object
    shards = [{"key": content_key(prefix, c["digest"], ".safetensors"), "sha256": c["digest"], "n": c["summary"].n,
               "bytes": c["size"]} for c in checked]
    try:
        manifest = parse_manifest({"version": 1, "n": sum(c["summary"].n for c in checked), "shape": first.shape,
                                   "label_max": max(c["summary"].label_max for c in checked),
                                   "has_x_orig": first.has_x_orig, "has_mask": first.has_mask, "shards": shards})
        for i, c in enumerate(checked):
            check_shard_header(c["header"], manifest, i)
    except FormatError as e:
        raise Problem(422, e.reason, field="file") from None
    body = json.dumps(manifest.to_json(), sort_keys=True, separators=(",", ":")).encode()
    digest = sha256(body)

    def create() -> JSONResponse:
        created = [shard["key"] for shard, c in zip(shards, checked, strict=True)
                   if svc.store.put_file(shard["key"], c["file"])]
        try:
            row, new = insert_once(s, svc.store, db.Dataset, digest, content_key("manifests", digest, ".json"),
                                   io.BytesIO(body), lambda: db.Dataset(
                                       sha256=digest, filename=f"{len(shards)} shards", object_key=content_key(
                                           "manifests", digest, ".json"), n=manifest.n, shape=manifest.shape,
                                       label_max=manifest.label_max, has_x_orig=manifest.has_x_orig,
                                       has_mask=manifest.has_mask, manifest=manifest.to_json(), upload_key=digest))
        except BaseException:
            remove_unlisted(s, svc.store, created)
            raise
        out = DatasetOut.model_validate(row, from_attributes=True)
        return created_response(out, f"/datasets/{row.id}", created=new)

    return idempotent(request, sessions, payload_hash(digest), create)


def _check_part(svc, index: int, part: UploadFile) -> dict:
    field = f"file.{index}"
    spooled, size = spooled_upload(part, field, svc.settings.max_upload_mb)
    try:
        header = read_safetensors_header(spooled, field=field)
        summary = scan_dataset(spooled, part.filename or "shard.safetensors",
                               max_expanded=svc.settings.max_upload_mb * 1024 * 1024)
    except FormatError as e:
        raise Problem(415 if e.pickle else 422, f"shard {index}: {e.reason}", field=field) from None
    if summary.container != "safetensors" or header["x"].dtype != "U8":
        raise Problem(422, f"shard {index}: shards are safetensors with x uint8 [k,H,W,C] (as an archive's ingest "
                           "writes them); upload a single file for float32 or .npz data", field=field)
    digest, _ = sha256_file(spooled)
    return {"file": spooled, "size": size, "header": header, "summary": summary, "digest": digest}


def remove_unlisted(s, store, keys: list[str]) -> None:
    """Delete the shard objects `keys` unless a dataset's manifest lists them (asked across tenants: a yes or no,
    never a row)."""
    if not keys:
        return
    why = "an upload's cleanup: a shard object serves every dataset whose manifest lists it"
    with db.unscoped_session(sessionmaker(s.get_bind()), why) as every:
        used = {shard["key"] for manifest in every.scalars(select(db.Dataset.manifest).where(
            db.Dataset.manifest.is_not(None))) for shard in manifest["shards"]}
    for key in keys:
        if key not in used:
            store.delete(key)
