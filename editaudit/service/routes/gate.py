"""Gate, policies and promotion: `/policies`, `/gate`, `/edits/{id}/gate`, `/edits/{id}/promote`,
`/edits/{id}/revert`, `/aliases`."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from editaudit.service import db
from editaudit.service.deps import SessionDep, TenantDep
from editaudit.service.errors import Problem, validation_problem
from editaudit.service.gate import Policy, builtin_policy, evaluate
from editaudit.service.routes.audits import audit_dict
from editaudit.service.routes.edits import get_edit_row, require_single, require_succeeded

router = APIRouter(tags=["gate"])

NAME = r"^[A-Za-z0-9_.\-]{1,100}$"


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    policy: dict


class GateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    edit_id: str
    policy: str | dict = Field("default", description="a policy name, or an inline policy document")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field("production", pattern=NAME)
    policy: str | dict = "default"
    override_reason: str | None = Field(None, min_length=10, description="ship despite a failing gate, and say why")
    actor: str | None = Field(None, max_length=200)


class RevertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=2000)
    actor: str | None = Field(None, max_length=200)


def _validate_policy(doc: dict, field: str) -> Policy:
    try:
        return Policy.model_validate(doc)
    except ValidationError as e:
        raise validation_problem(e, field) from None


def _latest(s, tenant: str, name: str) -> db.Policy | None:
    return s.scalars(select(db.Policy).filter_by(tenant=tenant, name=name).order_by(db.Policy.version.desc())
                     .limit(1)).first()


def resolve_policy(s, tenant: str, ref: str | dict) -> tuple[Policy, dict]:
    """(policy, reference recorded with a verdict): a tenant's named policy, a built-in one, or an inline document."""
    if isinstance(ref, dict):
        return _validate_policy(ref, "policy"), {"inline": ref}
    row = _latest(s, tenant, ref)
    if row is not None:
        return Policy.model_validate(row.document), {"name": ref, "version": row.version, "tenant": tenant}
    builtin = builtin_policy(ref)
    if builtin is not None:
        return builtin, {"name": ref, "version": "builtin"}
    raise Problem(404, f"no policy named {ref!r} for tenant {tenant!r} (built-in: default)", field="policy")


def _policy_out(row: db.Policy) -> dict:
    return {"tenant": row.tenant, "name": row.name, "version": row.version, "policy": row.document,
            "created_at": row.created_at}


@router.post("/policies", status_code=201)
def put_policy(body: PolicyIn, s: SessionDep, tenant: TenantDep, response: Response) -> dict:
    policy = _validate_policy(body.policy, "policy")
    latest = _latest(s, tenant, body.name)
    row = db.Policy(tenant=tenant, name=body.name, version=(latest.version + 1) if latest else 1,
                    document=policy.model_dump(mode="json", exclude_none=True))
    s.add(row)
    s.commit()
    response.headers["Location"] = f"/policies/{body.name}"
    return _policy_out(row)


@router.get("/policies")
def list_policies(s: SessionDep, tenant: TenantDep) -> dict:
    names = s.scalars(select(db.Policy.name).filter_by(tenant=tenant).distinct()).all()
    return {"tenant": tenant, "policies": sorted(names), "builtin": ["default"]}


@router.get("/policies/{name}")
def get_policy(name: str, s: SessionDep, tenant: TenantDep) -> dict:
    row = _latest(s, tenant, name)
    if row is not None:
        return _policy_out(row)
    builtin = builtin_policy(name)
    if builtin is None:
        raise Problem(404, f"no policy named {name!r} for tenant {tenant!r}", field="name")
    return {"tenant": None, "name": name, "version": "builtin", "policy": builtin.model_dump(mode="json",
                                                                                              exclude_none=True)}


def gate_for(s, tenant: str, edit_id: str, policy_ref: str | dict) -> dict:
    edit = get_edit_row(s, edit_id)
    require_single(s, edit)
    policy, ref = resolve_policy(s, tenant, policy_ref)
    audit = s.scalars(select(db.Audit).filter_by(edit_id=edit_id)).one()
    if audit.status != "succeeded":
        raise Problem(409, f"the audit of edit {edit_id} is {audit.status}; a gate needs a finished audit",
                      field="edit_id", audit_status=audit.status, edit_status=edit.status)
    result = evaluate(audit_dict(audit), policy)
    return {"edit_id": edit_id, "audit_id": audit.id, "policy": ref, **result.as_dict()}


@router.get("/edits/{edit_id}/gate")
def gate_edit(edit_id: str, s: SessionDep, tenant: TenantDep, policy: str = "default") -> dict:
    return gate_for(s, tenant, edit_id, policy)


@router.post("/gate")
def gate(body: GateRequest, s: SessionDep, tenant: TenantDep) -> dict:
    return gate_for(s, tenant, body.edit_id, body.policy)


def family_of(s, model_id: str) -> str:
    """The root model of a lineage: aliases are per family (the original checkpoint and all its edits)."""
    seen = set()
    while model_id not in seen:
        seen.add(model_id)
        parent = s.get(db.Model, model_id).parent_model_id
        if parent is None:
            return model_id
        model_id = parent
    return model_id


