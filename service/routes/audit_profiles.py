"""`/audit-profiles`: a tenant's named audit configs; a POST of a changed config adds a version (the same config
again is not a new one). `POST /edits` names one with
`"audit": {"profile": NAME}`, and a gate policy can require it, so the platform team decides how hard an edit is
attacked, not its submitter."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from editaudit.contracts.scopes import Scope
from editaudit.core import db, repo
from editaudit.service.deps import SessionDep, TenantSessionsDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.audit_profiles import AuditProfileIn, AuditProfileList, AuditProfileOut
from editaudit.service.services.idempotency import idempotent, payload_hash

router = APIRouter(tags=["audit profiles"])


@router.post("/audit-profiles", status_code=201, response_model=AuditProfileOut,
             **op("create_audit_profile", Scope.admin, 409, responses={
                 200: {"model": AuditProfileOut, "description": "the config is the latest version's already: that "
                                                                "version"}}))
def put_audit_profile(body: AuditProfileIn, s: SessionDep, sessions: TenantSessionsDep, request: Request):
    """A new version of the named profile, 201 (admin: the platform team decides how hard edits are attacked); the
    latest version's config again: that version, 200. Concurrent POSTs of one name get distinct, consecutive versions
    (or, for one config, one version)."""
    def create() -> JSONResponse:
        row, created = repo.add_version(s, db.AuditProfile, body.name, config=body.audit.model_dump(mode="json"))
        out = AuditProfileOut.model_validate(row, from_attributes=True)
        return JSONResponse(jsonable_encoder(out), status_code=201 if created else 200,
                            headers={"Location": f"/audit-profiles/{body.name}?version={row.version}"})

    return idempotent(request, sessions, payload_hash(body.model_dump(mode="json")), create)


@router.get("/audit-profiles", response_model=AuditProfileList, **op("list_audit_profiles", Scope.gate_read))
def list_audit_profiles(s: SessionDep):
    return AuditProfileList(tenant=db.session_tenant(s), profiles=repo.version_names(s, db.AuditProfile))


@router.get("/audit-profiles/{name}", response_model=AuditProfileOut,
            **op("get_audit_profile", Scope.gate_read, 404))
def get_audit_profile(name: str, s: SessionDep, version: int | None = Query(None, ge=1, le=2**31 - 1)):
    row = repo.latest_version(s, db.AuditProfile, name, version)
    if row is None:
        raise Problem(404, f"no audit profile {name!r}" + (f" version {version}" if version else "")
                      + f" for tenant {db.session_tenant(s)!r}", field="name")
    return AuditProfileOut.model_validate(row, from_attributes=True)
