"""Gate policies: rules on an audit's metric names, and where policies come from (files, text, the built-ins).

Rules compare the candidate with a threshold or with the baseline:
  min                candidate >= threshold
  max                candidate <= threshold
  max_drop           baseline - candidate <= threshold                 (absolute: 0.01 = one point)
  max_relative_drop  (baseline - candidate) / baseline <= threshold    (0.1 = ten percent of the baseline)
`metric` may hold shell-style wildcards (`test.corruption.*.*.accuracy`): the rule applies to every match.
`attack: {name: pgd, norm: inf, min_eps: 0.03, min_steps: 10}` instead of `metric` selects attacks by what they
are. `severity: warn` turns a violation into a warning. A drop rule passes by non-inferiority (the default
`decision`): only when the one-sided upper (1 - alpha) bound on the paired drop is within the margin (see
editaudit/contracts/paired.py); `decision: significant_drop` (or the legacy `require_significance: alpha`) lets
a drop block only when the exact McNemar test rejects, which lets small audits pass: reports mark such rules
lenient. `requires` names what the audit must have run. Fail-closed: a metric a rule names (or a wildcard that
matches nothing) that the audit lacks counts as a violation unless the rule says `on_missing: warn | ignore`; so
does an unmet requirement.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editaudit.contracts import metrics
from editaudit.contracts.attacks import AttackParams
from editaudit.contracts.audit_result import UnrecognizedAttack

KINDS = ("min", "max", "max_drop", "max_relative_drop")
DROP_KINDS = ("max_drop", "max_relative_drop")
POLICY_VERSION: Final = 1
Decision = Literal["non_inferiority", "significant_drop"]
Split = Literal["test", "edit", "generalization"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackSelector(_Strict):
    """Attacks by what they are, not by the id the submitter chose: every attack of the audit with this name and
    norm and at least this strength. Each floor is checked against the attack's own answer (its params' methods:
    radius(), iterations(), restart_count(), travel()); an attack that has no answer for a floor does not match."""

    name: str
    norm: Literal["inf", "2"] | None = None
    min_eps: float | None = Field(None, gt=0)
    min_steps: int | None = Field(None, ge=1)
    min_restarts: int | None = Field(None, ge=1)
    min_travel: float | None = Field(None, gt=0, description=(
        "how far its steps can carry it, in radii, by its own step rule, at least: PGD steps x step size / eps "
        "(2.5 with the default step size); FGSM 1; APGD its guaranteed travel under ART's schedule (2 eps first, "
        "halved at every checkpoint in the worst case: 2 for one step). Attacks without a step rule (Square, "
        "AutoAttack, CW, DeepFool) do not match. An attack whose steps cannot reach the radius is not that attack"))

    def matches(self, attack: AttackParams) -> bool:
        """`attack`: one of the audit's attacks as it ran (its recorded config, parsed by the attack registry)."""
        if isinstance(attack, UnrecognizedAttack):  # recorded, but this server cannot say what it was
            return False

        def at_least(value: float | None, floor: float | None) -> bool:
            return floor is None or (value is not None and value >= floor)

        return (attack.name == self.name and (self.norm is None or attack.ball_norm() == self.norm)
                and at_least(attack.radius(), self.min_eps) and at_least(attack.iterations(), self.min_steps)
                and at_least(attack.restart_count(), self.min_restarts)
                and at_least(attack.travel(), self.min_travel))

    def describe(self) -> str:
        parts = [self.name] + [f"{k}{'>=' if k.startswith('min_') else '='}{v:g}" if isinstance(v, float) else
                               f"{k}{'>=' if k.startswith('min_') else '='}{v}"
                               for k, v in self.model_dump(exclude_none=True).items() if k != "name"]
        return " ".join(p.replace("min_", "") for p in parts)


class ProfileRequirement(_Strict):
    name: str
    version: int | None = Field(None, ge=1, description="exactly this version")
    min_version: int | None = Field(None, ge=1, description="this version or a later one")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="exactly this config (its content hash)")


class CorruptionRequirement(_Strict):
    names: list[str] | Literal["all"] = "all"
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])


