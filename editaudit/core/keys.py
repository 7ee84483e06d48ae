"""API keys: who is calling (tenant and actor) and what they may do (scopes).

A token is `ea_` + 43 random url-safe characters, shown once when created. The database keeps its first 12
characters (the prefix, to look it up and to tell keys apart in listings) and the sha256 of the whole token: the
token has 256 bits of entropy, so a fast hash is enough, and the comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from editaudit.contracts.scopes import ALL_SCOPES, Scope
from editaudit.core import db

TOKEN_PREFIX = "ea_"
PREFIX_LEN = 12
TENANT_RE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


@dataclass(frozen=True)
class Principal:
    """The caller of a request: everything it creates belongs to `tenant`, and `actor` is recorded on promotions."""

    tenant: str
    actor: str
    scopes: frozenset[str]
    key_prefix: str | None = None


ANONYMOUS = Principal(tenant="default", actor="anonymous", scopes=frozenset({Scope.admin.value}))


class KeyError_(ValueError):
    """A key request that cannot be honoured (unknown scope, bad tenant name, no such key)."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.fullmatch(tenant):
        raise KeyError_(f"tenant {tenant!r}: 1-100 letters, digits, '.', '_' or '-'")
    return tenant


def create_key(s: Session, tenant: str, name: str, scopes: list[str]) -> tuple[db.ApiKey, str]:
    """A new key (committed) and its token; the token is not stored and cannot be shown again."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise KeyError_(f"scopes must be some of {list(ALL_SCOPES)}; got {unknown or 'none'}")
    if not 1 <= len(name) <= 100:
        raise KeyError_("a key's name (the actor it records) is 1-100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = db.ApiKey(prefix=token[:PREFIX_LEN], secret_hash=_digest(token), tenant=check_tenant(tenant), name=name,
                    scopes=sorted(set(scopes)))
    s.add(row)
    s.commit()
    return row, token


def list_keys(s: Session, tenant: str | None = None) -> list[db.ApiKey]:
    q = select(db.ApiKey).order_by(db.ApiKey.created_at)
    return list(s.scalars(q.filter_by(tenant=tenant) if tenant else q))


def revoke_key(s: Session, ref: str) -> db.ApiKey:
    """Revoke by id or prefix (committed); revoking twice keeps the first time."""
    row = s.get(db.ApiKey, ref) or s.scalars(select(db.ApiKey).filter_by(prefix=ref)).first()
    if row is None:
        raise KeyError_(f"no key with id or prefix {ref!r}")
    row.revoked_at = row.revoked_at or db.utcnow()
    s.commit()
    return row


def any_active_key(s: Session) -> bool:
    return s.scalars(select(db.ApiKey.id).filter_by(revoked_at=None).limit(1)).first() is not None


def credentials_exist(s: Session, api_token: str | None) -> bool:
    """Whether the deployment has a credential (the bootstrap token or an active key). Until it has, anonymous
    access may be allowed (the embedded server on loopback); from then on every request needs one."""
    return bool(api_token) or any_active_key(s)


def principal_for(s: Session, token: str) -> Principal | None:
    """The principal a token stands for, or None (unknown, revoked or malformed)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = s.scalars(select(db.ApiKey).filter_by(prefix=token[:PREFIX_LEN])).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _digest(token)):
        return None
    return Principal(tenant=row.tenant, actor=row.name, scopes=frozenset(row.scopes), key_prefix=row.prefix)


def bootstrap_principal(configured: str | None, token: str) -> Principal | None:
    """`EDITAUDIT_API_TOKEN`, when set, is an admin key of tenant `default` (the compose file's `.env` secret)."""
    if configured and hmac.compare_digest(configured.encode(), token.encode("utf-8", "surrogatepass")):
        return Principal(tenant="default", actor="api-token", scopes=frozenset({Scope.admin.value}))
    return None
