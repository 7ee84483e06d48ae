"""`/policies` and `/gate` bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from editaudit.gate.evaluate import RuleOutcome

NAME = r"^[A-Za-z0-9_.\-]{1,100}$"


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    policy: dict


class PolicyOut(BaseModel):
    """Read from a db.PolicyVersion row (`from_attributes`: its `document` is served as `policy`), or built."""

    model_config = ConfigDict(populate_by_name=True)
    tenant: str | None
    name: str
    version: int | str = Field(description="1, 2, ... for a stored policy; 'builtin' for one shipped with editaudit")
    policy: dict = Field(validation_alias=AliasChoices("policy", "document"))
    created_at: datetime | None = None


class PolicyList(BaseModel):
    tenant: str
    policies: list[str]
    builtin: list[str]


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edit_id: str
    policy: str | dict = Field("default", description="a policy name, or an inline policy document")


class GateOut(BaseModel):
    edit_id: str
    audit_id: str
    policy: dict = Field(description="what was evaluated: {name, version[, tenant]} or {inline: document}")
    verdict: str = Field(description="pass | warn | fail")
    rules: list[RuleOutcome]
    notes: list[str] = Field(default_factory=list, description="rules undecided for lack of samples, lenient rules")
