"""The audit result's contract (editaudit.contracts.audit_result): the runner returns it with the baseline's
evaluation beside it, it is stored without the config, results stored in the shape of before still read (a real
one: tests/data/audit_result_v1.json), and the gate and the reports ask attacks for their facts by their own step
rules."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from editaudit.contracts.attacks import APGDParams, PGDParams, apgd_checkpoints, parse_attack
from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.audit_result import RESULT_SCHEMA_VERSION, AuditResult, Delta, UnrecognizedAttack
from editaudit.gate.evaluate import check_requirements, evaluate
from editaudit.gate.policy import AttackSelector, Policy, Requirements, builtin_policy

# What the job stored in audits.result before this contract (shape 1), produced by running editaudit at commit
# 4a0b9ff: a 1-LI edit of the digits model (alpha_curve, mli, a held-out locality set), PGD with an eps sweep and
# a two-step APGD, one corruption at two severities, 40 samples; with the copy of the config it used to carry.
V1 = json.loads((Path(__file__).parents[1] / "data" / "audit_result_v1.json").read_text())


# --- the runner --------------------------------------------------------------------------------------------------

def test_the_runner_returns_the_typed_result_and_the_baseline_beside_it(digits_wrapped):
    from editaudit.worker.ml.audit.runner import Evaluation, run_audit
    from editaudit.worker.ml.data import TensorDataset, digits_arrays

    te = digits_arrays("test")
    test = TensorDataset(torch.from_numpy(te.x), torch.from_numpy(te.y))
    cfg = {"attacks": [{"name": "fgsm", "eps": 0.05, "eps_sweep": [0.1]}], "max_samples": 40,
           "corruptions": {"names": ["contrast"], "severities": [1, 2]}}
    result, baseline, _ = run_audit(digits_wrapped, copy.deepcopy(digits_wrapped), {"test": test}, cfg)
    assert isinstance(result, AuditResult) and isinstance(baseline, Evaluation)
    assert result.schema_version == RESULT_SCHEMA_VERSION and result.config is not None
    assert result.config.batch_size, "the batch size the audit chose is the config that ran"
    assert result.config.model_copy(update={"batch_size": None}) == AuditConfig.model_validate(cfg)
    assert result.samples["test"].n == 40 and result.baseline_cached is False
    assert set(baseline.preds) >= {"test.accuracy", "test.adv.fgsm.accuracy"}, "the baseline's own outcomes"
    assert result.curves["test.adv.fgsm"].eps == [0.05, 0.1]
    stored = result.stored()
    assert "config" not in stored and "profile" not in stored and "baseline_eval" not in stored
    assert json.loads(json.dumps(stored)) == stored, "JSON as it is"
    again = AuditResult.from_stored(stored, cfg)
    assert again.stored() == stored and again.config.model_dump() == AuditConfig.model_validate(cfg).model_dump(), \
        "read back"
    cached, _, _ = run_audit(digits_wrapped, copy.deepcopy(digits_wrapped), {"test": test}, cfg, baseline_eval=baseline)
    assert cached.baseline_cached and cached.metrics == result.metrics


def test_the_delta_model_keeps_every_field_the_statistics_emit():
    from editaudit.worker.ml.audit.stats import aggregate_accuracy_delta, newcombe_difference, paired_accuracy_delta

    base, cand = [True, True, False, True] * 5, [True, False, False, True] * 5
    for d in (paired_accuracy_delta(base, cand), aggregate_accuracy_delta(base, cand, 10),
              newcombe_difference((0.5, 5, 10), (0.2, 2, 10)), newcombe_difference((None, 0, 0), (0.2, 2, 10))):
        dumped = {k: v for k, v in Delta.model_validate(d).model_dump(mode="json").items() if v is not None}
        assert dumped == json.loads(json.dumps({k: v for k, v in d.items() if v is not None})), d["method"]


# --- results stored before -------------------------------------------------------------------------------------

def test_a_result_of_the_shape_of_before_reads_with_the_rows_config():
    column = {**V1["config"], "max_samples": 40}
    copy_in_result = {**V1, "config": {**V1["config"], "max_samples": 999}}  # the column wins over the old copy
    r = AuditResult.from_stored(copy_in_result, column, {"tenant": "default", "name": "release", "version": 2})
    assert r.schema_version == RESULT_SCHEMA_VERSION and r.config.max_samples == 40 and r.profile.version == 2
    assert r.metrics.baseline == V1["metrics"]["baseline"] and r.metrics.candidate == V1["metrics"]["candidate"]
    assert r.deltas["test.adv.pgd.success_rate"].n == tuple(V1["deltas"]["test.adv.pgd.success_rate"]["n"])
    assert r.deltas["test.accuracy"].discordant.baseline_only == V1["deltas"]["test.accuracy"]["discordant"][
        "baseline_only"]
    held = r.samples["test"].held_out
    assert held is not None and held.roles == V1["samples"]["test"]["held_out"]["for"]
    assert r.mli.monotone == V1["mli"]["monotone"] and len(r.alpha_curve) == len(V1["alpha_curve"])
    assert r.curves["test.adv.pgd"].eps == V1["curves"]["test.adv.pgd"]["eps"]
    assert r.sections == {} and "config" not in r.stored()
    assert r.stored()["samples"]["test"]["held_out"]["for"] == held.roles, "served and stored as `for`, as before"
    plugin = AuditResult.from_stored({**V1, "saliency": {"map": [1, 2]}}, column)
    assert plugin.sections == {"saliency": {"map": [1, 2]}}, "a method's free-form section is kept"


def test_method_sections_are_typed_where_their_shape_is_fixed():
    r = AuditResult()
    r.add_sections({"alpha_curve": V1["alpha_curve"], "mli": V1["mli"], "saliency": [0.1], "unasked": 1},
                   ("alpha_curve", "mli", "saliency"))
    assert r.mli.alpha == V1["mli"]["alpha"] and r.alpha_curve[0].alpha == 0.0
    assert r.sections == {"saliency": [0.1]}, "free-form where the method's shape is its own; only what it declares"
    with pytest.raises(ValueError):
        AuditResult().add_sections({"mli": {"alpha": 0.5}}, ("mli",))  # a typed section must have its shape


def from_v1(**over) -> AuditResult:
    return AuditResult.from_stored(V1, {**V1["config"], **over})


def test_the_gate_and_the_reports_read_a_result_of_before():
    from editaudit.core.tables import audit_table
    from editaudit.service.schemas.audits import AuditOut
    from editaudit.service.services.reports import as_html, markdown, view

    r = from_v1()
    gate = evaluate(r, builtin_policy("default"), typos_are_usage=False)
    assert gate.verdict in {"pass", "warn", "fail"}
    req = next(row for row in gate.rules if row.rule.startswith("requires attack pgd"))
    assert req.outcome == "fail" and "pgd (pgd: Linf, eps 0.05, 3 steps, travel 2.5 x eps)" in req.reason, \
        "three steps are fewer than the default policy's ten; the attacks describe themselves"
    row = SimpleNamespace(id="a1", status="succeeded", edit_id="e1", config=V1["config"], profile=None,
                          versions={"torch": "2"}, created_at="2026-12-01T00:00:00Z", finished_at=None)
    out = AuditOut.of(row, r)
    md = markdown.render(view.build(out))
    assert "| clean accuracy (test) |" in md and "Attacks: pgd (pgd: Linf, eps 0.05, 3 steps" in md
    assert "apgd (apgd: Linf, eps 0.05, 2 steps, travel 4 x eps)" in md
    assert "<h3>Attacks</h3>" in as_html(view.build(out))
    assert "test.accuracy" in audit_table(out.model_dump(mode="json"), headline_only=True)


def test_an_attack_this_server_does_not_know_is_kept_and_matches_nothing():
    cfg = {**V1["config"], "attacks": [*V1["config"]["attacks"], {"id": "gone", "name": "gone", "eps": 0.3}]}
    r = AuditResult.from_stored(V1, cfg)
    gone = r.attacks()[-1]
    assert isinstance(gone, UnrecognizedAttack) and gone.describe() == "gone (gone: not recognised by this server)"
    assert r.config.model_dump(mode="json")["attacks"][-1] == {"id": "gone", "name": "gone", "seed": 0, "eps": 0.3}
    assert not AttackSelector(name="gone").matches(gone), "fail-closed: not even by its name"
    gate = evaluate(r, Policy.model_validate({"requires": {"attacks": [{"name": "gone"}]},
                                              "rules": [{"metric": "test.accuracy", "min": 0}]}))
    assert gate.verdict == "fail" and "gone (gone: not recognised by this server)" in gate.rules[0].reason


# --- attack facts --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, travel", [
    ({"name": "pgd", "eps": 0.03, "steps": 10}, 2.5),  # the default step size 2.5 eps / steps
    ({"name": "pgd", "eps": 0.03, "steps": 1}, 2.5),
    ({"name": "pgd", "eps": 0.03, "steps": 10, "step_size": 0.006}, 2.0),
    ({"name": "fgsm", "eps": 0.03}, 1.0),  # one step of eps
    ({"name": "apgd", "eps": 0.03, "steps": 1}, 2.0),  # ART's first step is 2 eps
    ({"name": "apgd", "eps": 0.03, "steps": 2}, 4.0),
    ({"name": "apgd", "eps": 0.03, "steps": 5}, 7.5),  # checkpoints 2, 3, 4: halved after steps 3, 4 and 5
    ({"name": "square", "eps": 0.03}, None), ({"name": "autoattack", "eps": 0.03}, None),
    ({"name": "cw"}, None), ({"name": "deepfool", "eps": 0.5}, None),
])
def test_each_attack_answers_its_travel_by_its_own_step_rule(raw, travel):
    got = parse_attack(raw).travel()
    assert got == travel if travel is None else math.isclose(got, travel)


def test_apgd_travel_follows_arts_schedule():
    assert apgd_checkpoints(100) == [0, 22, 41, 58, 70, 80, 87, 93, 99]  # ceil of ART's p_j * 100 (float sums)
    p = APGDParams(eps=0.03, steps=100)
    expected = 2 * (23 + 19 / 2 + 17 / 4 + 12 / 8 + 10 / 16 + 7 / 32 + 6 / 64 + 6 / 128 + 0 / 256)
    assert math.isclose(p.travel(), expected) and p.initial_step_size == 0.06


def test_apgd_step_rule_is_the_one_the_worker_gives_art(digits_wrapped):
    """The contract's APGD step rule (initial step 2 eps) is what the worker passes to ART."""
    from editaudit.worker.ml.audit.attacks import make_attack
    from editaudit.worker.ml.audit.attacks.art_attacks import classifier

    p = APGDParams(eps=0.03, steps=7)
    art = make_attack(p).build(classifier(digits_wrapped, torch.zeros(1, 1, 8, 8), 10), 4)
    assert math.isclose(art.eps_step, p.initial_step_size) and art.max_iter == p.iterations() and art.eps == p.eps


