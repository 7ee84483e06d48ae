"""`/webhooks` bodies: a tenant's webhook URLs and the record of what was sent to them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from editaudit.core.webhooks import MAX_URL_CHARS

EventName = Literal["edit.succeeded", "edit.failed", "edit.canceled", "audit.completed", "gate.evaluated", "*"]


def _every_event() -> list[EventName]:
    return ["*"]
DeliveryState = Literal["pending", "delivering", "succeeded", "failed"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, description="http(s) URL on a host the operator "
                     "allows (EDITAUDIT_WEBHOOK_ALLOWED_HOSTS); no user:password@")
    events: list[EventName] = Field(default_factory=_every_event, min_length=1, max_length=10,
                                    description="event types to send, or [\"*\"] for all")
    description: str | None = Field(None, max_length=500)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret (whsec_ + base64), shown this once: verify each delivery's "
                        "webhook-signature with it (Standard Webhooks). The server stores it to sign with.")


class DeliveryAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="the receiver's HTTP status; null when none came (a transport "
                                    "error, a refused host)")
    error: str | None


class DeliveryOut(BaseModel):
    id: str = Field(description="the webhook-id header: the same on every retry of this delivery")
    webhook_id: str
    event: str
    status: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    history: list[DeliveryAttempt]
    payload: dict = Field(description="the JSON body sent: {type, timestamp, data}")
    created_at: datetime
    delivered_at: datetime | None
