"""`/audits` bodies: the measured numbers, keyed by the metric names of editaudit.contracts.metrics."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from editaudit.contracts.statuses import Status


class AuditOut(BaseModel):
    id: str
    status: Status
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
    profile: dict | None = None
    versions: dict | None
    created_at: datetime
    finished_at: datetime | None
