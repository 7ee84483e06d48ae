"""Paired statistics and gate rules (pure Python)."""

import math

import pytest

from editaudit.service.gate import Rule, evaluate, load_policy, parse_assignment
from editaudit.worker.ml.audit.stats import mcnemar_exact, paired_accuracy_delta, wilson


def test_mcnemar_exact_matches_binomial_by_hand():
    # b=1, c=9: two-sided exact p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0


def test_identical_predictions_give_zero_delta_and_p_one():
    d = paired_accuracy_delta([True, False, True], [True, False, True])
    assert d["value"] == 0 and d["p_value"] == 1.0 and d["ci95"] == [0.0, 0.0]


def test_delta_interval_contains_value():
    base = [True] * 80 + [False] * 20
    cand = [True] * 70 + [False] * 30
    d = paired_accuracy_delta(base, cand)
    assert d["value"] == pytest.approx(-0.10)
    assert d["ci95"][0] < -0.10 < d["ci95"][1] and d["p_value"] < 0.01


def test_wilson_is_inside_unit_interval():
    lo, hi = wilson(10, 10)
    assert 0.6 < lo < 1.0 and hi == pytest.approx(1.0)


AUDIT = {"metrics": {"baseline": {"test.accuracy": 0.95, "edit.accuracy": 0.1},
                     "candidate": {"test.accuracy": 0.94, "edit.accuracy": 0.95}},
         "deltas": {"test.accuracy": {"value": -0.01, "p_value": 0.5}}}


def test_rules_pass_and_fail():
    verdict, rows = evaluate(AUDIT, [Rule("test.accuracy", "max_drop", 0.02), Rule("edit.accuracy", "min", 0.9)])
    assert verdict == "pass" and [r.outcome for r in rows] == ["pass", "pass"]
    verdict, rows = evaluate(AUDIT, [Rule("test.accuracy", "max_drop", 0.005)])
    assert verdict == "fail" and math.isclose(rows[0].delta, -0.01)


def test_missing_metric_fails_closed():
    verdict, rows = evaluate(AUDIT, [Rule("test.adv.pgd.accuracy", "max_drop", 1.0)])
    assert verdict == "fail" and "missing" in rows[0].reason


def test_parse_assignment_and_policy_file(tmp_path):
    assert parse_assignment("test.accuracy=0.01", "max_drop") == Rule("test.accuracy", "max_drop", 0.01)
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_assignment("test.accuracy", "min")
    p = tmp_path / "policy.yaml"
    p.write_text("version: 1\nrules:\n  - metric: test.accuracy\n    max_drop: 0.01\n  - {metric: edit.accuracy, min: 0.9}\n")
    assert load_policy(p) == [Rule("test.accuracy", "max_drop", 0.01), Rule("edit.accuracy", "min", 0.9)]
