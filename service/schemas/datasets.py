"""`/datasets` bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from editaudit.contracts.statuses import IngestStatus
from editaudit.service.schemas.models import Interpolation


class ImportOptions(BaseModel):
    """How an image-folder archive becomes tensors (the ingest job applies it once, before storing shards): resize
    the shorter side, then centre-crop; labels from the sorted class folders unless `class_to_idx` maps them."""

    model_config = ConfigDict(extra="forbid")

    resize: int | None = Field(None, ge=1, le=8192, description="shorter side after resizing")
    crop: list[int] | None = Field(None, min_length=2, max_length=2, description="[H, W] centre crop after resize")
    interpolation: Interpolation = "bilinear"
    class_to_idx: dict[str, Annotated[int, Field(ge=0, le=99_999)]] | None = Field(
        None, description="class folder -> label (default: sorted order); labels below 100000, as num_classes")

    @model_validator(mode="after")
    def _check(self):
        if self.crop is not None and any(d < 1 or d > 8192 for d in self.crop):
            raise ValueError("crop sides must lie in [1, 8192]")
        return self

    @property
    def resizes(self) -> bool:
        return self.resize is not None or self.crop is not None


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