def _audit_with(*attacks) -> dict:
    return {"config": {"attacks": list(attacks)}, "samples": {"test": {"n": 400, "of": 400}}}


def test_a_min_travel_policy_judges_apgd_by_its_own_step_rule_and_pgd_by_its_own():
    """Before, the gate gave every attack PGD's default step (2.5 eps / steps), so every APGD had travel 2.5, a
    one-step APGD included. Now each is judged by its own rule."""
    needs = lambda sel, *attacks: [r.outcome for r in check_requirements(  # noqa: E731
        _audit_with(*attacks), Requirements(attacks=[sel]))]
    reach = {"name": "apgd", "min_travel": 2.5}
    assert needs(reach, {"name": "apgd", "eps": 0.03, "steps": 1}) == ["fail"], "one step of 2 eps: travel 2"
    assert needs(reach, {"name": "apgd", "eps": 0.03, "steps": 2}) == ["pass"], "two steps: travel 4"
    far = {"name": "apgd", "min_travel": 20}
    assert needs(far, {"name": "apgd", "eps": 0.03, "steps": 100}) == ["pass"], "was 2.5 < 20: refused"
    pgd = {"name": "pgd", "min_travel": 1}
    assert needs(pgd, {"name": "pgd", "eps": 0.03, "steps": 10, "step_size": 1e-4}) == ["fail"], "0.033 radii"
    assert needs(pgd, {"name": "pgd", "eps": 0.03, "steps": 10}) == ["pass"]
    assert needs({"name": "square", "min_travel": 0.1}, {"name": "square", "eps": 0.03}) == ["fail"], \
        "no step rule: undefined travel does not pretend to meet a floor"
    assert needs({"name": "square", "min_eps": 0.03}, {"name": "square", "eps": 0.03}) == ["pass"]


