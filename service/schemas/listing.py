"""A page of a listing: its items, newest first, and the cursor of the next page (null on the last one)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, Field

from editaudit.contracts.statuses import Status

Item = TypeVar("Item")


def iso_timestamp(v: object) -> object:
    """An ISO 8601 timestamp with its timezone, as the API prints them (`2026-01-31T12:00:00Z`, `...+02:00`):
    nothing else. Pydantic alone would read `0.5` or `1700000000` as Unix time and a zone-less time as local, so
    a typo would silently filter by 1970."""
    if v is None or isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise ValueError("an ISO 8601 timestamp with a timezone is required, e.g. 2026-01-31T12:00:00Z")
    try:
        at = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{v[:40]!r} is not an ISO 8601 timestamp: e.g. 2026-01-31T12:00:00Z (in a URL, write "
                         "+02:00 as %2B02:00)") from None
    if at.tzinfo is None:
        raise ValueError(f"{v[:40]!r} has no timezone: add Z (UTC) or an offset such as %2B02:00")
    return at


CreatedAfter = Annotated[datetime | None, BeforeValidator(iso_timestamp), Query(
    description="only rows created after this instant: ISO 8601 with a timezone, e.g. 2026-01-31T12:00:00Z")]


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null: no more")


class EditSummary(BaseModel):
    id: str
    status: Status
    method: str
    model_id: str
    layers: list[str]
    sweep_id: str | None = None
    edited_model_id: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class AuditSummary(BaseModel):
    id: str
    status: Status
    edit_id: str
    created_at: datetime
    finished_at: datetime | None = None
