"""Policies, the gate and promotions: resolving a policy reference, gating an edit's finished audit, moving and
reverting aliases with their audit trail. The decision itself is editaudit.gate's (pure functions)."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from editaudit.contracts import metrics
from editaudit.contracts.datasets import is_builtin
from editaudit.contracts.statuses import PromotionOutcome, Status, Verdict
from editaudit.core import db, repo, webhooks
from editaudit.gate.evaluate import GateUsageError, evaluate
from editaudit.gate.policy import Policy, builtin_policy
from editaudit.service.errors import Problem, validation_problem
from editaudit.service.services.audits import audit_result


def validate_policy(doc: dict, field: str) -> Policy:
    try:
        return Policy.model_validate(doc)
    except ValidationError as e:
        raise validation_problem(e, field) from None


def resolve_policy(s: Session, ref: str | dict) -> tuple[Policy, dict]:
    """(policy, reference recorded with a verdict): a built-in policy (its name is reserved: no tenant can shadow
    it), the session tenant's named policy, or an inline document."""
    if isinstance(ref, dict):
        return validate_policy(ref, "policy"), {"inline": ref}
    builtin = builtin_policy(ref)
    if builtin is not None:
        return builtin, {"name": ref, "version": "builtin"}
    row = repo.latest_version(s, db.PolicyVersion, ref)
    if row is not None:
        return Policy.model_validate(row.document), {"name": ref, "version": row.version, "tenant": row.tenant}
    raise Problem(404, f"no policy named {ref!r} for tenant {db.session_tenant(s)!r} (built-in: default)",
                  field="policy")


def get_single_edit(s: Session, edit_id: str) -> db.Edit:
    """An edit that is not a layer sweep: a sweep has one edited model per layer, so weights, deltas, gates and
    promotions belong to its sub-edits (409 listing them)."""
    edit = repo.get_or_404(s, db.Edit, edit_id)
    if edit.sweep:
        subs = repo.sub_edits(s, edit)
        raise Problem(409, f"edit {edit.id} is a layer sweep: use one of its sub-edits {[e.id for e in subs]}",
                      field="edit_id", sub_edits=[{"layer": e.layers[0], "id": e.id} for e in subs])
    return edit


def get_succeeded_edit(s: Session, edit_id: str, what: str) -> db.Edit:
    """`what` (weights, delta, revert) needs a single edit that has succeeded: else 409."""
    edit = get_single_edit(s, edit_id)
    if edit.status != Status.succeeded:
        raise Problem(409, f"edit {edit.id} is {edit.status}: {what} needs an edit that has succeeded",
                      field="edit_id")
    return edit


def gate_for(s: Session, edit_id: str, policy_ref: str | dict) -> dict:
    edit = get_single_edit(s, edit_id)
    policy, ref = resolve_policy(s, policy_ref)
    audit = repo.audit_of(s, edit_id)
    if audit.status != Status.succeeded:
        raise Problem(409, f"the audit of edit {edit_id} is {audit.status}; a gate needs a finished audit",
                      field="edit_id", audit_status=audit.status, edit_status=edit.status)
    try:  # an inline policy is the caller's own: an attack id its audit never ran is a typo, not a block
        result = evaluate(audit_result(audit), policy, tenant=edit.tenant, typos_are_usage="inline" in ref,
                          datasets=edit_datasets(s, edit))
    except GateUsageError as e:  # a typo in the policy, not a regression: the CLI exits 4 (usage)
        raise Problem(422, e.detail, field=e.field, closest=e.closest) from None
    return {"edit_id": edit_id, "audit_id": audit.id, "policy": ref, **result.as_dict()}


def evaluate_gate(s: Session, edit_id: str, policy_ref: str | dict) -> dict:
    """gate_for, recorded as a `gate.evaluated` webhook event (the gate routes; a JUnit report renders the gate
    without being one)."""
    result = gate_for(s, edit_id, policy_ref)
    webhooks.gate_evaluated(s, repo.get_or_404(s, db.Edit, edit_id), result)  # gate_for found it
    s.commit()
    return result


def edit_datasets(s: Session, edit: db.Edit) -> dict[str, dict]:
    """split -> {ref, sha256} of the datasets the edit was audited on (what `requires.datasets` checks)."""
    out = {}
    for split in metrics.SPLITS:
        ref = getattr(edit, f"{split}_set")
        if ref:
            row = None if is_builtin(ref) else s.get(db.Dataset, ref)
            out[split] = {"ref": ref, "sha256": row.sha256 if row else None}
    return out