@router.post("/edits/{edit_id}/promote")
def promote(edit_id: str, body: PromoteRequest, s: SessionDep, tenant: TenantDep) -> dict:
    result = gate_for(s, tenant, edit_id, body.policy)
    edit = get_edit_row(s, edit_id)
    family = family_of(s, edit.model_id)
    alias = s.scalars(select(db.Alias).filter_by(tenant=tenant, family=family, name=body.alias)).first()
    previous = alias.model_id if alias else None
    blocked = result["verdict"] == "fail"
    outcome = "refused" if blocked and not body.override_reason else "overridden" if blocked else "promoted"
    s.add(db.Promotion(tenant=tenant, family=family, alias=body.alias, edit_id=edit_id,
                       model_id=None if outcome == "refused" else edit.edited_model_id, previous_model_id=previous,
                       policy=result["policy"], verdict=result["verdict"], outcome=outcome,
                       override_reason=body.override_reason, actor=body.actor, gate=result))
    if outcome != "refused":
        if alias is None:
            alias = db.Alias(tenant=tenant, family=family, name=body.alias, model_id=edit.edited_model_id)
            s.add(alias)
        alias.model_id, alias.updated_at = edit.edited_model_id, db.utcnow()
    s.commit()
    if outcome == "refused":
        raise Problem(409, f"the gate fails for edit {edit_id}; not promoted to {body.alias!r} (give override_reason "
                           "to ship anyway; it is recorded)", field="edit_id", gate=result)
    return {"alias": body.alias, "family": family, "model_id": edit.edited_model_id, "previous_model_id": previous,
            "outcome": outcome, "gate": result}


@router.post("/edits/{edit_id}/revert")
def revert(edit_id: str, s: SessionDep, tenant: TenantDep, body: RevertRequest | None = None) -> dict:
    """Undo an edit: every alias of this tenant that points at the edited model goes back to the model it pointed at
    before this edit was promoted to it (the edit's parent when there is no such record), each move recorded as a
    promotion with outcome `reverted`. Idempotent."""
    body = body or RevertRequest()
    edit = get_edit_row(s, edit_id)
    require_succeeded(s, edit, "revert")
    family = family_of(s, edit.model_id)
    moved = s.scalars(select(db.Alias).filter_by(tenant=tenant, family=family, model_id=edit.edited_model_id)).all()
    targets = {}
    for alias in moved:
        promoted = s.scalars(select(db.Promotion).filter_by(tenant=tenant, family=family, alias=alias.name,
                                                            edit_id=edit_id, model_id=edit.edited_model_id)
                             .order_by(db.Promotion.id.desc())).first()
        target = promoted.previous_model_id if promoted and promoted.previous_model_id else edit.model_id
        s.add(db.Promotion(tenant=tenant, family=family, alias=alias.name, edit_id=edit_id, model_id=target,
                           previous_model_id=alias.model_id, policy={}, verdict="none", outcome="reverted",
                           override_reason=body.reason, actor=body.actor, gate={}))
        alias.model_id, alias.updated_at, targets[alias.name] = target, db.utcnow(), target
    edit.reverted_at = edit.reverted_at or db.utcnow()
    s.commit()
    return {"edit_id": edit_id, "model_id": edit.model_id, "reverted_model_id": edit.edited_model_id,
            "aliases": sorted(targets), "alias_targets": targets, "reverted_at": edit.reverted_at}


@router.get("/aliases/{name}")
def get_alias(name: str, s: SessionDep, tenant: TenantDep, family: str | None = None) -> dict:
    q = select(db.Alias).filter_by(tenant=tenant, name=name)
    rows = s.scalars(q.filter_by(family=family) if family else q).all()
    if not rows:
        raise Problem(404, f"no alias {name!r}" + (f" in family {family!r}" if family else ""), field="name")
    if len(rows) > 1:
        raise Problem(409, f"alias {name!r} exists in {len(rows)} model families; pass ?family=<root model id>",
                      field="family", families=sorted(r.family for r in rows))
    a = rows[0]
    history = s.scalars(select(db.Promotion).filter_by(tenant=tenant, family=a.family, alias=name)
                        .order_by(db.Promotion.id.desc())).all()
    return {"name": a.name, "family": a.family, "model_id": a.model_id, "updated_at": a.updated_at,
            "history": [{"edit_id": p.edit_id, "model_id": p.model_id, "previous_model_id": p.previous_model_id,
                         "verdict": p.verdict, "outcome": p.outcome, "override_reason": p.override_reason,
                         "actor": p.actor, "policy": p.policy, "at": p.created_at} for p in history]}


@router.get("/promotions")
def list_promotions(s: SessionDep, tenant: TenantDep, edit_id: str | None = None) -> dict:
    q = select(db.Promotion).filter_by(tenant=tenant).order_by(db.Promotion.id.desc())
    rows = s.scalars(q.filter_by(edit_id=edit_id) if edit_id else q).all()
    return {"promotions": [{"id": p.id, "alias": p.alias, "family": p.family, "edit_id": p.edit_id,
                            "model_id": p.model_id, "verdict": p.verdict, "outcome": p.outcome,
                            "override_reason": p.override_reason, "actor": p.actor, "at": p.created_at}
                           for p in rows]}
