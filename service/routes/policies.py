"""`/policies`: a tenant's named gate policies; a POST of a changed document adds a version, the latest one is in
force; the same document again is not a new version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from editaudit.contracts.scopes import Scope
from editaudit.core import db, repo
from editaudit.gate.policy import builtin_policy
from editaudit.service.deps import SessionDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.gate import PolicyIn, PolicyList, PolicyOut
from editaudit.service.services.gating import validate_policy
from editaudit.service.services.idempotency import idempotent, payload_hash

router = APIRouter(tags=["policies"])


UNCHANGED = {200: {"model": PolicyOut, "description": "the document is the latest version's already: that version"}}


@router.post("/policies", status_code=201, response_model=PolicyOut,
             **op("create_policy", Scope.admin, 409, responses=UNCHANGED))
def put_policy(body: PolicyIn, s: SessionDep, sessions: TenantSessionsDep, request: Request):
    """A new version of the named policy, 201 (admin: whoever submits edits must not write the rules they are held
    to); the latest version's document again: that version, 200. Concurrent POSTs of one name get distinct,
    consecutive versions (or, for one document, one version)."""
    if builtin_policy(body.name) is not None:  # a tenant policy named `default` would replace what gates expect
        raise Problem(409, f"{body.name!r} is a built-in policy's name; choose another", field="name")
    policy = validate_policy(body.policy, "policy")

    def create() -> JSONResponse:
        row, created = repo.add_version(s, db.PolicyVersion, body.name,
                                        document=policy.model_dump(mode="json", exclude_none=True))
        out = PolicyOut.model_validate(row, from_attributes=True)
        return JSONResponse(jsonable_encoder(out), status_code=201 if created else 200,
                            headers={"Location": f"/policies/{body.name}"})

    return idempotent(request, sessions, payload_hash(body.model_dump(mode="json")), create)


@router.get("/policies", response_model=PolicyList, **op("list_policies", Scope.gate_read))
def list_policies(s: SessionDep):
    return PolicyList(tenant=db.session_tenant(s), policies=repo.version_names(s, db.PolicyVersion),
                      builtin=["default"])


@router.get("/policies/{name}", response_model=PolicyOut, **op("get_policy", Scope.gate_read, 404))
def get_policy(name: str, s: SessionDep):
    row = repo.latest_version(s, db.PolicyVersion, name)
    if row is not None:
        return PolicyOut.model_validate(row, from_attributes=True)
    builtin = builtin_policy(name)
    if builtin is None:
        raise Problem(404, f"no policy named {name!r} for tenant {db.session_tenant(s)!r}", field="name")
    return PolicyOut(tenant=None, name=name, version="builtin", policy=builtin.model_dump(mode="json",
                                                                                         exclude_none=True))
