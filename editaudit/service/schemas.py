"""Request and response bodies of the HTTP API (pydantic), and the model spec contract of DESIGN.md."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from editaudit.specs import AuditConfig


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str = Field(description="a registered architecture, e.g. torchvision/resnet18 or editaudit/smallcnn")
    num_classes: int = Field(ge=2, le=100_000)
    input_shape: list[int] = Field(min_length=3, max_length=3, description="[C, H, W]")
    mean: list[float] | None = None
    std: list[float] | None = None

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


class DatasetOut(BaseModel):
    id: str
    sha256: str
    n: int
    shape: list[int]
    filename: str
    has_x_orig: bool
    has_mask: bool
    created_at: datetime


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    method: str
    layers: list[str] = Field(default_factory=list)
    hyperparams: dict = Field(default_factory=dict)
    edit_set: str = Field(description="a dataset id or builtin:<name>; y holds the labels the edited model must output")
    generalization_set: str | None = None
    test_set: str
    audit: AuditConfig = Field(default_factory=AuditConfig)
    sweep: bool = Field(False, description="one sub-edit per layer in `layers`, compared in this edit's audit")


class SubEdit(BaseModel):
    layer: str
    id: str
    audit_id: str


class EditAccepted(BaseModel):
    id: str
    status: str
    audit_id: str
    sub_edits: list[SubEdit] | None = None


class EditOut(BaseModel):
    id: str
    status: str
    progress: dict | None
    error: str | None
    model_id: str
    edited_model_id: str | None
    audit_id: str
    method: str
    layers: list[str]
    hyperparams: dict
    edit_set: str
    generalization_set: str | None
    test_set: str
    info: dict | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sweep: bool = False
    sweep_id: str | None = None
    sub_edits: list[SubEdit] | None = None
    delta_sha256: str | None = None
    reverted_at: datetime | None = None


class AuditOut(BaseModel):
    id: str
    status: str
    edit_id: str
    metrics: dict
    deltas: dict
    samples: dict | None
    durations_s: dict | None
    device: str | None
    intervals: dict | None = None
    notes: list[str] | None = None
    curves: dict | None = None
    baseline_cached: bool | None = None
    alpha_curve: list | None = None
    mli: dict | None = None
    sweep: dict | None = None
    config: dict
    versions: dict | None
    created_at: datetime
    finished_at: datetime | None
