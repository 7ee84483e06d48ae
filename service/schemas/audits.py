"""`/audits` bodies: the measured numbers, keyed by the metric names of editaudit.contracts.metrics, typed by the
audit result's contract (editaudit.contracts.audit_result)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from editaudit.contracts.audit_result import (
    AlphaPoint,
    AuditResult,
    Curve,
    Delta,
    MLISummary,
    ModelIntervals,
    ModelMetrics,
    ProfileRecord,
    RecordedConfig,
    SplitSamples,
    SweepTable,
)
from editaudit.contracts.statuses import Status


class AuditOut(BaseModel):
    """An audit: its row (id, status, times, the config that ran and its profile, library versions) and, once it
    has one, its result. Before that, `metrics` and `deltas` are empty and the result's other parts null."""

    id: str
    status: Status
    edit_id: str
    schema_version: int | None = Field(None, description="the result's shape (editaudit.contracts.audit_result); "
                                                         "null until there is a result")
    metrics: ModelMetrics
    deltas: dict[str, Delta]
    samples: dict[str, SplitSamples] | None
    durations_s: dict[str, float] | None
    device: str | None
    intervals: ModelIntervals | None = None
    notes: list[str] | None = None
    curves: dict[str, Curve] | None = None
    baseline_cached: bool | None = None
    alpha_curve: list[AlphaPoint] | None = None
    mli: MLISummary | None = None
    sweep: SweepTable | None = None
    sections: dict[str, Any] | None = Field(None, description="free-form sections an edit method adds")
    config: RecordedConfig
    profile: ProfileRecord | None = None
    versions: dict[str, str] | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row, result: AuditResult | None) -> AuditOut:
        """`row`: the audits row (its config and profile are served from its columns); `result`: its result read
        through the contract, None while there is none."""
        measured: dict = {"metrics": ModelMetrics(), "deltas": {}, "samples": None, "durations_s": None, "device": None}
        if result is not None:
            measured = {name: getattr(result, name) for name in MEASURED}
            measured["sections"] = result.sections or None
        return cls(id=row.id, status=row.status, edit_id=row.edit_id, config=row.config, profile=row.profile,
                   versions=row.versions, created_at=row.created_at, finished_at=row.finished_at, **measured)


MEASURED = ("schema_version", "metrics", "deltas", "samples", "durations_s", "device", "intervals", "notes", "curves",
            "baseline_cached", "alpha_curve", "mli", "sweep")


class SampleOut(BaseModel):
    """One sample of an audit under one condition: both models' predictions (class names where the model has them)
    and, when the audit kept its input (the first flipped ones per condition and direction), where to get it."""

    index: int = Field(description="the sample's index in the whole split as uploaded")
    position: int = Field(description="its place among the split's audited samples")
    label: int = Field(description="the true class (edit and generalization splits: the edit target)")
    baseline_pred: int
    candidate_pred: int
    baseline_correct: bool
    candidate_correct: bool
    label_name: str | None = None
    baseline_class: str | None = None
    candidate_class: str | None = None
    image: str | None = Field(None, description="URL of the input as PNG, when the audit kept it")


class SamplePage(BaseModel):
    """A page of an audit's samples under one condition, by index ascending."""

    split: str
    condition: str
    flipped: str | None
    items: list[SampleOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null: no more")
    conditions: list[str] = Field(description="the conditions this split has (?condition=)")
