"""Sending the webhook outbox (editaudit.core.webhooks writes it): a thread in every worker process, beside the
reconciler, so a delivery never waits behind a long job of the solo pool (and `editaudit serve`'s worker sends too).

Each pass takes the due rows (pending and due, or `delivering` under a lease that lapsed: its sender died) and
claims each with one conditional UPDATE that counts the attempt and leases the row, so two workers never send one
delivery at once. The attempt re-checks the URL against the operator's allow-list as it is now, resolves the host,
refuses link-local and metadata addresses (unless allow-listed literally) and connects to the very address it
checked (no second lookup a DNS rebinding could answer differently), with `follow_redirects=False`. 2xx: succeeded;
any other answer or a transport error: retried with backoff until `webhook_max_attempts`; a refused host: failed
without sending. Every outcome is written to the row (conditional on the lease) with the attempt's history.
Delivery is at least once: a sender that dies after the receiver answered is retried with the same `webhook-id`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, or_, select

from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.core.webhooks import (
    DeliveryStatus,
    Target,
    UrlRefused,
    address_allowed,
    check_url,
    retry_delay,
    signed_headers,
)

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
LEASE_S = max(60.0, 3 * SEND_TIMEOUT_S)  # longer than any attempt (connect + send + first byte), with margin
BATCH = 16
SENDERS = 4  # concurrent sends per worker process: one slow receiver does not hold up the others
HISTORY = 20  # attempts kept on a row
ERROR_CHARS = 300


class Refused(Exception):
    """This delivery must not be sent (host no longer allowed, forbidden address, webhook deleted): failed, no retry."""


@dataclass
class Outcome:
    status_code: int | None = None
    error: str | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def due(now: datetime):
    """Rows to send now: pending and due, or being sent under a lease that lapsed."""
    return or_(and_(db.WebhookDelivery.status == DeliveryStatus.pending, db.WebhookDelivery.next_attempt_at <= now),
               and_(db.WebhookDelivery.status == DeliveryStatus.delivering,
                    or_(db.WebhookDelivery.lease_expires_at.is_(None), db.WebhookDelivery.lease_expires_at < now)))


def claim(s, delivery_id: str, now: datetime, max_attempts: int) -> str | None:
    """A lease token if this process now sends the delivery (its attempt counted), else None. A lapsed one whose
    attempts are used up is marked failed instead."""
    token = db.new_id()
    taken = s.query(db.WebhookDelivery).filter(
        db.WebhookDelivery.id == delivery_id, due(now), db.WebhookDelivery.attempts < max_attempts,
    ).update({"status": DeliveryStatus.delivering, "lease_token": token,
              "lease_expires_at": now + timedelta(seconds=LEASE_S), "attempts": db.WebhookDelivery.attempts + 1},
             synchronize_session=False)
    if not taken:
        s.query(db.WebhookDelivery).filter(
            db.WebhookDelivery.id == delivery_id, due(now), db.WebhookDelivery.attempts >= max_attempts,
        ).update({"status": DeliveryStatus.failed, "lease_token": None, "next_attempt_at": None,
                  "last_error": f"gave up after {max_attempts} attempts"},
                 synchronize_session=False)
    s.commit()
    return token if taken else None


def resolve(target: Target, allowed: list[str]) -> list[str]:
    """The addresses to connect to, in the resolver's order; Refused when any of them is forbidden."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    bad = [a for a in addresses if not address_allowed(a, target.port, allowed)]
    if bad:
        raise Refused(f"{target.host} resolves to {', '.join(bad)} (link-local or cloud metadata); refused unless "
                      "that address itself is allow-listed")
    return addresses


def post(http: httpx.Client, target: Target, addresses: list[str], headers: dict, body: bytes) -> int:
    """POST to the first address that accepts a connection, naming the host (Host header, TLS SNI and certificate
    check) as the URL does; the answer's body is not read."""
    host_header = target.url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    last: Exception | None = None
    for address in addresses:
        request = http.build_request("POST", target.url.copy_with(host=address), content=body,
                                     headers={**headers, "host": host_header}, extensions=extensions)
        try:
            response = http.send(request, stream=True)
        except httpx.ConnectError as e:
            last = e
            continue
        response.close()
        return response.status_code
    raise last or httpx.ConnectError("no address to connect to")


def attempt(http: httpx.Client, settings: Settings, msg_id: str, url: str, secret: str, body: bytes) -> Outcome:
    """One send of one delivery: checked, signed, posted; what happened."""
    try:
        target = check_url(url, settings.webhook_allowed_hosts)  # the list may have shrunk since registration
        addresses = resolve(target, settings.webhook_allowed_hosts)
    except (UrlRefused, Refused) as e:
        return Outcome(error=f"refused, not sent: {e}", refused=True)
    except OSError as e:  # the name does not resolve (now): retried
        return Outcome(error=f"could not resolve {url!r}: {e}")
    headers = signed_headers(secret, msg_id, int(time.time()), body)
    try:
        code = post(http, target, addresses, headers, body)
    except httpx.HTTPError as e:
        return Outcome(error=f"{type(e).__name__}: {e}")
    return Outcome(status_code=code, error=None if 200 <= code < 300 else f"the receiver answered HTTP {code}")


