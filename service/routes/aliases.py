"""Aliases of a model family and their audit trail: `/edits/{id}/promote`, `/edits/{id}/revert`, `/aliases/{name}`,
`/promotions`."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from editaudit.contracts.scopes import Scope, grants
from editaudit.core import db
from editaudit.service.deps import PrincipalDep, SessionDep
from editaudit.service.errors import Problem
from editaudit.service.openapi import op
from editaudit.service.schemas.aliases import (
    AliasEvent,
    AliasOut,
    PromoteOut,
    PromoteRequest,
    PromotionOut,
    PromotionsOut,
    RevertOut,
    RevertRequest,
)
from editaudit.service.services import gating

router = APIRouter(tags=["aliases"])


@router.post("/edits/{edit_id}/promote", response_model=PromoteOut,
             **op("promote_edit", Scope.promote, 404, 409))
def promote(edit_id: str, body: PromoteRequest, s: SessionDep, caller: PrincipalDep):
    """Move the alias of the model family only when the gate passes, or with a recorded override reason (an
    `admin` key's: a CI key with `promote` cannot ship what its gate failed); the actor recorded is the key's name."""
    if body.override_reason is not None and not grants(caller.scopes, Scope.admin):
        raise Problem(403, "overriding the gate needs a key with the admin scope", field="override_reason",
                      required_scope=Scope.admin.value)
    return gating.promote(s, edit_id, body.alias, body.policy, body.override_reason, caller.actor)


@router.post("/edits/{edit_id}/revert", response_model=RevertOut, **op("revert_edit", Scope.promote, 404, 409))
def revert(edit_id: str, s: SessionDep, caller: PrincipalDep, body: RevertRequest | None = None):
    body = body or RevertRequest()
    return gating.revert(s, edit_id, body.reason, caller.actor)


@router.get("/aliases/{name}", response_model=AliasOut, **op("get_alias", Scope.audits_read, 404, 409))
def get_alias(name: str, s: SessionDep, family: str | None = None):
    q = select(db.Alias).filter_by(name=name)
    rows = s.scalars(q.filter_by(family=family) if family else q).all()
    if not rows:
        raise Problem(404, f"no alias {name!r}" + (f" in family {family!r}" if family else ""), field="name")
    if len(rows) > 1:
        raise Problem(409, f"alias {name!r} exists in {len(rows)} model families; pass ?family=<root model id>",
                      field="family", families=sorted(r.family for r in rows))
    a = rows[0]
    history = s.scalars(select(db.Promotion).filter_by(family=a.family, alias=name)
                        .order_by(db.Promotion.id.desc())).all()
    return AliasOut(name=a.name, family=a.family, model_id=a.model_id, updated_at=a.updated_at, history=[
        AliasEvent(edit_id=p.edit_id, model_id=p.model_id, previous_model_id=p.previous_model_id, verdict=p.verdict,
                   outcome=p.outcome, override_reason=p.override_reason, actor=p.actor, policy=p.policy,
                   at=p.created_at) for p in history])


@router.get("/promotions", response_model=PromotionsOut, **op("list_promotions", Scope.audits_read))
def list_promotions(s: SessionDep, edit_id: str | None = None):
    q = select(db.Promotion).order_by(db.Promotion.id.desc())
    rows = s.scalars(q.filter_by(edit_id=edit_id) if edit_id else q).all()
    return PromotionsOut(promotions=[
        PromotionOut(id=p.id, alias=p.alias, family=p.family, edit_id=p.edit_id, model_id=p.model_id,
                     verdict=p.verdict, outcome=p.outcome, override_reason=p.override_reason, actor=p.actor,
                     at=p.created_at) for p in rows])
