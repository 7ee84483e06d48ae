"""Upload and download plumbing: uploads checked where starlette spooled them (never read into memory whole), the
store-then-row write that leaves nothing behind on failure, objects as downloads."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from fastapi import Response, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from editaudit.core import db
from editaudit.core.storage import ObjectStore
from editaudit.service.errors import Problem


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
    its sha256 in `X-Content-SHA256` for the client to verify."""
    size, chunks = store.stream(key)
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "X-Content-SHA256": digest,
        "Content-Length": str(size)})


def created_response(out: BaseModel, location: str, created: bool = True) -> JSONResponse:
    """201 with Location for a new resource; 200 with the existing one's Location when the upload is a duplicate."""
    return JSONResponse(jsonable_encoder(out), status_code=201 if created else 200, headers={"Location": location})
