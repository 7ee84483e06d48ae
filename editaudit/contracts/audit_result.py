"""The audit result: what the runner measured, as the worker stores it (`audits.result`), the API serves it
(`GET /audits/{id}`) and the gate and the reports read it.

An `AuditResult` holds the per-model metrics, their 95% intervals, the paired deltas, the accuracy-vs-eps curves,
which samples were used, durations, the device, notes, and the sections an edit method adds (1-LI's `alpha_curve`
and `mli`; a layer sweep's `sweep` table; anything else a method contributes goes to `sections`, free-form). Metric
names are those of editaudit.contracts.metrics.

The config that ran is not part of the stored result: it lives once, in `audits.config` (the resolved config, with
`audits.profile` when the server resolved it from a profile). `from_stored` puts the row's parts together (and
reads every stored shape: `schema_version` 1 is the untyped dict of before, which carried a copy of the config);
`stored` is what goes into `audits.result`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, TypeAdapter

from editaudit.contracts import metrics as M
from editaudit.contracts.attacks import ATTACK_PARAMS, AttackParams, _RegisteredAttacks
from editaudit.contracts.audit import AuditConfig, CorruptionConfig

RESULT_SCHEMA_VERSION = 2  # 1: the untyped dict (with a copy of the config); 2: this model


def _metric_name(name: str) -> str:
    if M.parse(name) is None:
        raise ValueError(f"{name!r} is not a metric name (<split>.<measure>, editaudit.contracts.metrics)")
    return name


def _split(name: str) -> str:
    if name not in M.SPLITS:
        raise ValueError(f"unknown split {name!r}; valid: {list(M.SPLITS)}")
    return name


MetricName = Annotated[str, AfterValidator(_metric_name)]
Split = Annotated[str, AfterValidator(_split)]


class Part(BaseModel):
    """Base of the result's parts: a reader ignores keys it does not know (a newer writer's additions)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ModelMetrics(Part):
    """Metric name -> value, per model. None: undefined (e.g. a success rate where a model got nothing right)."""

    baseline: dict[MetricName, float | None] = Field(default_factory=dict)
    candidate: dict[MetricName, float | None] = Field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(set(self.baseline) | set(self.candidate))


class ModelIntervals(Part):
    """Metric name -> the 95% Wilson interval of that accuracy, per model."""

    baseline: dict[MetricName, tuple[float, float]] = Field(default_factory=dict)
    candidate: dict[MetricName, tuple[float, float]] = Field(default_factory=dict)


class Discordant(Part):
    """Inputs the edit lost (right before, wrong after) and gained."""

    baseline_only: int
    candidate_only: int


class Delta(Part):
    """candidate - baseline of one metric, with what the statistics knew (worker/ml/audit/stats.py). The gate
    decides drop rules from `n` and `discordant` (paired counts); `images` and `conditions` describe a corruption
    aggregate (k conditions of the same images); an unpaired delta (a success rate) has `n` = (candidate's trials,
    baseline's trials) and no p-value."""

    value: float | None = None
    ci95: tuple[float, float] | None = None
    p_value: float | None = None
    n: int | tuple[int, int] | None = Field(None, description="paired samples; unpaired: (candidate, baseline)")
    discordant: Discordant | None = None
    images: int | None = None
    conditions: int | None = None
    method: str | None = Field(None, description="how the interval and p-value were computed")

    @property
    def paired_n(self) -> int | None:
        """The number of pairs behind a paired delta; None for an unpaired one."""
        return self.n if isinstance(self.n, int) else None


class Curve(Part):
    """Robust accuracy against eps (an attack with `eps_sweep`), eps ascending."""

    eps: list[float]
    baseline: list[float | None]
    candidate: list[float | None]


class HeldOut(Part):
    """Images of the split the edit kept for its own use (e.g. a locality term); the audit did not score them."""

    n: int
    of: int
    seed: int
    ids: list[int]
    roles: list[str] = Field(default_factory=list, alias="for", description="what they were held out for")


