"""Upload and download plumbing: uploads checked where starlette spooled them (never read into memory whole), the
store-then-row write that leaves nothing behind on failure and makes identical concurrent uploads one row, objects
as downloads that end in an error, never short, when the store fails mid-object."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from fastapi import Response, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from editaudit.core import db
from editaudit.core.storage import ObjectStore, StoreUnavailable
from editaudit.service.errors import Problem

log = logging.getLogger(__name__)
Uploaded = TypeVar("Uploaded", db.Model, db.Dataset)


class StreamAborted(Exception):
    """A download whose object failed after its headers went out: raised so that the server drops the connection
    before the declared Content-Length (the client's HTTP library raises; its sha256 check would too), never a
    clean short body. Deliberately not a handled exception: there is no response left to turn it into."""


def spooled_upload(upload: UploadFile, field: str, max_mb: int) -> tuple[BinaryIO, int]:
    """(the file starlette spooled the part to, its size): checked against the limit without reading it. Parsers,
    the hash and the store then read it in bounded chunks, so the API's memory does not grow with the upload."""
    f = upload.file
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size > max_mb * 1024 * 1024:
        raise Problem(413, f"{field} is larger than {max_mb} MiB", field=field)
    if not size:
        raise Problem(422, f"{field} is empty", field=field)
    return f, size


def store_and_insert(s: Session, store: ObjectStore, key: str, data: bytes | BinaryIO,
                     make_row: Callable[[], object]):
    """Put the object (bytes, or streamed from a file), then commit the row; if the commit fails, remove the object
    this call created, unless a concurrent upload of the same content (any tenant) committed a row on it meanwhile."""
    created = store.put(key, data) if isinstance(data, (bytes, bytearray)) else store.put_file(key, data)
    row = None
    try:
        row = make_row()
        s.add(row)
        s.commit()
        return row
    except BaseException:
        s.rollback()
        if created and (row is None or not _referenced(s, type(row), key)):
            store.delete(key)
        raise


def insert_once(s: Session, store: ObjectStore, table: type[Uploaded], upload_key: str, object_key: str,
                data: BinaryIO, make_row: Callable[[], Uploaded]) -> tuple[Uploaded, bool]:
    """(the tenant's row for this upload, whether this call created it). The row with `upload_key` if there is one
    (its object put back if it went missing), else the object stored and a row committed. Concurrent identical
    uploads all find none and all insert; the unique (tenant, upload_key) lets one row in and the others fail, and
    they answer with it: one row, never a 500."""
    same = s.scalars(select(table).filter_by(upload_key=upload_key)).first()
    if same is None:
        try:
            return store_and_insert(s, store, object_key, data, make_row), True
        except IntegrityError:  # a concurrent identical upload committed first (rolled back and cleaned up above)
            same = s.scalars(select(table).filter_by(upload_key=upload_key)).first()
            if same is None:
                raise
    ensure_object(store, same.object_key, data)
    return same, False


def _referenced(s: Session, table, key: str) -> bool:
    """Whether a row of any tenant points at the object: identical content is one object, whoever uploaded it, so
    this question is asked outside the request's tenant session (it reads a yes or no, never a row)."""
    try:
        shared = "an upload's cleanup: one object serves every tenant that uploaded its content"
        with db.unscoped_session(sessionmaker(s.get_bind()), shared) as every:
            return every.scalar(select(table.id).where(table.object_key == key).limit(1)) is not None
    except Exception:  # noqa: BLE001 - the database is what failed: keep the object (an orphan beats a loss)
        return True


def ensure_object(store: ObjectStore, key: str, src: BinaryIO) -> None:
    """A duplicate upload answers with the existing row; if that row's object went missing (a store restored
    from an older backup, a bucket moved), the upload puts it back: same content, same key."""
    if not store.exists(key):
        store.put_file(key, src)


def object_response(store: ObjectStore, key: str, filename: str, digest: str) -> Response:
    """An object as a streamed download (a 1 GiB checkpoint never sits in the API's memory), with its size and
    its sha256 in `X-Content-SHA256` for the client to verify. The store unavailable or the object missing when
    the download starts: 503 (the store's faults, editaudit.service.errors). Failing after the headers went out:
    the connection drops short of Content-Length (StreamAborted)."""
    size, chunks = store.stream(key)
    return StreamingResponse(_checked(chunks, size, key), media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "X-Content-SHA256": digest,
        "Content-Length": str(size)})


def _checked(chunks: Iterator[bytes], size: int, key: str) -> Iterator[bytes]:
    """The chunks, and an error instead of a clean end when the store fails mid-object or the object ends before
    `size` bytes (a file truncated while it was read)."""
    sent = 0
    try:
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
    except StoreUnavailable as e:
        log.error("the download of %s broke off after %d of %d bytes: %s", key, sent, size, e)
        raise StreamAborted(f"the store failed after {sent} of {size} bytes of {key}") from e
    if sent != size:
        log.error("the object %s ended after %d of its %d bytes", key, sent, size)
        raise StreamAborted(f"the object {key} ended after {sent} of its {size} bytes")


def created_response(out: BaseModel, location: str, created: bool = True) -> JSONResponse:
    """201 with Location for a new resource; 200 with the existing one's Location when the upload is a duplicate."""
    return JSONResponse(jsonable_encoder(out), status_code=201 if created else 200, headers={"Location": location})
