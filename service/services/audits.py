"""An audit row as the API serves it (`GET /audits/{id}`, reports, the gate): its result read through the contract
(editaudit.contracts.audit_result), whatever shape it was stored in, with the row's config and profile."""

from __future__ import annotations

from editaudit.contracts.audit_result import AuditResult
from editaudit.core import db
from editaudit.service.schemas.audits import AuditOut


def audit_result(audit: db.Audit) -> AuditResult:
    """The row's result (an empty one before there is any) with the config that ran and its profile."""
    return AuditResult.from_stored(audit.result, audit.config, audit.profile)


def audit_out(audit: db.Audit) -> AuditOut:
    return AuditOut.of(audit, audit_result(audit) if audit.result is not None else None)
