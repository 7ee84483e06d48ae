"""Paired statistics and gate rules (pure Python)."""

import math

import pytest

from editaudit.contracts.audit import CORRUPTION_NAMES
from editaudit.contracts.paired import drop_upper_bound
from editaudit.gate.evaluate import GateUsageError, evaluate
from editaudit.gate.policy import Policy, Rule, builtin_policy, load_policy, parse_assignment
from editaudit.gate.render import as_junit, as_markdown
from editaudit.worker.ml.audit.stats import mcnemar_exact, paired_accuracy_delta, wilson


def test_mcnemar_exact_matches_binomial_by_hand():
    # b=1, c=9: two-sided exact p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0


def test_mcnemar_exact_for_many_discordant_pairs():
    # thousands of discordant pairs (corruption means concatenate samples): no overflow, matches exact integers
    exact = 2 * sum(math.comb(3000, i) for i in range(1401)) / (1 << 3000)
    assert mcnemar_exact(1400, 1600) == pytest.approx(exact, rel=1e-9)
    assert mcnemar_exact(100, 5000) == 0.0 or mcnemar_exact(100, 5000) < 1e-300


def test_identical_predictions_give_zero_delta_and_p_one():
    d = paired_accuracy_delta([True, False, True], [True, False, True])
    assert d["value"] == 0 and d["p_value"] == 1.0
    assert d["ci95"][0] == pytest.approx(-d["ci95"][1]) and d["ci95"][1] > 0.5, "3 samples show little (not [0, 0])"


def test_delta_interval_contains_value():
    base = [True] * 80 + [False] * 20
    cand = [True] * 70 + [False] * 30
    d = paired_accuracy_delta(base, cand)
    assert d["value"] == pytest.approx(-0.10)
    assert d["ci95"][0] < -0.10 < d["ci95"][1] and d["p_value"] < 0.01


def test_wilson_is_inside_unit_interval():
    lo, hi = wilson(10, 10)
    assert 0.6 < lo < 1.0 and hi == 1.0 and wilson(0, 5)[0] == 0.0


AUDIT = {"metrics": {"baseline": {"test.accuracy": 0.95, "edit.accuracy": 0.1, "test.adv.pgd.accuracy": 0.50,
                                  "test.adv.fgsm.accuracy": 0.60},
                     "candidate": {"test.accuracy": 0.94, "edit.accuracy": 0.95, "test.adv.pgd.accuracy": 0.45,
                                   "test.adv.fgsm.accuracy": 0.60}},
         "deltas": {"test.accuracy": {"value": -0.01, "p_value": 0.5, "n": 1000,
                                      "discordant": {"baseline_only": 15, "candidate_only": 5}},
                    "test.adv.pgd.accuracy": {"value": -0.05, "p_value": 0.001, "n": 1000,
                                              "discordant": {"baseline_only": 60, "candidate_only": 10}},
                    "test.adv.fgsm.accuracy": {"value": 0.0, "p_value": 1.0, "n": 1000,
                                               "discordant": {"baseline_only": 0, "candidate_only": 0}}},
         "config": {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.03, "steps": 10, "restarts": 1},
                                {"id": "fgsm", "name": "fgsm", "norm": "inf", "eps": 0.03}]},
         "samples": {"test": {"n": 1000, "of": 1000}, "edit": {"n": 8, "of": 8}}}


def policy(*rules, **kw) -> Policy:
    return Policy(rules=[Rule(**r) for r in rules], **kw)


def test_rules_pass_and_fail():
    r = evaluate(AUDIT, policy({"metric": "test.accuracy", "max_drop": 0.02}, {"metric": "edit.accuracy", "min": 0.9}))
    assert r.verdict == "pass" and [x.outcome for x in r.rules] == ["pass", "pass"]
    r = evaluate(AUDIT, policy({"metric": "test.accuracy", "max_drop": 0.005}))
    assert r.verdict == "fail" and math.isclose(r.rules[0].delta, -0.01)


def test_missing_metric_fails_closed_unless_told_otherwise():
    r = evaluate(AUDIT, policy({"metric": "generalization.accuracy", "max_drop": 1.0}))
    assert r.verdict == "fail" and "missing" in r.rules[0].reason
    r = evaluate(AUDIT, policy({"metric": "test.corruption.*.*.accuracy", "max_drop": 0.03}))
    assert r.verdict == "fail", "a wildcard matching nothing is missing too"
    r = evaluate(AUDIT, policy({"metric": "generalization.accuracy", "max_drop": 1.0, "on_missing": "warn"}))
    assert r.verdict == "warn"
    nothing = evaluate(AUDIT, policy({"metric": "edit.agreement", "min": 0, "on_missing": "ignore"}))
    assert nothing.verdict == "fail" and "no rule applied" in nothing.rules[0].reason, "nothing shown, nothing passes"
    no_attacks = {**AUDIT, "config": {"attacks": []}}
    r = evaluate(no_attacks, policy({"metric": "test.adv.nope.accuracy", "max_drop": 1.0}))
    assert r.verdict == "fail" and "missing" in r.rules[0].reason, "an audit without attacks is blocked, not a typo"