def test_selectors_read_the_parsed_params_norm_steps_and_restarts():
    sel = AttackSelector(name="cw", norm="2", min_steps=10)
    assert sel.matches(parse_attack({"name": "cw", "steps": 10})), "CW's norm is its class's, not a stored key"
    assert not AttackSelector(name="fgsm", min_steps=2).matches(parse_attack({"name": "fgsm"}))
    assert AttackSelector(name="fgsm", min_steps=1, min_travel=1).matches(parse_attack({"name": "fgsm"}))
    assert AttackSelector(name="pgd", min_restarts=3).matches(PGDParams(restarts=3))
    assert not AttackSelector(name="pgd", min_restarts=3).matches(PGDParams())
    rule = Policy.model_validate({"rules": [{"attack": {"name": "apgd", "min_travel": 3}, "max_drop": 0.5}]})
    audit = {**_audit_with({"id": "a1", "name": "apgd", "steps": 1}, {"id": "a2", "name": "apgd", "steps": 2}),
             "metrics": {"baseline": {"test.adv.a1.accuracy": 0.5, "test.adv.a2.accuracy": 0.5},
                         "candidate": {"test.adv.a1.accuracy": 0.5, "test.adv.a2.accuracy": 0.5}}}
    assert [r.metric for r in evaluate(audit, rule).rules] == ["test.adv.a2.accuracy"]
