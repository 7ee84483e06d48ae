"""Deployment gate: evaluate rules on an audit's metrics. Pure functions; the CLI and API call them.

Fail-closed: a rule whose metric the audit lacks blocks. Rules:
  min       candidate >= threshold
  max       candidate <= threshold
  max_drop  baseline - candidate <= threshold   (absolute, e.g. 0.01 = one percentage point)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

KINDS = ("min", "max", "max_drop")


@dataclass(frozen=True)
class Rule:
    metric: str
    kind: str
    threshold: float

    def describe(self) -> str:
        return f"{self.kind} {self.threshold:g}"


@dataclass
class RuleOutcome:
    rule: str
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    threshold: float
    p_value: float | None
    outcome: str  # pass | fail
    reason: str


def parse_assignment(text: str, kind: str) -> Rule:
    """`test.accuracy=0.01` -> Rule(test.accuracy, kind, 0.01); ValueError with a usable message otherwise."""
    metric, sep, value = text.partition("=")
    if not sep or not metric.strip():
        raise ValueError(f"--{kind.replace('_', '-')} expects METRIC=VALUE, got {text!r}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"--{kind.replace('_', '-')} {text!r}: {value!r} is not a number") from None
    return Rule(metric.strip(), kind, threshold)


def load_policy(path: Path) -> list[Rule]:
    """A policy file (YAML or JSON): {"version": 1, "rules": [{"metric": M, "min"|"max"|"max_drop": V}, ...]}."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ValueError(f"{path}: a policy is a mapping with a `rules` list")
    if doc.get("version", 1) != 1:
        raise ValueError(f"{path}: unsupported policy version {doc.get('version')!r} (this editaudit reads 1)")
    rules = []
    for i, r in enumerate(doc["rules"]):
        kinds = [k for k in KINDS if k in (r or {})]
        if not isinstance(r, dict) or "metric" not in r or len(kinds) != 1:
            raise ValueError(f"{path}: rules[{i}] needs `metric` and exactly one of {list(KINDS)}")
        rules.append(Rule(str(r["metric"]), kinds[0], float(r[kinds[0]])))
    return rules


def evaluate(audit: dict, rules: list[Rule]) -> tuple[str, list[RuleOutcome]]:
    base, cand = audit["metrics"].get("baseline", {}), audit["metrics"].get("candidate", {})
    deltas = audit.get("deltas", {})
    rows = []
    for rule in rules:
        b, c = base.get(rule.metric), cand.get(rule.metric)
        p = (deltas.get(rule.metric) or {}).get("p_value")
        delta = None if b is None or c is None else c - b
        if c is None or (rule.kind == "max_drop" and b is None):
            ok, reason = False, "metric missing from the audit (fail-closed)"
        elif rule.kind == "min":
            ok, reason = c >= rule.threshold, f"candidate {c:.4f} {'>=' if c >= rule.threshold else '<'} {rule.threshold:g}"
        elif rule.kind == "max":
            ok, reason = c <= rule.threshold, f"candidate {c:.4f} {'<=' if c <= rule.threshold else '>'} {rule.threshold:g}"
        else:
            drop = b - c
            ok = drop <= rule.threshold + 1e-12
            reason = f"drop {drop:+.4f} {'<=' if ok else '>'} {rule.threshold:g}"
        rows.append(RuleOutcome(rule.describe(), rule.metric, b, c, delta, rule.threshold, p,
                                "pass" if ok else "fail", reason))
    verdict = "pass" if all(r.outcome == "pass" for r in rows) else "fail"
    return verdict, rows


def as_json(verdict: str, rows: list[RuleOutcome]) -> str:
    return json.dumps({"verdict": verdict, "rules": [asdict(r) for r in rows]}, indent=2)
