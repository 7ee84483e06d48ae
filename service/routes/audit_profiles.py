"""`/audit-profiles`: a tenant's named audit configs; every POST adds a version. `POST /edits` names one with
`"audit": {"profile": NAME}`, and a gate policy can require it, so the platform team decides how hard an edit is
attacked, not its submitter."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from editaudit.core import db
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem
from editaudit.service.schemas.audit_profiles import AuditProfileIn, AuditProfileList, AuditProfileOut
from editaudit.service.services.profiles import find_profile

router = APIRouter(tags=["audit profiles"])


def _out(row: db.AuditProfile) -> AuditProfileOut:
    return AuditProfileOut(tenant=row.tenant, name=row.name, version=row.version, audit=row.config,
                           created_at=row.created_at)


@router.post("/audit-profiles", status_code=201, response_model=AuditProfileOut)
def put_audit_profile(body: AuditProfileIn, s: SessionDep, tenant: TenantDep, response: Response):
    latest = find_profile(s, tenant, body.name)
    row = db.AuditProfile(tenant=tenant, name=body.name, version=(latest.version + 1) if latest else 1,
                          config=body.audit.model_dump(mode="json"))
    s.add(row)
    s.commit()
    response.headers["Location"] = f"/audit-profiles/{body.name}?version={row.version}"
    return _out(row)


@router.get("/audit-profiles", response_model=AuditProfileList)
def list_audit_profiles(s: SessionDep, tenant: TenantDep):
    names = s.scalars(select(db.AuditProfile.name).filter_by(tenant=tenant).distinct()).all()
    return AuditProfileList(tenant=tenant, profiles=sorted(names))


@router.get("/audit-profiles/{name}", response_model=AuditProfileOut)
def get_audit_profile(name: str, s: SessionDep, tenant: TenantDep, version: int | None = None):
    row = find_profile(s, tenant, name, version)
    if row is None:
        raise Problem(404, f"no audit profile {name!r}" + (f" version {version}" if version else "")
                      + f" for tenant {tenant!r}", field="name")
    return _out(row)
