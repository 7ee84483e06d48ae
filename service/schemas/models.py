"""`/models` and `/archs` bodies: the model spec users send with a checkpoint, and what they get back."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str = Field(description="a registered architecture, e.g. torchvision/resnet18 or editaudit/smallcnn")
    num_classes: int = Field(ge=2, le=100_000)
    input_shape: list[int] = Field(min_length=3, max_length=3, description="[C, H, W]")
    mean: list[FiniteFloat] | None = None
    std: list[FiniteFloat] | None = None

    @model_validator(mode="after")
    def _check(self):
        if any(d < 1 for d in self.input_shape):
            raise ValueError("input_shape dimensions must be >= 1")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != self.input_shape[0]:
                raise ValueError(f"{name} needs one value per input channel ({self.input_shape[0]}), got {len(v)}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class ModelOut(BaseModel):
    id: str
    sha256: str
    arch: str
    spec: dict
    size_bytes: int
    parent_model_id: str | None = None
    edit_id: str | None = None
    created_at: datetime


class ArchsOut(BaseModel):
    archs: list[str]


class LayerOut(BaseModel):
    name: str
    type: str
    weight_shape: list[int]
    parameters: int


class LayersOut(BaseModel):
    model_id: str
    arch: str
    layers: list[LayerOut]


class LineageNode(BaseModel):
    id: str
    edit_id: str | None
    parent_model_id: str | None = None
    sha256: str | None = None
    created_at: datetime


class LineageOut(BaseModel):
    model_id: str
    ancestors: list[LineageNode] = Field(description="root first, each with the edit that made the next one")
    children: list[LineageNode] = Field(description="models edited from this one")
