"""`/policies`: a tenant's named gate policies; every POST adds a version, the latest one is in force."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from editaudit.core import db
from editaudit.gate.policy import builtin_policy
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem
from editaudit.service.schemas.gate import PolicyIn, PolicyList, PolicyOut
from editaudit.service.services.gating import latest_policy, validate_policy

router = APIRouter(tags=["policies"])


def _policy_out(row: db.PolicyVersion) -> PolicyOut:
    return PolicyOut(tenant=row.tenant, name=row.name, version=row.version, policy=row.document,
                     created_at=row.created_at)


@router.post("/policies", status_code=201, response_model=PolicyOut)
def put_policy(body: PolicyIn, s: SessionDep, tenant: TenantDep, response: Response):
    if builtin_policy(body.name) is not None:  # a tenant policy named `default` would replace what gates expect
        raise Problem(409, f"{body.name!r} is a built-in policy's name; choose another", field="name")
    policy = validate_policy(body.policy, "policy")
    latest = latest_policy(s, tenant, body.name)
    row = db.PolicyVersion(tenant=tenant, name=body.name, version=(latest.version + 1) if latest else 1,
                           document=policy.model_dump(mode="json", exclude_none=True))
    s.add(row)
    s.commit()
    response.headers["Location"] = f"/policies/{body.name}"
    return _policy_out(row)


@router.get("/policies", response_model=PolicyList)
def list_policies(s: SessionDep, tenant: TenantDep):
    names = s.scalars(select(db.PolicyVersion.name).filter_by(tenant=tenant).distinct()).all()
    return PolicyList(tenant=tenant, policies=sorted(names), builtin=["default"])


@router.get("/policies/{name}", response_model=PolicyOut)
def get_policy(name: str, s: SessionDep, tenant: TenantDep):
    row = latest_policy(s, tenant, name)
    if row is not None:
        return _policy_out(row)
    builtin = builtin_policy(name)
    if builtin is None:
        raise Problem(404, f"no policy named {name!r} for tenant {tenant!r}", field="name")
    return PolicyOut(tenant=None, name=name, version="builtin", policy=builtin.model_dump(mode="json",
                                                                                         exclude_none=True))
