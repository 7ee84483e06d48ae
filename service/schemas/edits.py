"""`/edits` bodies. `hyperparams` is validated against the method's registered params class (see
editaudit.contracts.edits) and stored with its defaults, so an edit row says exactly what ran."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.registry import prefixed
from editaudit.contracts.statuses import Status
from editaudit.service.schemas.audit_profiles import ProfileRef


class EditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    method: str = Field(description="a registered edit method (GET /methods lists them with their params schema)")
    layers: list[str] = Field(default_factory=list)
    hyperparams: dict = Field(default_factory=dict, description="the method's params; see GET /methods")
    edit_set: str = Field(description="a dataset id or builtin:<name>; y holds the labels the edited model must output")
    generalization_set: str | None = None
    test_set: str
    audit: AuditConfig = Field(default_factory=AuditConfig, description="the audit, or {\"profile\": NAME"
                               "[, \"version\": N]} to run a stored audit profile of the tenant")
    sweep: bool = Field(False, description="one sub-edit per layer in `layers`, compared in this edit's audit")

    _profile: ProfileRef | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _split_profile(cls, data, handler):
        """`audit: {"profile": ...}` names a stored profile; it stands alone (the server fills in the config)."""
        profile = None
        if isinstance(data, dict) and isinstance(data.get("audit"), dict) and "profile" in data["audit"]:
            try:
                profile = ProfileRef.model_validate(data["audit"])
            except ValidationError as e:
                raise prefixed(e, "audit") from None
            data = {**data, "audit": {}}
        req = handler(data)
        req._profile = profile
        return req

    @property
    def audit_profile(self) -> ProfileRef | None:
        return self._profile


class SubEdit(BaseModel):
    layer: str
    id: str
    audit_id: str


class EditAccepted(BaseModel):
    id: str
    status: Status
    audit_id: str
    sub_edits: list[SubEdit] | None = None


class EditOut(BaseModel):
    id: str
    status: Status
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
    study_id: str | None = None
    sub_edits: list[SubEdit] | None = None
    delta_sha256: str | None = None
    reverted_at: datetime | None = None


class MethodOut(BaseModel):
    method: str
    traits: dict
    params_schema: dict


class MethodsOut(BaseModel):
    methods: list[MethodOut]
