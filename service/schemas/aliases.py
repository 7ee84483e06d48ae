"""Promotion, revert and alias bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from editaudit.service.schemas.gate import NAME, GateOut


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field("production", pattern=NAME)
    policy: str = Field("default", pattern=NAME, description="a named policy of the tenant or a built-in one: "
                        "an inline document is refused, so whoever promotes cannot write the rules they are held to")
    override_reason: str | None = Field(None, min_length=10, description="ship despite a failing gate, and say why "
                                        "(recorded with the key's name as the actor)")


class PromoteOut(BaseModel):
    alias: str
    family: str
    model_id: str | None
    previous_model_id: str | None
    outcome: str = Field(description="promoted | overridden")
    gate: GateOut


class RevertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000)


class RevertOut(BaseModel):
    edit_id: str
    model_id: str
    reverted_model_id: str | None
    aliases: list[str]
    alias_targets: dict[str, str]
    reverted_at: datetime | None


class AliasEvent(BaseModel):
    edit_id: str
    model_id: str | None
    previous_model_id: str | None
    verdict: str
    outcome: str
    override_reason: str | None
    actor: str | None
    policy: dict
    at: datetime


class AliasOut(BaseModel):
    name: str
    family: str
    model_id: str
    updated_at: datetime
    history: list[AliasEvent]


class PromotionOut(BaseModel):
    id: int
    alias: str
    family: str
    edit_id: str
    model_id: str | None
    verdict: str
    outcome: str
    override_reason: str | None
    actor: str | None
    at: datetime


class PromotionsOut(BaseModel):
    promotions: list[PromotionOut]
