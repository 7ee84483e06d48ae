"""Upload and download plumbing: bounded reads, the store-then-row write that leaves nothing behind on failure,
objects as downloads."""

from __future__ import annotations

from typing import Callable

from fastapi import Response, UploadFile
from sqlalchemy.orm import Session

from editaudit.service.errors import Problem
from editaudit.core.storage import ObjectStore


def read_upload(upload: UploadFile, field: str, max_mb: int) -> bytes:
    data = upload.file.read(max_mb * 1024 * 1024 + 1)
    if len(data) > max_mb * 1024 * 1024:
        raise Problem(413, f"{field} is larger than {max_mb} MiB", field=field)
    if not data:
        raise Problem(422, f"{field} is empty", field=field)
    return data


def store_and_insert(s: Session, store: ObjectStore, key: str, data: bytes, make_row: Callable[[], object]):
    """Put the object, then commit the row; if the commit fails, remove the object this call created."""
    created = store.put(key, data)
    try:
        row = make_row()
        s.add(row)
        s.commit()
        return row
    except BaseException:
        s.rollback()
        if created:
            store.delete(key)
        raise


def object_response(store: ObjectStore, key: str, filename: str, digest: str) -> Response:
    """An object as a download, with its sha256 in `X-Content-SHA256`."""
    return Response(store.get(key), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Content-SHA256": digest})
