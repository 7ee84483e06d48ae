"""`/audit-profiles` bodies: named, versioned audit configs kept by the server per tenant."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from editaudit.contracts.audit import AuditConfig
from editaudit.service.schemas.gate import NAME


class AuditProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    audit: AuditConfig


class AuditProfileOut(BaseModel):
    """Read from a db.AuditProfile row (`from_attributes`): its `config` is served as `audit`."""

    tenant: str
    name: str
    version: int
    audit: dict = Field(validation_alias="config", description="the audit config, as validated (defaults included)")
    created_at: datetime


class AuditProfileList(BaseModel):
    tenant: str
    profiles: list[str]


class ProfileRef(BaseModel):
    """`"audit": {"profile": "release"}` (the latest version) or `{"profile": "release", "version": 2}`."""

    model_config = ConfigDict(extra="forbid")
    profile: str = Field(pattern=NAME)
    version: int | None = Field(None, ge=1, le=2**31 - 1)
