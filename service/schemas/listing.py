"""A page of a listing: its items, newest first, and the cursor of the next page (null on the last one)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from editaudit.contracts.statuses import Status

Item = TypeVar("Item")


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
