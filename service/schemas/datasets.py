"""`/datasets` bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class DatasetOut(BaseModel):
    id: str
    sha256: str
    n: int
    shape: list[int]
    filename: str
    has_x_orig: bool
    has_mask: bool
    created_at: datetime
