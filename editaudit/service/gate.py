"""Deployment gate: a policy of rules on an audit's metric names -> pass | warn | fail. Pure functions.

Rules compare the candidate with a threshold or with the baseline:
  min                candidate >= threshold
  max                candidate <= threshold
  max_drop           baseline - candidate <= threshold                 (absolute: 0.01 = one point)
  max_relative_drop  (baseline - candidate) / baseline <= threshold    (0.1 = ten percent of the baseline)
`metric` may hold shell-style wildcards (`test.corruption.*.*.accuracy`): the rule applies to every match.
`severity: warn` turns a violation into a warning. `require_significance: 0.05` lets a drop block only when the
audit's paired test (exact McNemar) rejects at that level. Fail-closed: a metric a rule names (or a wildcard that
matches nothing) that the audit lacks counts as a violation unless the rule says `on_missing: warn | ignore`.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KINDS = ("min", "max", "max_drop", "max_relative_drop")
POLICY_VERSION = 1


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1, description="a metric name, wildcards allowed")
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_relative_drop: float | None = None
    severity: Literal["fail", "warn"] = "fail"
    require_significance: float | None = Field(None, gt=0, lt=1, description="alpha; a drop blocks only if p < alpha")
    on_missing: Literal["fail", "warn", "ignore"] | None = None

    @field_validator("require_significance", mode="before")
    @classmethod
    def _bool_alpha(cls, v):
        return {True: 0.05, False: None}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _one_kind(self):
        set_kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(set_kinds) != 1:
            raise ValueError(f"a rule needs exactly one of {list(KINDS)}; got {set_kinds or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def threshold(self) -> float:
        return float(getattr(self, self.kind))

    def describe(self) -> str:
        sig = f" (p<{self.require_significance:g})" if self.require_significance else ""
        return f"{self.kind} {self.threshold:g}{sig}{' [warn]' if self.severity == 'warn' else ''}"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = POLICY_VERSION
    name: str | None = None
    description: str | None = None
    on_missing: Literal["fail", "warn", "ignore"] = "fail"
    rules: list[Rule] = Field(min_length=1)


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


# ------------------------------------------------------------------------------------------------------ loading


def parse_assignment(text: str, kind: str) -> Rule:
    """`test.accuracy=0.01` with kind max_drop -> Rule; ValueError with a usable message otherwise."""
    metric, sep, value = text.partition("=")
    flag = f"--{kind.replace('_', '-')}"
    if not sep or not metric.strip():
        raise ValueError(f"{flag} expects METRIC=VALUE, got {text!r}")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {value!r} is not a number") from None
    return Rule(metric=metric.strip(), **{kind: threshold})


def policy_from_text(text: str, source: str = "policy") -> Policy:
    """A policy document in YAML or JSON; ValueError naming the problem."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not YAML/JSON: {e}") from None
    try:
        return Policy.model_validate(doc)
    except Exception as e:  # noqa: BLE001 - pydantic's message names the field
        raise ValueError(f"{source}: {e}") from None


def load_policy(path: Path) -> Policy:
    return policy_from_text(Path(path).read_text(), str(path))


def builtin_policy(name: str) -> Policy | None:
    """Policies shipped with editaudit (`default`), from editaudit/policies/<name>.yaml; None for any other name
    (names are checked before they touch a path)."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,100}", name):
        return None
    res = resources.files("editaudit").joinpath(f"policies/{name}.yaml")
    return policy_from_text(res.read_text(), f"builtin policy {name!r}") if res.is_file() else None


# --------------------------------------------------------------------------------------------------- evaluation


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


# ------------------------------------------------------------------------------------------------------ formats


def as_junit(result: GateResult, suite: str = "editaudit gate") -> str:
    """JUnit XML: one testcase per evaluated rule; fail -> <failure>, warn -> passes with a <system-out> note."""
    fails = sum(r.outcome == "fail" for r in result.rules)
    root = ET.Element("testsuites", name=suite, tests=str(len(result.rules)), failures=str(fails))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.rules)), failures=str(fails),
                       errors="0", skipped="0")
    for r in result.rules:
        tc = ET.SubElement(ts, "testcase", classname="editaudit.gate", name=f"{r.metric}: {r.rule}")
        if r.outcome == "fail":
            ET.SubElement(tc, "failure", message=r.reason, type="GateRuleFailed").text = (
                f"baseline={r.baseline} candidate={r.candidate} delta={r.delta} p={r.p_value}")
        elif r.outcome == "warn":
            ET.SubElement(tc, "system-out").text = f"WARNING: {r.reason}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}


def _f(v, signed=False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if signed else f"{v:.4f}")


def as_markdown(result: GateResult, title: str = "editaudit gate") -> str:
    """Short enough for a PR comment or a GitHub job summary."""
    lines = [f"### {title}: {MARK[result.verdict]}", "",
             "| rule | metric | baseline | candidate | Δ | p | outcome |", "|---|---|---:|---:|---:|---:|---|"]
    for r in result.rules:
        p = "—" if r.p_value is None else f"{r.p_value:.3g}"
        lines.append(f"| {r.rule} | `{r.metric}` | {_f(r.baseline)} | {_f(r.candidate)} | {_f(r.delta, True)} | {p} "
                     f"| {MARK[r.outcome]} |")
    return "\n".join(lines) + "\n"
