"""Cursor pagination over the session's rows (a tenant's, in an API request), newest first. The cursor is the
(created_at, id) of the last row seen, so pages stay stable while rows are added (no offsets that shift)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from editaudit.service.errors import Problem

MAX_PAGE = 200
ID_RE = re.compile(r"[0-9a-f]{1,64}")  # ids are uuid4 hex: anything else was not made by this API


def encode_cursor(created_at: datetime, id_: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), id_]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, id_ = json.loads(raw)
        if not isinstance(id_, str) or not ID_RE.fullmatch(id_):
            raise ValueError(id_)
        return datetime.fromisoformat(at), id_
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise Problem(422, "cursor is not one this API returned", field="cursor") from None


def as_utc(at: datetime, field: str) -> datetime:
    """A naive timestamp is UTC (what the API prints); SQLite compares stored UTC text, so offsets are removed."""
    try:
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:  # year 1 at +10:00 or 9999 at -10:00 is outside every calendar a database keeps
        raise Problem(422, f"{field} is out of range", field=field) from None


def page(s: Session, table, limit: int, cursor: str | None, created_after: datetime | None,
         query: Select | None = None) -> tuple[list, str | None]:
    """One page of the rows of `table` the session sees (optionally narrowed by `query`, a select of `table`)."""
    q = query if query is not None else select(table)
    if created_after is not None:
        q = q.where(table.created_at > as_utc(created_after, "created_after"))
    if cursor:
        at, id_ = decode_cursor(cursor)
        at = as_utc(at, "cursor")
        q = q.where(or_(table.created_at < at, and_(table.created_at == at, table.id < id_)))
    rows = list(s.scalars(q.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