def locked_alias(s: Session, family: str, name: str) -> db.Alias | None:
    """The family's alias `name` (None before its first promotion), read under its lock (repo.serialise), held
    until the transaction ends: promotions and reverts of one alias run one at a time, each reading what the one
    before it committed, so every promotion row's previous_model_id is what the alias served just before it and
    the rows' ids follow the order the alias moved in."""
    repo.serialise(s, db.Alias, family, name)
    return s.scalars(select(db.Alias).filter_by(family=family, name=name)
                     .execution_options(populate_existing=True)).first()


def promote(s: Session, edit_id: str, alias_name: str, policy_ref: str | dict,
            override_reason: str | None, actor: str | None) -> dict:
    """Move the family's alias to the edit's model when the gate passes, or with a recorded override; a refusal is
    recorded too (then 409 with the gate's result). The gate is evaluated first; what the alias serves is read
    under the alias's lock, with the record and the move in the same transaction."""
    result = gate_for(s, edit_id, policy_ref)
    edit = repo.get_or_404(s, db.Edit, edit_id)
    family = repo.family_of(s, edit.model_id)
    alias = locked_alias(s, family, alias_name)
    previous = alias.model_id if alias else None
    if previous is not None and previous != edit.model_id:  # audited against a model the alias no longer serves
        result = {**result, "verdict": Verdict.fail, "notes": [*result.get("notes", []), (
            f"the edit was audited against model {edit.model_id}, but {alias_name!r} serves {previous}: its numbers "
            f"say nothing about replacing {previous} (edit {previous} instead, or give override_reason)")]}
    blocked = result["verdict"] == Verdict.fail
    outcome = PromotionOutcome.refused if blocked and not override_reason else \
        PromotionOutcome.overridden if blocked else PromotionOutcome.promoted
    s.add(db.Promotion(family=family, alias=alias_name, edit_id=edit_id,
                       model_id=None if outcome == PromotionOutcome.refused else edit.edited_model_id,
                       previous_model_id=previous, policy=result["policy"], verdict=result["verdict"],
                       outcome=outcome, override_reason=override_reason, actor=actor, gate=result))
    webhooks.gate_evaluated(s, edit, result, promotion={"alias": alias_name, "outcome": str(outcome)})
    if outcome != PromotionOutcome.refused:
        assert edit.edited_model_id is not None  # gate_for gates a finished audit: its edit made a model
        if alias is None:
            alias = db.Alias(family=family, name=alias_name, model_id=edit.edited_model_id)
            s.add(alias)
        alias.model_id, alias.updated_at = edit.edited_model_id, db.utcnow()
    s.commit()
    if outcome == PromotionOutcome.refused:
        raise Problem(409, f"the gate fails for edit {edit_id}; not promoted to {alias_name!r} (give override_reason "
                           "to ship anyway; it is recorded)" + "".join(f"; {n}" for n in result.get("notes", [])
                                                                      if "audited against" in n),
                      field="edit_id", gate=result)
    return {"alias": alias_name, "family": family, "model_id": edit.edited_model_id, "previous_model_id": previous,
            "outcome": outcome, "gate": result}


def revert(s: Session, edit_id: str, reason: str | None, actor: str | None) -> dict:
    """Undo an edit: every alias of the session's tenant that points at the edited model goes back to the model it
    pointed at before this edit was promoted to it (the edit's parent when there is no such record), each move
    recorded as a promotion with outcome `reverted`. Idempotent. Each alias is moved under its lock (taken in name
    order, as promotions take theirs: no deadlock), re-read there: one a promotion moved meanwhile stays put."""
    edit = get_succeeded_edit(s, edit_id, "revert")
    family = repo.family_of(s, edit.model_id)
    names = sorted(s.scalars(select(db.Alias.name).filter_by(family=family, model_id=edit.edited_model_id)).all())
    moved = [a for a in (locked_alias(s, family, name) for name in names)
             if a is not None and a.model_id == edit.edited_model_id]
    targets = {}
    for alias in moved:
        promoted = s.scalars(select(db.Promotion).filter_by(family=family, alias=alias.name,
                                                            edit_id=edit_id, model_id=edit.edited_model_id)
                             .order_by(db.Promotion.id.desc())).first()
        target = promoted.previous_model_id if promoted and promoted.previous_model_id else edit.model_id
        s.add(db.Promotion(family=family, alias=alias.name, edit_id=edit_id, model_id=target,
                           previous_model_id=alias.model_id, policy={}, verdict=Verdict.none,
                           outcome=PromotionOutcome.reverted, override_reason=reason, actor=actor, gate={}))
        alias.model_id, alias.updated_at, targets[alias.name] = target, db.utcnow(), target
    edit.reverted_at = edit.reverted_at or db.utcnow()
    s.commit()
    return {"edit_id": edit_id, "model_id": edit.model_id, "reverted_model_id": edit.edited_model_id,
            "aliases": sorted(targets), "alias_targets": targets, "reverted_at": edit.reverted_at}
