"""`/webhooks`: a tenant's webhook URLs (edit, audit and gate events, signed as Standard Webhooks do) and the record
of their deliveries. Configuration, so every route needs the `admin` scope: a webhook URL often carries a CI
trigger token, and whoever may add one decides where the tenant's events go."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from editaudit.contracts.scopes import Scope
from editaudit.core import db, repo, webhooks
from editaudit.service.deps import SessionDep, SvcDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.listing import CreatedAfter, Page
from editaudit.service.schemas.webhooks import DeliveryOut, DeliveryState, WebhookCreated, WebhookIn, WebhookOut
from editaudit.service.services.idempotency import idempotent, payload_hash
from editaudit.service.services.listing import MAX_PAGE, page

router = APIRouter(tags=["webhooks"])
MAX_WEBHOOKS = 20  # per tenant: every event is written once per webhook


def live_webhook(s: Session, webhook_id: str) -> db.Webhook:
    """The tenant's webhook, or 404; a deleted one (and another tenant's) reads as absent."""
    hook = repo.get_or_404(s, db.Webhook, webhook_id)
    if hook.disabled_at is not None:
        raise repo.NotFound(f"no webhook with id {webhook_id!r}", "webhook_id")
    return hook


@router.post("/webhooks", status_code=201, response_model=WebhookCreated,
             **op("create_webhook", Scope.admin, 409))
def create_webhook(body: WebhookIn, s: SessionDep, svc: SvcDep, sessions: TenantSessionsDep, request: Request):
    """Register a URL for the tenant's events. Its host must be on the operator's allow-list (422 naming `url`
    otherwise; with an empty list webhooks are off). The answer holds the signing `secret`, shown this once."""
    try:
        target = webhooks.check_url(body.url, svc.settings.webhook_allowed_hosts)
    except webhooks.UrlRefused as e:
        raise Problem(422, f"url: {e}", field="url") from None
    events = sorted(set(body.events))
    events = [webhooks.ALL] if webhooks.ALL in events else events

    def create() -> JSONResponse:
        live = s.scalar(select(func.count()).select_from(db.Webhook).where(db.Webhook.disabled_at.is_(None))) or 0
        if live >= MAX_WEBHOOKS:
            raise Problem(409, f"tenant {db.session_tenant(s)!r} has {live} webhooks, the most it may have; delete one "
                          "first", field="url")
        hook = db.Webhook(url=str(target.url), events=events, secret=webhooks.new_secret(),
                          description=body.description)
        s.add(hook)
        s.commit()
        out = WebhookCreated.model_validate(hook, from_attributes=True)
        return JSONResponse(jsonable_encoder(out), status_code=201, headers={"Location": f"/webhooks/{hook.id}"})

    return idempotent(request, sessions, payload_hash(body.model_dump(mode="json")), create)


@router.get("/webhooks", response_model=Page[WebhookOut], **op("list_webhooks", Scope.admin))
def list_webhooks(s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                  cursor: str | None = None, created_after: CreatedAfter = None):
    """The tenant's webhooks, newest first (no secrets)."""
    rows, nxt = page(s, db.Webhook, limit, cursor, created_after,
                     select(db.Webhook).where(db.Webhook.disabled_at.is_(None)))
    return Page[WebhookOut](items=[WebhookOut.model_validate(h, from_attributes=True) for h in rows],
                            next_cursor=nxt)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, **op("get_webhook", Scope.admin, 404))
def get_webhook(webhook_id: str, s: SessionDep):
    return WebhookOut.model_validate(live_webhook(s, webhook_id), from_attributes=True)


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response,
               **op("delete_webhook", Scope.admin, 404))
def delete_webhook(webhook_id: str, s: SessionDep):
    """Stop sending to it: its secret is wiped and its pending deliveries end failed (one being sent finishes)."""
    hook = live_webhook(s, webhook_id)
    hook.disabled_at, hook.secret = db.utcnow(), ""
    s.query(db.WebhookDelivery).filter(
        db.WebhookDelivery.webhook_id == hook.id, db.WebhookDelivery.status == webhooks.DeliveryStatus.pending,
    ).update({"status": webhooks.DeliveryStatus.failed, "next_attempt_at": None,
              "last_error": "the webhook was deleted; not sent"}, synchronize_session=False)
    s.commit()
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=Page[DeliveryOut],
            **op("list_webhook_deliveries", Scope.admin, 404))
def list_deliveries(webhook_id: str, s: SessionDep, limit: int = Query(50, ge=1, le=MAX_PAGE),
                    cursor: str | None = None, status: DeliveryState | None = None):
    """What was sent to the webhook, newest first: each delivery's state, attempts and their outcomes."""
    hook = live_webhook(s, webhook_id)
    q = select(db.WebhookDelivery).where(db.WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        q = q.where(db.WebhookDelivery.status == status)
    rows, nxt = page(s, db.WebhookDelivery, limit, cursor, None, q)
    return Page[DeliveryOut](items=[DeliveryOut.model_validate(d, from_attributes=True) for d in rows],
                             next_cursor=nxt)


@router.post("/webhooks/{webhook_id}/test", status_code=202, response_model=DeliveryOut,
             **op("test_webhook", Scope.admin, 404))
def test_webhook(webhook_id: str, s: SessionDep):
    """Queue a `ping` event to this webhook (a worker sends it); follow it in its deliveries."""
    hook = live_webhook(s, webhook_id)
    [delivery_id] = webhooks.emit(s, hook.tenant, webhooks.Event.ping, {"webhook_id": hook.id}, webhook_id=hook.id)
    s.commit()
    out = DeliveryOut.model_validate(s.get(db.WebhookDelivery, delivery_id), from_attributes=True)
    return JSONResponse(jsonable_encoder(out), status_code=202,
                        headers={"Location": f"/webhooks/{hook.id}/deliveries"})