class SplitSamples(Part):
    """Which images of a split the audit scored: `n` of `of`; `ids` index the whole split (None: all of them)."""

    n: int
    of: int
    ids: list[int] | None = None
    held_out: HeldOut | None = None


class AlphaPoint(Part):
    """1-LI: the metrics measured at one point of W0 + alpha (W1 - W0)."""

    alpha: float
    metrics: dict[MetricName, float | None]


class MLISummary(Part):
    """1-LI's monotone-linear-interpolation check on the evaluated path."""

    monotone: bool
    alpha: float
    evaluations: int | None = None
    search: str | None = None
    smaller_alpha_excluded: str | None = Field(None, description="whether a smaller alpha reaching the target "
                                                                 "is ruled out by the evaluated points")
    target_split: str | None = Field(None, description="the split whose accuracy alpha had to reach")
    threshold: float | None = Field(None, description="the accuracy it had to reach there (a set target, or a "
                                                      "share of the full edit's gain)")


class SweepRow(Part):
    """One layer of a layer sweep: its sub-edit, summary candidate metrics and their deltas."""

    layer: str
    edit_id: str
    status: str
    error: str | None = None
    edited_model_id: str | None = None
    metrics: dict[MetricName, float | None] = Field(default_factory=dict)
    deltas: dict[MetricName, Delta] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict, description="the method's sweep_info")


class SweepTable(Part):
    """A layer sweep's comparison: the metrics the succeeded layers share, one row per layer, the best layer per
    metric (in the metric's better direction)."""

    metrics: list[MetricName] = Field(default_factory=list)
    rows: list[SweepRow] = Field(default_factory=list)
    best: dict[MetricName, str] = Field(default_factory=dict)


class ProfileRecord(Part):
    """The audit profile the server resolved the config from (set by the API only, never by a submitter)."""

    tenant: str | None = None
    name: str
    version: int | None = None
    sha256: str | None = Field(None, description="content hash of the profile's config")


# --- the recorded config: what ran, read back leniently --------------------------------------------------------------

class UnrecognizedAttack(AttackParams):
    """An attack a stored config names that this process cannot validate (a plugin no longer loaded, params of
    another version): kept as recorded. It has no facts, so no policy selector matches it (fail-closed)."""

    model_config = ConfigDict(extra="allow")
    name: str

    def describe(self) -> str:
        return f"{self.id} ({self.name}: not recognised by this server)"


def _recorded_attack(raw: Any) -> AttackParams:
    try:
        return ATTACK_PARAMS.parse_tagged(raw)
    except ValueError:  # pydantic's ValidationError is one
        if not isinstance(raw, Mapping):
            raise
        fields = {k: v for k, v in raw.items() if k not in ("id", "name", "seed")}
        return UnrecognizedAttack.model_construct(id=str(raw.get("id") or raw.get("name")), name=str(raw.get("name")),
                                                  seed=raw.get("seed", 0), **fields)


RecordedAttack = Annotated[SerializeAsAny[AttackParams], BeforeValidator(_recorded_attack), _RegisteredAttacks]


class RecordedCorruptions(CorruptionConfig):
    names: list[str] | Literal["all"] = "all"  # a corruption registered by a plugin may no longer be


class RecordedAuditConfig(AuditConfig):
    """An AuditConfig as stored with an audit, read without failing on what this process no longer knows (or
    accepted before it was refused at the door: a seed out of today's range)."""

    attacks: list[RecordedAttack] = Field(default_factory=list)
    seed: int = 0
    corruptions: RecordedCorruptions | None = None


def _recorded_config(v: Any) -> Any:
    return RecordedAuditConfig.model_validate(v) if isinstance(v, Mapping) else v


RecordedConfig = Annotated[AuditConfig, BeforeValidator(_recorded_config)]
"""An audit's resolved config, validated when it was requested; read back as recorded."""


