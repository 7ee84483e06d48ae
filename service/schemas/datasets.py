"""`/datasets` bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from editaudit.contracts.statuses import IngestStatus


class DatasetOut(BaseModel):
    id: str
    sha256: str
    n: int = Field(description="images (for an archive: counted from its members; final once `ready`)")
    shape: list[int] = Field(description="[C, H, W]; for an archive, final once `ready`")
    filename: str
    has_x_orig: bool
    has_mask: bool
    status: IngestStatus = Field(description="archives are `validating` until a worker has decoded them into shards, "
                                             "then `ready` or `invalid` (see `error`)")
    error: str | None = None
    classes: list[str] | None = Field(None, description="class names by label (image folders)")
    options: dict | None = None
    progress: dict | None = Field(None, description="while validating: images decoded so far ({done, total})")
    created_at: datetime
