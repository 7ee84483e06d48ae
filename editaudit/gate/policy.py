"""Gate policies: rules on an audit's metric names, and where policies come from (files, text, the built-ins).

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

import re
from importlib import resources
from pathlib import Path
from typing import Literal

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