# --- the result ------------------------------------------------------------------------------------------------------

# method sections with a fixed shape (their fields below); any other section goes to `sections`
TYPED_SECTIONS: dict[str, TypeAdapter[Any]] = {"alpha_curve": TypeAdapter(list[AlphaPoint]),
                                               "mli": TypeAdapter(MLISummary), "sweep": TypeAdapter(SweepTable)}


class AuditResult(Part):
    """What an audit measured. `config` and `profile` are the row's (`audits.config`, `audits.profile`): present
    when read through `from_stored` or set by the runner, never part of `stored()`."""

    schema_version: int = Field(RESULT_SCHEMA_VERSION, description="the shape of this result (2: this model)")
    metrics: ModelMetrics = Field(default_factory=ModelMetrics)
    intervals: ModelIntervals | None = None
    deltas: dict[MetricName, Delta] = Field(default_factory=dict)
    curves: dict[str, Curve] = Field(default_factory=dict, description="<split>.adv.<attack id> -> accuracy vs eps")
    samples: dict[Split, SplitSamples] = Field(default_factory=dict)
    durations_s: dict[str, float] = Field(default_factory=dict)
    device: str | None = None
    baseline_cached: bool | None = None
    notes: list[str] = Field(default_factory=list)
    alpha_curve: list[AlphaPoint] | None = None
    mli: MLISummary | None = None
    sweep: SweepTable | None = None
    sections: dict[str, Any] = Field(default_factory=dict, description="free-form sections an edit method adds "
                                                                       "(its params' audit_sections) beyond the typed "
                                                                       "ones")
    config: RecordedConfig | None = Field(None, description="stored in audits.config, not in the result")
    profile: ProfileRecord | None = Field(None, description="stored in audits.profile, not in the result")

    # -- reading

    def attacks(self) -> list[AttackParams]:
        """The attacks that ran, parsed: ask them for their facts (travel(), radius(), describe() ...)."""
        return list(self.config.attacks) if self.config is not None else []

    def headline(self) -> list[str]:
        """The metric names worth a glance (no per-type or per-severity corruption detail)."""
        return M.headline(self.metrics.names())

    # -- writing

    def add_sections(self, sections: Mapping[str, Any], keys: Iterable[str]) -> None:
        """An edit method's additions (its params' `audit_sections`): the typed ones to their fields, any other
        one to `sections`."""
        for key in (k for k in keys if k in sections):
            if key in TYPED_SECTIONS:
                setattr(self, key, TYPED_SECTIONS[key].validate_python(sections[key]))
            else:
                self.sections[key] = sections[key]

    def stored(self) -> dict[str, Any]:
        """What goes into `audits.result`: everything but the config and the profile (their own columns). NaN and
        infinities are the caller's to clean (JSON has none)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"config", "profile"})

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AuditResult:
        """A document in this shape that may carry more (the API's audit JSON: its id, status, times ...) and nulls
        where there is nothing yet."""
        return cls.model_validate({k: v for k, v in doc.items() if v is not None})

    @classmethod
    def from_stored(cls, result: Mapping[str, Any] | None, config: Mapping[str, Any] | AuditConfig | None = None,
                    profile: Mapping[str, Any] | None = None) -> AuditResult:
        """A row's result in any stored shape, with the row's config and profile. Shape 1 (no `schema_version`)
        carried a copy of the config, dropped here for the column's; its method sections were top-level keys,
        moved to `sections` unless typed. No result yet (None): an empty one."""
        data = dict(result or {})
        if data.get("schema_version", 1) == 1:
            data.pop("config", None)
            data.pop("baseline_eval", None)
            known = {f.alias or name for name, f in cls.model_fields.items()}
            data["sections"] = {k: data.pop(k) for k in list(data) if k not in known}
            data["schema_version"] = RESULT_SCHEMA_VERSION
        return cls.model_validate({**data, "config": config, "profile": profile})
