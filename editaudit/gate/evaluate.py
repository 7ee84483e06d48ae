"""Evaluate a policy against an audit -> pass | warn | fail, one row per (rule, metric). Pure functions.

Fail-closed: a metric a rule names (or a wildcard that matches nothing) that the audit lacks counts as a violation
unless the rule says `on_missing: warn | ignore`. `require_significance: 0.05` lets a drop block only when the
audit's paired test (exact McNemar) rejects at that level.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass

from editaudit.gate.policy import Policy, Rule


@dataclass
class RuleOutcome:
    rule: str
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    threshold: float
    p_value: float | None
    outcome: str  # pass | warn | fail
    reason: str


@dataclass
class GateResult:
    verdict: str  # pass | warn | fail
    rules: list[RuleOutcome]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "rules": [asdict(r) for r in self.rules]}


def _violation(rule: Rule, b: float | None, c: float) -> tuple[bool, str]:
    t = rule.threshold
    if rule.kind == "min":
        return c < t, f"candidate {c:.4f} {'<' if c < t else '>='} {t:g}"
    if rule.kind == "max":
        return c > t, f"candidate {c:.4f} {'>' if c > t else '<='} {t:g}"
    drop = b - c
    if rule.kind == "max_relative_drop":
        drop = drop / b if b > 0 else (0.0 if c >= b else float("inf"))
    bad = drop > t + 1e-12
    return bad, f"{'relative ' if rule.kind == 'max_relative_drop' else ''}drop {drop:+.4f} {'>' if bad else '<='} {t:g}"


def evaluate(audit: dict, policy: Policy) -> GateResult:
    base, cand = audit["metrics"].get("baseline", {}), audit["metrics"].get("candidate", {})
    deltas = audit.get("deltas", {})
    names = sorted(set(base) | set(cand))
    rows: list[RuleOutcome] = []
    for rule in policy.rules:
        on_missing = rule.on_missing or policy.on_missing
        matches = [n for n in names if fnmatch.fnmatchcase(n, rule.metric)] if any(
            ch in rule.metric for ch in "*?[") else [rule.metric]
        if not matches:
            matches = [rule.metric]
        for metric in matches:
            b, c = base.get(metric), cand.get(metric)
            p = (deltas.get(metric) or {}).get("p_value")
            delta = None if b is None or c is None else c - b
            needs_base = rule.kind in ("max_drop", "max_relative_drop")
            if c is None or (needs_base and b is None):
                if on_missing == "ignore":
                    continue
                outcome = "fail" if on_missing == "fail" else "warn"
                rows.append(RuleOutcome(rule.describe(), metric, b, c, delta, rule.threshold, p, outcome,
                                        "metric missing from the audit" + (" (fail-closed)" if outcome == "fail" else "")))
                continue
            bad, reason = _violation(rule, b, c)
            if bad and needs_base and rule.require_significance is not None and p is not None \
                    and p >= rule.require_significance:
                bad, reason = False, f"{reason}, but not significant (p={p:.3g} >= {rule.require_significance:g})"
            outcome = "pass" if not bad else rule.severity
            rows.append(RuleOutcome(rule.describe(), metric, b, c, delta, rule.threshold, p, outcome, reason))
    outcomes = {r.outcome for r in rows}
    verdict = "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"
    return GateResult(verdict, rows)
