"""`/policies`: a tenant's named gate policies; every POST adds a version, the latest one is in force."""

from __future__ import annotations

from fastapi import APIRouter, Response

from editaudit.core import db, repo
from editaudit.gate.policy import builtin_policy
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem
from editaudit.service.schemas.gate import PolicyIn, PolicyList, PolicyOut
from editaudit.service.services.gating import validate_policy

router = APIRouter(tags=["policies"])


@router.post("/policies", status_code=201, response_model=PolicyOut)
def put_policy(body: PolicyIn, s: SessionDep, tenant: TenantDep, response: Response):
    if builtin_policy(body.name) is not None:  # a tenant policy named `default` would replace what gates expect
        raise Problem(409, f"{body.name!r} is a built-in policy's name; choose another", field="name")
    policy = validate_policy(body.policy, "policy")
    row = repo.add_version(s, db.PolicyVersion, tenant, body.name,
                           document=policy.model_dump(mode="json", exclude_none=True))
    response.headers["Location"] = f"/policies/{body.name}"
    return PolicyOut.model_validate(row, from_attributes=True)


@router.get("/policies", response_model=PolicyList)
def list_policies(s: SessionDep, tenant: TenantDep):
    return PolicyList(tenant=tenant, policies=repo.version_names(s, db.PolicyVersion, tenant), builtin=["default"])


@router.get("/policies/{name}", response_model=PolicyOut)
def get_policy(name: str, s: SessionDep, tenant: TenantDep):
    row = repo.latest_version(s, db.PolicyVersion, tenant, name)
    if row is not None:
        return PolicyOut.model_validate(row, from_attributes=True)
    builtin = builtin_policy(name)
    if builtin is None:
        raise Problem(404, f"no policy named {name!r} for tenant {tenant!r}", field="name")
    return PolicyOut(tenant=None, name=name, version="builtin", policy=builtin.model_dump(mode="json",
                                                                                         exclude_none=True))
