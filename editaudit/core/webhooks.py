"""Webhooks: the events a tenant can subscribe to, the operator's allow-list of hosts, Standard Webhooks signing
and the outbox writes.

An event is written as `webhook_deliveries` rows (one per subscribed webhook of the tenant) in the same transaction
as the change that causes it, so it exists exactly when the change does; workers send the rows
(editaudit.worker.jobs.webhooks). A payload carries ids and verdicts only, never metrics:

    {"type": "edit.succeeded", "timestamp": "2026-...+00:00", "data": {"edit_id": ..., "audit_id": ..., ...}}

Signing follows https://www.standardwebhooks.com: headers `webhook-id` (the delivery's id, the same on every
retry), `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` of
`{id}.{timestamp}.{body}` keyed with the base64-decoded secret after `whsec_`.

Hosts: the operator's `EDITAUDIT_WEBHOOK_ALLOWED_HOSTS` (`hooks.example.com`, `ci.example.com:8443`,
`*.example.com`, `10.0.0.5`, `[fd00::1]:8080`). Empty: webhooks are off. A URL is checked when it is registered and
again before every send, when the addresses its host resolves to are checked too: link-local and cloud metadata
addresses are refused unless that literal address is itself allow-listed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import httpx
from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from editaudit.contracts.statuses import TERMINAL, Status
from editaudit.core import db

SECRET_PREFIX = "whsec_"
MAX_URL_CHARS = 2000
BACKOFF = (1, 6, 24, 120, 720)  # x webhook_backoff_s: 5 s, 30 s, 2 min, 10 min, 1 h (then every hour)
JITTER = 0.2


class Event(StrEnum):
    edit_succeeded = "edit.succeeded"
    edit_failed = "edit.failed"
    edit_canceled = "edit.canceled"
    audit_completed = "audit.completed"  # the audit has results: a gate can be run
    gate_evaluated = "gate.evaluated"  # GET /edits/{id}/gate, POST /gate, and promotions
    ping = "ping"  # POST /webhooks/{id}/test: sent to that webhook whatever it subscribes to


SUBSCRIBABLE = tuple(e.value for e in Event if e != Event.ping)
ALL = "*"


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivering = "delivering"
    succeeded = "succeeded"
    failed = "failed"


# --- signing --------------------------------------------------------------------------------------------------------

def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (Standard Webhooks' format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `{msg_id}.{timestamp}.{body}`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body), "content-type": "application/json"}


# --- the allow-list -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AllowedHost:
    """One allow-list entry: an exact host (a name or an IP), or `*.suffix` (subdomains of suffix, at any depth, not
    suffix itself); with a port, only that port."""

    host: str
    port: int | None = None
    wildcard: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return not _is_ip(host) and host.endswith("." + self.host)
        return host == self.host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _norm_host(host: str) -> str:
    """Lower case without a trailing dot; an IP in its canonical form; a non-ASCII name as IDNA."""
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise ValueError(f"{host!r} is not a host name") from None


def parse_allowed(entry: str) -> AllowedHost:
    """An entry of EDITAUDIT_WEBHOOK_ALLOWED_HOSTS; ValueError naming it when it is not one."""
    e = entry.strip().lower()
    bad = ValueError(f"webhook allow-list entry {entry!r} is not a host, host:port or *.domain")
    if not e or any(c in e for c in "/@?#\\ \t\r\n"):
        raise bad
    wildcard = e.startswith("*.")
    e = e[2:] if wildcard else e
    if "*" in e:
        raise ValueError(f"webhook allow-list entry {entry!r}: only a leading `*.` is a pattern (list hosts "
                         "explicitly; there is no allow-all)")
    port: str | None = None
    if e.startswith("["):  # [v6] or [v6]:port
        host, sep, rest = e[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad
        port = (rest[1:] or None) if rest else None
        if not _is_ip(host):
            raise bad
    elif e.count(":") == 1:
        host, port = e.split(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host = e
        if e.count(":") > 1 and not _is_ip(host):
            raise bad
    try:
        host = _norm_host(host)
        number = int(port) if port is not None else None
    except ValueError:
        raise bad from None
    if not host or (number is not None and not 1 <= number <= 65535):
        raise bad
    if wildcard and (_is_ip(host) or host.rsplit(".", 1)[-1].isdigit()):
        raise ValueError(f"webhook allow-list entry {entry!r}: a pattern matches names; list addresses one by one")
    return AllowedHost(host, number, wildcard)


def allowed_hosts(entries: list[str]) -> list[AllowedHost]:
    return [parse_allowed(e) for e in entries]


class UrlRefused(ValueError):
    """A webhook URL this deployment will not send to; the message says why."""


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str  # normalised (what the allow-list is matched against)
    port: int  # explicit or the scheme's


def check_url(url: str, entries: list[str]) -> Target:
    """The URL as it will be requested, or UrlRefused: http(s) only, no credentials in it, its host (and port)
    allowed by the operator's list."""
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise UrlRefused(f"not a valid URL: {e}") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(f"the scheme must be http or https, not {parsed.scheme or 'none'!r}")
    if parsed.userinfo:
        raise UrlRefused("credentials in the URL (user:password@) are refused; put a token in the path or query")
    if not parsed.host:
        raise UrlRefused("the URL has no host")
    try:
        host = _norm_host(parsed.raw_host.decode("ascii"))
    except (UnicodeError, ValueError):
        raise UrlRefused(f"{parsed.host!r} is not a host name") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not entries:
        raise UrlRefused("the operator allows no webhook hosts (EDITAUDIT_WEBHOOK_ALLOWED_HOSTS is empty): webhooks "
                         "are off on this deployment")
    if not any(a.matches(host, port) for a in allowed_hosts(entries)):
        raise UrlRefused(f"host {host}:{port} is not in the operator's allow-list (EDITAUDIT_WEBHOOK_ALLOWED_HOSTS)")
    return Target(parsed.copy_with(fragment=None), host, port)


METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ... (and all of 169.254.0.0/16: link-local)
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_address(address: str) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10) or a cloud metadata address, also inside IPv4-mapped or NAT64 IPv6."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_link_local or ip in METADATA


def address_allowed(address: str, port: int, entries: list[str]) -> bool:
    """Whether a resolved address may be connected to: any but a forbidden one, which only when the operator
    allow-listed that very address."""
    if not forbidden_address(address):
        return True
    literal = _norm_host(address.split("%", 1)[0])
    return any(not a.wildcard and a.matches(literal, port) for a in allowed_hosts(entries))


# --- retries --------------------------------------------------------------------------------------------------------

def retry_delay(attempts: int, base_s: float, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: base x 1, 6, 24, 120, 720 (then 720), +-20%."""
    factor = BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]
    return base_s * factor * (rng or random).uniform(1 - JITTER, 1 + JITTER)


# --- the outbox -----------------------------------------------------------------------------------------------------

def subscribed(events: list[str], event: str) -> bool:
    return event == Event.ping or ALL in events or event in events


def payload(event: str, data: dict, at: datetime | None = None) -> dict:
    return {"type": str(event), "timestamp": (at or db.utcnow()).isoformat(), "data": data}


def _insert(s: Session, values: dict, dedupe: bool) -> bool:
    """An outbox row in the session's transaction; with a dedupe key, none when this webhook already has that event
    (ON CONFLICT DO NOTHING: no error, and a concurrent writer of the same event waits for the first and then writes
    nothing). Whether a row was written. Core SQL on the session's connection, which the tenant criterion does not
    see: `values["tenant"]` is the tenant of a webhook row the session loaded (under the criterion, in an API
    request)."""
    conn = s.connection()
    name = conn.dialect.name
    table = cast(Table, db.WebhookDelivery.__table__)
    if dedupe and name in ("postgresql", "sqlite"):
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        stmt = dialect_insert(table).values(**values).on_conflict_do_nothing(index_elements=["webhook_id",
                                                                                           "dedupe_key"])
        if name == "postgresql":  # psycopg reports no rowcount here: RETURNING says whether the row went in
            return conn.execute(stmt.returning(table.c.id)).first() is not None
        return conn.execute(stmt).rowcount == 1
    if dedupe and s.scalar(select(db.WebhookDelivery.id).filter_by(webhook_id=values["webhook_id"],
                                                                    dedupe_key=values["dedupe_key"])):
        return False
    conn.execute(insert(table).values(**values))
    return True


def emit(s: Session, tenant: str, event: str, data: dict, dedupe_key: str | None = None,
         webhook_id: str | None = None) -> list[str]:
    """Outbox rows for `event`, one per live webhook of the tenant that subscribes to it (or only `webhook_id`), in
    the caller's transaction (the caller commits). Returns the ids written."""
    q = select(db.Webhook).where(db.Webhook.tenant == tenant, db.Webhook.disabled_at.is_(None))
    if webhook_id is not None:
        q = q.where(db.Webhook.id == webhook_id)
    now = db.utcnow()
    body = payload(event, data, now)
    written = []
    for hook in s.scalars(q).all():
        if not subscribed(hook.events, event):
            continue
        row_id = db.new_id()
        values: dict[str, Any] = dict(
            id=row_id, tenant=hook.tenant, webhook_id=hook.id, event=str(event), dedupe_key=dedupe_key, payload=body,
            status=DeliveryStatus.pending, attempts=0, next_attempt_at=now, history=[], created_at=now)
        if _insert(s, values, dedupe_key is not None):
            written.append(row_id)
    return written


def edit_finished(s: Session, edit: db.Edit) -> None:
    """`edit.<status>` for an edit that has just ended, and `audit.completed` when its audit has results; each at
    most once per edit and webhook, however often a finish path runs."""
    if edit.status not in TERMINAL:
        return
    audit_id = s.scalar(select(db.Audit.id).where(db.Audit.edit_id == edit.id))
    data = {"edit_id": edit.id, "audit_id": audit_id, "status": str(edit.status), "model_id": edit.model_id,
            "edited_model_id": edit.edited_model_id, "method": edit.method, "sweep_id": edit.sweep_id}
    emit(s, edit.tenant, f"edit.{edit.status}", data, dedupe_key=f"edit:{edit.id}")
    if edit.status == Status.succeeded:
        emit(s, edit.tenant, Event.audit_completed, data, dedupe_key=f"audit:{audit_id}")


def gate_evaluated(s: Session, edit: db.Edit, result: dict, promotion: dict | None = None) -> None:
    """`gate.evaluated`: the verdict and the policy it was reached under (an inline policy's document is not sent)."""
    policy = result["policy"]
    data = {"edit_id": edit.id, "audit_id": result["audit_id"], "verdict": str(result["verdict"]),
            "policy": {"inline": True} if "inline" in policy else policy, "model_id": edit.model_id,
            "edited_model_id": edit.edited_model_id}
    if promotion is not None:
        data["promotion"] = promotion
    emit(s, edit.tenant, Event.gate_evaluated, data)