def test_an_unknown_attack_id_is_a_usage_error_with_the_ids_that_ran():
    with pytest.raises(GateUsageError) as e:
        evaluate(AUDIT, policy({"metric": "test.adv.pgdd.accuracy", "max_drop": 0.03}))
    assert e.value.field == "policy.rules.0.metric" and e.value.closest[0] == "test.adv.pgd.accuracy"
    # under a named policy the audit simply does not meet it (blocked); a rule that tolerates missing metrics too
    named = evaluate(AUDIT, policy({"metric": "test.adv.pgdd.accuracy", "max_drop": 0.03}), typos_are_usage=False)
    assert named.verdict == "fail" and "missing" in named.rules[0].reason
    tolerant = policy({"metric": "test.adv.pgdd.accuracy", "max_drop": 0.03, "on_missing": "warn"})
    assert evaluate(AUDIT, tolerant).verdict == "warn"


def test_corruption_aggregates_count_each_image_once():
    """75 conditions x 100 images: the aggregate's 7500 outcomes are not 7500 independent pairs."""
    audit = {"metrics": {"baseline": {"test.corruption.mean.accuracy": 0.5},
                         "candidate": {"test.corruption.mean.accuracy": 0.49}},
             "deltas": {"test.corruption.mean.accuracy": {"n": 7500, "p_value": 0.0,
                                                         "discordant": {"baseline_only": 75, "candidate_only": 0}}},
             "samples": {"test": {"n": 100, "of": 100}}}
    r = evaluate(audit, policy({"metric": "test.corruption.mean.accuracy", "max_drop": 0.02})).rules[0]
    assert r.outcome == "fail" and r.n == 100 and math.isclose(r.bound, drop_upper_bound(1, 0, 100))
    assert drop_upper_bound(75, 0, 7500) < 0.02, "counted as independent pairs it would have passed"


def test_degenerate_values_never_pass():
    nan = {**AUDIT, "metrics": {"baseline": {"test.accuracy": float("nan")}, "candidate": {"test.accuracy": 0.9}}}
    for rule in ({"metric": "test.accuracy", "max_drop": 0.01},
                 {"metric": "test.accuracy", "max_drop": 0.01, "decision": "significant_drop"}):
        assert evaluate(nan, policy(rule)).verdict == "fail", rule
    zero = {"metrics": {"baseline": {"test.accuracy": 0.0}, "candidate": {"test.accuracy": 0.5}}, "deltas": {}}
    assert evaluate(zero, policy({"metric": "test.accuracy", "max_relative_drop": 0.1})).verdict == "pass"
    with pytest.raises(ValueError):
        Rule(metric="test.accuracy", max_drop=0.01, alpha=1e-17)


def test_a_metric_outside_the_grammar_is_refused_with_suggestions():
    with pytest.raises(ValueError, match="did you mean test.accuracy"):
        Rule(metric="test.acc", max_drop=0.01)
    with pytest.raises(ValueError, match="not a metric name"):
        parse_assignment("tset.accuracy=0.01", "max_drop")


def test_warn_severity_does_not_block():
    r = evaluate(AUDIT, policy({"metric": "test.accuracy", "max_drop": 0.001, "severity": "warn"}))
    assert r.verdict == "warn" and r.rules[0].outcome == "warn"


def test_significance_lets_a_noisy_drop_pass_but_not_a_real_one():
    noisy = {"metric": "test.accuracy", "max_drop": 0.005}
    assert evaluate(AUDIT, policy(noisy)).verdict == "fail"
    assert evaluate(AUDIT, policy({**noisy, "require_significance": 0.05})).verdict == "pass"
    real = {"metric": "test.adv.pgd.accuracy", "max_drop": 0.01, "require_significance": True}
    assert evaluate(AUDIT, policy(real)).verdict == "fail"


def test_wildcards_expand_over_metric_names():
    r = evaluate(AUDIT, policy({"metric": "test.adv.*.accuracy", "max_drop": 0.03}))
    assert {x.metric: x.outcome for x in r.rules} == {"test.adv.fgsm.accuracy": "pass", "test.adv.pgd.accuracy": "fail"}


def test_relative_drop():
    r = evaluate(AUDIT, policy({"metric": "test.adv.pgd.accuracy", "max_relative_drop": 0.2}))
    assert r.verdict == "pass" and "relative drop +0.1000" in r.rules[0].reason
    assert math.isclose(r.rules[0].bound, drop_upper_bound(60, 10, 1000) / 0.5)