def body_of(row: db.WebhookDelivery) -> bytes:
    return json.dumps(row.payload, separators=(",", ":"), sort_keys=True).encode()


def deliver(sessions, settings: Settings, http: httpx.Client, delivery_id: str, now: datetime | None = None) -> str:
    """Claim, send and record one delivery; its status afterwards ('' when another sender has it)."""
    with sessions() as s:
        token = claim(s, delivery_id, now or db.utcnow(), settings.webhook_max_attempts)
        if token is None:
            return ""
        row = s.get(db.WebhookDelivery, delivery_id)
        hook = s.get(db.Webhook, row.webhook_id)
        attempts, history, body = row.attempts, list(row.history or []), body_of(row)
        url, secret, gone = hook.url, hook.secret, hook.disabled_at is not None
    outcome = Outcome(error="the webhook was deleted; not sent", refused=True) if gone else \
        attempt(http, settings, delivery_id, url, secret, body)
    return record(sessions, settings, delivery_id, token, attempts, history, outcome)


def record(sessions, settings: Settings, delivery_id: str, token: str, attempts: int, history: list,
           outcome: Outcome) -> str:
    now = db.utcnow()
    if outcome.ok:
        status, next_at = DeliveryStatus.succeeded, None
    elif outcome.refused or attempts >= settings.webhook_max_attempts:
        status, next_at = DeliveryStatus.failed, None
    else:
        status = DeliveryStatus.pending
        next_at = now + timedelta(seconds=retry_delay(attempts, settings.webhook_backoff_s))
    error = outcome.error[:ERROR_CHARS] if outcome.error else None
    entry = {"attempt": attempts, "at": now.isoformat(), "status_code": outcome.status_code, "error": error}
    with sessions() as s:
        kept = s.query(db.WebhookDelivery).filter(
            db.WebhookDelivery.id == delivery_id, db.WebhookDelivery.lease_token == token,
            db.WebhookDelivery.status == DeliveryStatus.delivering,
        ).update({"status": status, "next_attempt_at": next_at, "lease_token": None, "lease_expires_at": None,
                  "last_status_code": outcome.status_code, "last_error": error,
                  "history": [*history, entry][-HISTORY:], "delivered_at": now if outcome.ok else None},
                 synchronize_session=False)
        s.commit()
    if not kept:
        log.warning("webhook delivery %s: the lease lapsed during the attempt; another sender owns it", delivery_id)
        return ""
    if status != DeliveryStatus.succeeded:
        log.info("webhook delivery %s attempt %s: %s (%s)", delivery_id, attempts, error, status)
    return status


def deliver_due(sessions, settings: Settings, http: httpx.Client, pool: ThreadPoolExecutor | None = None,
                limit: int = BATCH) -> int:
    """One pass over the due deliveries (oldest due first, at most `limit`); how many were due."""
    now = db.utcnow()
    with sessions() as s:
        ids = list(s.scalars(select(db.WebhookDelivery.id).where(due(now))
                             .order_by(db.WebhookDelivery.next_attempt_at).limit(limit)))
    if pool is None:
        for delivery_id in ids:
            deliver(sessions, settings, http, delivery_id)
    else:
        list(pool.map(lambda d: deliver(sessions, settings, http, d), ids))
    return len(ids)


def client() -> httpx.Client:
    """No redirects, no proxies from the environment (the checked address is the one connected to), 10 s limits."""
    return httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False, trust_env=False,
                        headers={"user-agent": "editaudit-webhooks"})


def start_deliverer(sessions, settings: Settings, poll_s: float | None = None) -> threading.Event:
    """Send due deliveries on a daemon thread until the returned event is set. It polls every second (or every
    webhook_backoff_s when shorter) while nothing is due, and at once after a pass that found work."""
    stop = threading.Event()
    poll = poll_s if poll_s is not None else min(1.0, settings.webhook_backoff_s)

    def loop():
        with client() as http, ThreadPoolExecutor(SENDERS, thread_name_prefix="editaudit-webhook") as pool:
            while not stop.is_set():
                try:
                    found = deliver_due(sessions, settings, http, pool)
                except Exception:  # noqa: BLE001 - a database outage must not end the loop
                    log.exception("webhook delivery pass failed; retrying")
                    found = 0
                if not found:
                    stop.wait(poll)

    threading.Thread(target=loop, name="editaudit-webhooks", daemon=True).start()
    return stop
