"""API key scopes: what a key may do. A route names the one scope it needs; `admin` holds every scope."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    models_write = "models:write"  # upload checkpoints and datasets
    edits_write = "edits:write"  # submit and cancel edits
    audits_read = "audits:read"  # read models, datasets, edits, audits, reports and weights
    gate_read = "gate:read"  # gate an edit against a policy, read policies and profiles
    promote = "promote"  # move and revert aliases
    admin = "admin"  # everything, plus the tenant's policies and audit profiles


ALL_SCOPES = tuple(s.value for s in Scope)


def grants(held: frozenset[str] | set[str], needed: str | None) -> bool:
    """Whether a key holding `held` may call a route that needs `needed` (None: any valid key)."""
    return needed is None or needed in held or Scope.admin in held