def test_rule_needs_exactly_one_kind():
    with pytest.raises(ValueError, match="exactly one"):
        Rule(metric="test.accuracy", min=0.1, max_drop=0.1)
    with pytest.raises(ValueError):
        Policy(rules=[])


def test_parse_assignment_and_policy_file(tmp_path):
    assert parse_assignment("test.accuracy=0.01", "max_drop") == Rule(metric="test.accuracy", max_drop=0.01)
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_assignment("test.accuracy", "min")
    p = tmp_path / "policy.yaml"
    p.write_text("version: 1\nrules:\n  - metric: test.accuracy\n    max_drop: 0.01\n"
                 "  - {metric: edit.accuracy, min: 0.9}\n")
    assert [r.kind for r in load_policy(p).rules] == ["max_drop", "min"]
    p.write_text("version: 2\nrules: [{metric: test.accuracy, min: 1}]\n")
    with pytest.raises(ValueError, match="version"):
        load_policy(p)


def test_default_policy_ships_and_parses():
    d = builtin_policy("default")
    assert d is not None and any(r.metric == "test.accuracy" for r in d.rules)
    assert builtin_policy("nope") is None


def test_junit_is_valid_with_one_testcase_per_rule():
    from xml.etree import ElementTree as ET

    r = evaluate(AUDIT, policy({"metric": "test.adv.*.accuracy", "max_drop": 0.03},
                               {"metric": "test.accuracy", "max_drop": 0.001, "severity": "warn"}))
    root = ET.fromstring(as_junit(r))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 3 and root.get("tests") == "3" and root.find("testsuite").get("failures") == "1"
    assert sum(c.find("failure") is not None for c in cases) == 1
    assert "n=1000" in root.find("./testsuite/testcase/failure").text


def test_markdown_is_a_short_table():
    md = as_markdown(evaluate(AUDIT, policy({"metric": "test.accuracy", "max_drop": 0.02})))
    assert md.startswith("### editaudit gate: ✅ pass") and "| `test.accuracy` |" in md and len(md) < 1000


def test_json_safe_and_undefined_ce():
    from editaudit.worker.jobs.persist import json_safe

    assert json_safe({"a": [1.0, float("inf"), float("nan")], "b": "x"}) == {"a": [1.0, None, None], "b": "x"}


def test_requirements_read_what_the_server_recorded():
    from editaudit.gate.evaluate import check_requirements
    from editaudit.gate.policy import Requirements

    audit = {**AUDIT, "profile": {"tenant": "team-a", "name": "release", "version": 3, "sha256": "a" * 64},
             "datasets": {"test": {"ref": "builtin:digits-test", "sha256": None}},
             "config": {"attacks": [{"id": "x", "name": "pgd", "norm": "inf", "eps": 0.03, "steps": 10,
                                     "step_size": 1e-12}], "corruptions": {"names": list(CORRUPTION_NAMES),
                                                                           "severities": [1, 2, 3, 4, 5]}},
             "samples": {"test": {"n": 30, "of": 450}}}
    outcome = lambda req, tenant=None: [r.outcome for r in check_requirements(audit, Requirements(**req), tenant)]  # noqa: E731
    assert outcome({"profile": {"name": "release", "min_version": 2}}, "team-a") == ["pass"]
    assert outcome({"profile": {"name": "release", "min_version": 2}}, "team-b") == ["fail"], "another tenant's"
    assert outcome({"profile": {"name": "release", "sha256": "b" * 64}}, "team-a") == ["fail"], "pinned content"
    assert outcome({"attacks": [{"name": "pgd", "min_steps": 10}]}) == ["pass"]
    assert outcome({"attacks": [{"name": "pgd", "min_steps": 10, "min_travel": 1}]}) == ["fail"], "1e-12 steps"
    assert outcome({"corruptions": {"names": "all"}}) == ["pass"], "all 15 listed is all"
    assert outcome({"full_splits": ["test"]}) == ["fail"] and outcome({"min_samples": {"test": 30}}) == ["pass"]
    assert outcome({"datasets": {"test": "builtin:digits-test"}}) == ["pass"]
    assert outcome({"datasets": {"test": "c" * 64}}) == ["fail"]


def test_unknown_verdicts_and_ids_that_impersonate_attacks():
    from editaudit.contracts.audit import AuditConfig

    with pytest.raises(ValueError, match="name of another attack"):
        AuditConfig.model_validate({"attacks": [{"id": "pgd", "name": "fgsm"}]})
    AuditConfig.model_validate({"attacks": [{"id": "pgd_strong", "name": "pgd"}]})