class Requirements(_Strict):
    """What an audit must have run for the policy to accept it; checked against the audit's recorded config, the
    samples it used and the profile the server resolved (never against what the submitter says)."""

    profile: ProfileRequirement | None = None
    attacks: list[AttackSelector] = Field(default_factory=list, description="each needs a matching attack")
    corruptions: CorruptionRequirement | None = None
    min_samples: dict[Split, int] = Field(default_factory=dict, description="samples audited per split, at least")
    full_splits: list[Split] = Field(default_factory=list, description="splits audited whole (no max_samples "
                                                                       "subset a submitter could pick by seed)")
    splits: list[Split] = Field(default_factory=list, description="splits the audit must cover")
    datasets: dict[Split, str] = Field(default_factory=dict, description="split -> the dataset it must be: an id, a "
                                                                         "builtin name or a sha256")


class Rule(_Strict):
    metric: str | None = Field(None, min_length=1, description="a metric name, wildcards allowed")
    attack: AttackSelector | None = Field(None, description="instead of `metric`: <split>.adv.<id>.accuracy of every "
                                                            "attack of the audit that matches")
    split: Split = Field("test", description="with `attack`: the split whose robust accuracy the rule reads")
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_relative_drop: float | None = None
    severity: Literal["fail", "warn"] = "fail"
    decision: Decision | None = Field(None, description="drop rules: non_inferiority (default) or the lenient "
                                                        "significant_drop")
    alpha: float = Field(0.05, ge=1e-6, le=0.2, description="drop rules: one-sided level of the bound (or the test)")
    require_significance: float | None = Field(None, ge=1e-6, le=0.2, description="legacy: decision significant_drop "
                                                                             "at this alpha")
    on_missing: Literal["fail", "warn", "ignore"] | None = None

    @field_validator("require_significance", mode="before")
    @classmethod
    def _bool_alpha(cls, v: Any) -> Any:
        return {True: 0.05, False: None}.get(v, v) if isinstance(v, bool) else v

    @field_validator("metric")
    @classmethod
    def _grammar(cls, v: str | None) -> str | None:
        if v is not None and not metrics.is_pattern(v) and metrics.parse(v) is None:
            hint = metrics.closest(v, metrics.examples())
            raise ValueError(f"{v!r} is not a metric name (<split>.<measure>, see editaudit.contracts.metrics)"
                             + (f"; did you mean {' or '.join(hint)}?" if hint else ""))
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        set_kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(set_kinds) != 1:
            raise ValueError(f"a rule needs exactly one of {list(KINDS)}; got {set_kinds or 'none'}")
        if (self.metric is None) == (self.attack is None):
            raise ValueError("a rule names either a `metric` or an `attack` selector")
        if self.require_significance is not None:
            if self.decision == "non_inferiority":
                raise ValueError("require_significance is the significant_drop decision; drop one of them")
            object.__setattr__(self, "decision", "significant_drop")
            object.__setattr__(self, "alpha", self.require_significance)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def threshold(self) -> float:
        return float(getattr(self, self.kind))

    @property
    def is_drop(self) -> bool:
        return self.kind in DROP_KINDS

    @property
    def effective_decision(self) -> Decision | None:
        return (self.decision or "non_inferiority") if self.is_drop else None

    @property
    def lenient(self) -> bool:
        return self.effective_decision == "significant_drop"

    @property
    def target(self) -> str:
        if self.metric:
            return self.metric
        assert self.attack is not None  # _one_kind: a rule names a metric or an attack selector
        return f"{self.split}.adv.[{self.attack.describe()}].accuracy"

    def describe(self) -> str:
        how = {"non_inferiority": f" (bound {1 - self.alpha:.0%})", "significant_drop": f" (p<{self.alpha:g}, lenient)",
               None: ""}[self.effective_decision]
        return f"{self.kind} {self.threshold:g}{how}{' [warn]' if self.severity == 'warn' else ''}"


class Policy(_Strict):
    version: Literal[1] = POLICY_VERSION
    name: str | None = None
    description: str | None = None
    on_missing: Literal["fail", "warn", "ignore"] = "fail"
    requires: Requirements | None = None
    rules: list[Rule] = Field(min_length=1)


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
    try:
        return Rule(metric=metric.strip(), **{kind: threshold})
    except ValidationError as e:  # a metric outside the grammar: say which and what was probably meant
        raise ValueError(f"{flag} {text!r}: " + "; ".join(x["msg"].removeprefix("Value error, ") for x in e.errors())) \
            from None


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
