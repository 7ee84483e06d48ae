"""`/studies` bodies. The grid is the contract's (editaudit.contracts.studies); every run it expands to is
validated as a `POST /edits` body would be, before anything is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from editaudit.contracts.statuses import Status
from editaudit.contracts.studies import StudyGrid


class StudyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="one line")
    model_id: str
    edit_set: str = Field(description="a dataset id or builtin:<name>: the exemplars every run edits with")
    generalization_set: str | None = Field(None, description="held-out images of the edited concept: the x axis of "
                                           "the Pareto front (edit accuracy when absent)")
    test_set: str
    audit: dict[str, Any] = Field(default_factory=dict, description="as in POST /edits (a config, or {\"profile\": "
                                  "NAME}); a config's seed is replaced by each run's seed")
    grid: StudyGrid
    policy: str | dict = Field("default", description="the policy whose verdict is shown per run and that the "
                               "recommended run must pass: a built-in or tenant policy name, or an inline policy")


class StudyRun(BaseModel):
    index: int
    group: str
    seed: int
    method: str
    layers: list[str]
    edit_id: str
    audit_id: str
    status: Status
    error: str | None = None
    worker: str | None = None


class StudyAccepted(BaseModel):
    id: str
    runs: list[StudyRun]


class StudyOut(BaseModel):
    id: str
    name: str | None
    model_id: str
    status: Status = Field(description="running while any run is queued or running; canceled once canceled; else "
                           "succeeded when at least one run succeeded, failed when none did")
    counts: dict[str, int] = Field(description="runs per status")
    created_at: datetime
    canceled_at: datetime | None = None
    request: dict
    runs: list[StudyRun]
    summary: dict = Field(description="editaudit.study.summary over the finished runs: groups with intervals over "
                          "seeds, Pareto front, robustness by layer depth, alpha curves, the policy's verdicts, the "
                          "recommended run and the paper's findings")


class StudySummaryRow(BaseModel):
    id: str
    name: str | None
    model_id: str
    runs: int
    created_at: datetime
    canceled_at: datetime | None = None
