"""Audit profiles: the stored config an edit runs when it names a profile instead of spelling out its audit."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.orm import Session

from editaudit.contracts.audit import AuditConfig
from editaudit.core import db, repo
from editaudit.service.errors import Problem
from editaudit.service.schemas.audit_profiles import ProfileRef


def resolve_audit(s: Session, ref: ProfileRef) -> tuple[AuditConfig, dict]:
    """(the profile's config, the record an audit keeps of it); 404 naming `audit.profile` when the session's tenant
    has none."""
    row = repo.latest_version(s, db.AuditProfile, ref.profile, ref.version)
    if row is None:
        raise Problem(404, f"no audit profile {ref.profile!r}" + (f" version {ref.version}" if ref.version else "")
                      + f" for tenant {db.session_tenant(s)!r}", field="audit.profile")
    digest = hashlib.sha256(json.dumps(row.config, sort_keys=True).encode()).hexdigest()
    return AuditConfig.model_validate(row.config), {"tenant": row.tenant, "name": row.name, "version": row.version,
                                                    "sha256": digest}
