"""`Idempotency-Key` on the POSTs that create: a client that retries (a timeout, a dropped connection) gets the
original response instead of a second resource. Same key and payload: the stored response; same key, other
payload: 422; the first request still running: 409. Keys are per tenant (the sessions' tenant) and route. A record
left in flight by a crashed process is taken over after STALE_S; a create that fails records nothing (fix the
request, retry). Concurrent requests with one key: the unique (tenant, key, route) lets one claim it; the others get
409 while it runs and its response once it has finished: one resource, never a 500."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from editaudit.core import db
from editaudit.service.errors import Problem

KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
STALE_S = 600
REPLAYED_HEADERS = ("location",)


def payload_hash(*parts) -> str:
    """A stable digest of what was asked: JSON-able parts in canonical form (for an upload: its sha256 and spec)."""
    canonical = json.dumps(jsonable_encoder(parts), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent(request: Request, sessions: Callable[[], Session], digest: str,
               create: Callable[[], JSONResponse]) -> JSONResponse:
    """Run `create` once per (tenant, route, Idempotency-Key); without the header, just run it. `sessions` opens
    sessions of the caller's tenant (editaudit.service.deps.TenantSessionsDep): the record commits apart from the
    request's own session."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return create()
    if not KEY_RE.fullmatch(key):
        raise Problem(422, "Idempotency-Key is 1-200 printable ASCII characters", field="Idempotency-Key")
    route = f"{request.method} {request.url.path}"  # the creating routes take no ids: the path is the route
    with sessions() as s:
        record = _claim(s, key, route, digest)
        if record is not None:
            return _replay(record, digest, key)
    try:
        response = create()
    except BaseException:
        _forget(sessions, key, route)
        raise
    with sessions() as s:
        row = _find(s, key, route)
        if row is not None and row.status is None:  # else a request took it over as stale: its record stands
            row.status, row.body = response.status_code, bytes(response.body).decode()
            row.headers = {h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers}
            s.commit()
    return response


def _find(s: Session, key: str, route: str) -> db.IdempotencyRecord | None:
    return s.scalars(select(db.IdempotencyRecord).filter_by(key=key, route=route)).first()


def _claim(s: Session, key: str, route: str, digest: str) -> db.IdempotencyRecord | None:
    """None when this request now owns the key; else the existing record."""
    stale = _find(s, key, route)
    if stale is not None and stale.status is None and stale.created_at < db.utcnow() - timedelta(seconds=STALE_S):
        # its request died mid-way (the process crashed): the key is free again; a conditional delete, as a
        # concurrent request may free it too (or its owner may finish after all)
        _delete_in_flight(s, stale.id)
    s.add(db.IdempotencyRecord(key=key, route=route, request_hash=digest))
    try:
        s.commit()
        return None
    except IntegrityError:
        s.rollback()
        found = _find(s, key, route)
        if found is None:  # the owner gave it up between our insert and this read
            raise Problem(409, f"a request with Idempotency-Key {key!r} is in progress; retry shortly",
                          field="Idempotency-Key") from None
        return found


def _replay(record: db.IdempotencyRecord, digest: str, key: str) -> JSONResponse:
    if record.request_hash != digest:
        raise Problem(422, f"Idempotency-Key {key!r} was used with another payload", field="Idempotency-Key")
    if record.status is None:
        raise Problem(409, f"a request with Idempotency-Key {key!r} is still in progress; retry shortly",
                      field="Idempotency-Key")
    assert record.body is not None  # stored with its status
    response = JSONResponse(json.loads(record.body), status_code=record.status, headers=record.headers or {})
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _delete_in_flight(s: Session, record_id: int) -> None:
    """Delete a record still in flight, if it still is: zero rows when another request got there first (never the
    StaleDataError of deleting a loaded row twice)."""
    s.execute(delete(db.IdempotencyRecord).where(db.IdempotencyRecord.id == record_id,
                                                 db.IdempotencyRecord.status.is_(None))
              .execution_options(synchronize_session=False))
    s.commit()


def _forget(sessions: Callable[[], Session], key: str, route: str) -> None:
    with sessions() as s:
        row = _find(s, key, route)
        if row is not None and row.status is None:
            _delete_in_flight(s, row.id)
