"""Evaluate a policy against an audit -> pass | warn | fail, one row per (rule, metric) plus one per requirement.
Pure functions of the audit's typed result (editaudit.contracts.audit_result: metrics, deltas with their paired
counts, samples, the config that ran and its profile); attacks are asked for their facts by their parsed params.

Fail-closed everywhere: a metric a rule names that the audit lacks, a drop the data cannot bound, a requirement the
recorded audit does not meet, each blocks (unless the rule says `on_missing: warn | ignore` for a missing metric).
A drop rule passes by non-inferiority unless it asks for the lenient `significant_drop` decision (see policy.py).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from editaudit.contracts import metrics
from editaudit.contracts.audit import CORRUPTION_NAMES
from editaudit.contracts.audit_result import AuditResult, Delta, SplitSamples
from editaudit.contracts.paired import drop_upper_bound, samples_needed
from editaudit.gate.policy import Policy, Requirements, Rule


class GateUsageError(ValueError):
    """The policy names something that cannot exist for this audit (an attack id it never ran while it ran others):
    a typo, not a regression. `field` is the rule's path in the policy, `closest` the names it probably meant."""

    def __init__(self, detail: str, field: str, closest: list[str]):
        super().__init__(detail)
        self.detail, self.field, self.closest = detail, field, closest


@dataclass
class RuleOutcome:
    rule: str
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    threshold: float | None
    p_value: float | None
    outcome: str  # pass | warn | fail
    reason: str
    n: int | None = None  # paired samples behind the decision
    bound: float | None = None  # drop rules: the upper (1 - alpha) bound on the drop (relative for relative rules)
    decision: str | None = None  # non_inferiority | significant_drop | requirement
    lenient: bool = False  # decided by significance: a small audit can pass by detecting nothing
    undecided: bool = False  # the data could not show the drop is within the margin (too few samples)
    samples_needed: int | None = None  # ... and how many would, at the observed rates of lost and gained inputs


@dataclass
class GateResult:
    verdict: str  # pass | warn | fail
    rules: list[RuleOutcome]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "rules": [asdict(r) for r in self.rules], "notes": self.notes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        """From a gate response (`POST /gate`, `GET /edits/{id}/gate`)."""
        return cls(d["verdict"], [RuleOutcome(**r) for r in d["rules"]], list(d.get("notes") or []))


def as_result(audit: AuditResult | Mapping[str, Any]) -> AuditResult:
    """The audit as the contract's model: the model itself, or a document in its shape (the API's audit JSON)."""
    return audit if isinstance(audit, AuditResult) else AuditResult.from_document(audit)


def evaluate(audit: AuditResult | Mapping[str, Any], policy: Policy, tenant: str | None = None,
             typos_are_usage: bool = True, datasets: Mapping[str, Any] | None = None) -> GateResult:
    """`tenant`: whose gate this is (a required profile must be that tenant's). `typos_are_usage`: an explicit
    adversarial metric whose attack id the audit never ran raises GateUsageError (ad-hoc and inline rules: a typo)
    instead of counting as missing (named policies: the audit does not meet them). `datasets`: split -> {ref,
    sha256} of the datasets audited (a document's own `datasets` when not given)."""
    if datasets is None and isinstance(audit, Mapping):
        datasets = audit.get("datasets")
    audit = as_result(audit)
    base, cand = audit.metrics.baseline, audit.metrics.candidate
    names = audit.metrics.names()
    rows = check_requirements(audit, policy.requires, tenant, datasets) if policy.requires else []
    for i, rule in enumerate(policy.rules):
        on_missing = rule.on_missing or policy.on_missing
        strict = typos_are_usage and on_missing == "fail"
        for metric in _targets(audit, names, rule, i, strict):
            b, c = base.get(metric), cand.get(metric)
            if c is None or (rule.is_drop and b is None):
                if on_missing == "ignore":
                    continue
                outcome = "fail" if on_missing == "fail" else "warn"
                rows.append(RuleOutcome(rule.describe(), metric, b, c, None, rule.threshold, None, outcome,
                                        "metric missing from the audit"
                                        + (" (fail-closed)" if outcome == "fail" else ""),
                                        decision=rule.effective_decision, lenient=rule.lenient))
                continue
            rows.append(_decide(rule, metric, b, c, audit.deltas.get(metric) or Delta(), audit.samples))
    if not rows:  # every rule ignored what it could not find: nothing was shown, so nothing passes
        rows.append(RuleOutcome("policy", "—", None, None, None, None, None, "fail",
                                "no rule applied to this audit (every rule's metric was missing and ignored)"))
    outcomes = {r.outcome for r in rows}
    verdict = "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"
    notes = []
    if any(r.undecided for r in rows):
        notes.append("undecided for lack of samples: " + ", ".join(
            f"{r.metric} (needs about {r.samples_needed})" if r.samples_needed else r.metric
            for r in rows if r.undecided))
    if any(r.lenient for r in rows):
        notes.append("lenient rules (significant_drop: a drop blocks only when significant, so a small audit passes "
                     "by detecting nothing): " + ", ".join(r.metric for r in rows if r.lenient))
    return GateResult(verdict, rows, notes)


def _targets(audit: AuditResult, names: list[str], rule: Rule, index: int, strict: bool) -> list[str]:
    """The metric names a rule reads in this audit: its metric, the wildcard's matches, or the attacks its selector
    matches (by their recorded parameters). An explicit adversarial metric whose attack id the audit never ran,
    while it ran others, is a usage error with the ids it did run."""
    attacks = audit.attacks()
    if rule.attack is not None:
        ids = [a.id for a in attacks if rule.attack.matches(a)]
        return [metrics.adv_accuracy(rule.split, i) for i in ids] or [rule.target]
    metric = rule.metric
    assert metric is not None  # Rule._one_kind: a rule names a metric or an attack selector
    if metrics.is_pattern(metric):
        return [n for n in names if fnmatch.fnmatchcase(n, metric)] or [metric]
    parsed = metrics.parse(metric)
    assert parsed is not None  # Rule._grammar: a metric that is not a pattern parses
    ran = [a.id for a in attacks]
    if strict and parsed.measure == "adv" and ran and parsed.attack not in ran:
        candidates = [metrics.adv_accuracy(parsed.split, i) for i in ran] + names
        raise GateUsageError(f"rule {index}: this audit ran no attack with id {parsed.attack!r} (it ran {ran}); "
                             f"did you mean {' or '.join(metrics.closest(metric, candidates)) or 'one of those'}?",
                             f"policy.rules.{index}.metric", metrics.closest(metric, candidates))
    return [metric]


def _decide(rule: Rule, metric: str, b: float | None, c: float, delta: Delta,
            samples: Mapping[str, SplitSamples]) -> RuleOutcome:
    t, kind = rule.threshold, rule.kind
    diff = None if b is None else c - b
    p = delta.p_value

    def row(outcome: str, reason: str, **kw: Any) -> RuleOutcome:
        return RuleOutcome(rule.describe(), metric, b, c, diff, t, p, outcome, reason,
                           decision=rule.effective_decision, lenient=rule.lenient, **kw)

    if kind == "min":
        return row("pass" if c >= t else rule.severity, f"candidate {c:.4f} {'>=' if c >= t else '<'} {t:g}")
    if kind == "max":
        return row("pass" if c <= t else rule.severity, f"candidate {c:.4f} {'<=' if c <= t else '>'} {t:g}")
    assert b is not None  # a drop rule without a baseline is a missing metric (evaluate)
    if not (math.isfinite(b) and math.isfinite(c)):
        return row(rule.severity, f"baseline {b} or candidate {c} is not a number; fail-closed")
    relative = kind == "max_relative_drop"
    scale = b if relative else 1.0
    word = "relative drop" if relative else "drop"
    drop = (b - c) / scale if scale > 0 else (0.0 if c >= b else float("inf"))
    if relative and scale <= 0 and c >= b:  # from 0, nothing can be lost
        return row("pass", f"baseline {b:.4f}: no relative drop is possible (candidate {c:.4f})")
    if rule.lenient:  # the old rule: a drop over the margin blocks only when McNemar says it is real
        bad = not drop <= t + 1e-12  # NaN blocks
        reason = f"{word} {drop:+.4f} {'>' if bad else '<='} {t:g}"
        if bad and p is not None and p >= rule.alpha:
            bad, reason = False, f"{reason}, but not significant (p={p:.3g} >= {rule.alpha:g}); lenient decision"
        return row(rule.severity if bad else "pass", reason, n=delta.paired_n)
    counts, paired = delta.discordant, delta.paired_n
    if not counts or not paired or scale <= 0:
        why = "no paired counts for this metric" if not counts or not paired else "baseline is 0: no relative drop"
        return row(rule.severity, f"{word} {drop:+.4f}: cannot bound it ({why}); fail-closed", n=paired,
                   undecided=True)
    lost: float = counts.baseline_only
    gained: float = counts.candidate_only
    n: float = paired
    per_image = _images(metric, paired, samples)
    aggregate = per_image != n
    if aggregate:  # k conditions of the same images: count each image once
        lost, gained, n = lost * per_image / n, gained * per_image / n, per_image
    bound = drop_upper_bound(lost, gained, n, rule.alpha) / scale
    per = f"n={n:g} images: its conditions count once" if aggregate else f"n={n}"
    if bound <= t + 1e-12:
        return row("pass", f"{word} {drop:+.4f}, {1 - rule.alpha:.0%} upper bound {bound:+.4f} <= {t:g} ({per})",
                   n=round(n), bound=bound)
    needed = None if aggregate else samples_needed(counts.baseline_only, counts.candidate_only, paired, t * scale,
                                                   rule.alpha)
    if drop > t:
        reason = f"{word} {drop:+.4f} > {t:g} (upper bound {bound:+.4f}, {per})"
    else:
        reason = (f"{word} {drop:+.4f}, but its {1 - rule.alpha:.0%} upper bound {bound:+.4f} > {t:g}: {per} cannot "
                  "show the drop is within the margin" + (f"; about {needed} samples would at these rates "
                                                          f"({lost:g} lost, {gained:g} gained)" if needed else ""))
    return row(rule.severity, reason, n=round(n), bound=bound, undecided=drop <= t, samples_needed=needed)


def _images(metric: str, n: int, samples: Mapping[str, SplitSamples]) -> int:
    """The number of images behind a metric's n. A corruption aggregate (a type over its severities, a severity
    over the types, everything) concatenates k conditions of the same images, whose outcomes are correlated; its
    bound treats the k conditions of an image as one observation (the worst case, perfect correlation), so it is
    never narrower than the data allow. Every other metric: n itself."""
    m = metrics.parse(metric)
    images = samples[m.split].n if m is not None and m.split in samples else None
    return images if m is not None and m.aggregate and images and n > images else n


def check_requirements(audit: AuditResult | Mapping[str, Any], req: Requirements, tenant: str | None = None,
                       datasets: Mapping[str, Any] | None = None) -> list[RuleOutcome]:
    """One row per requirement: pass, or fail naming what the recorded audit lacks."""
    if datasets is None and isinstance(audit, Mapping):
        datasets = audit.get("datasets")
    audit = as_result(audit)
    config, samples, datasets = audit.config, audit.samples, datasets or {}
    rows = []

    def add(what: str, ok: bool, reason: str) -> None:
        rows.append(RuleOutcome(f"requires {what}", "audit", None, None, None, None, None,
                                "pass" if ok else "fail", reason if not ok else "met", decision="requirement"))

    if req.profile is not None:
        prof, want = audit.profile, req.profile
        ok = prof is not None and prof.name == want.name and (
            want.version is None or prof.version == want.version) and (
            want.min_version is None or (prof.version or 0) >= want.min_version) and (
            want.sha256 is None or prof.sha256 == want.sha256) and (tenant is None or prof.tenant == tenant)
        add(f"profile {want.name}" + (f" v{want.version}" if want.version else "")
            + (f" v>={want.min_version}" if want.min_version else "") + (f" {want.sha256[:12]}" if want.sha256 else ""),
            ok, f"the audit ran profile {prof.name} v{prof.version} of tenant {prof.tenant} "
                f"(config {str(prof.sha256)[:12]})" if prof
            else "the audit ran no server-side profile (the submitter chose its config)")
    attacks = audit.attacks()
    for sel in req.attacks:
        add(f"attack {sel.describe()}", any(sel.matches(a) for a in attacks),
            f"no attack of the audit is {sel.describe()}; it ran "
            + (", ".join(a.describe() for a in attacks) or "no attack"))
    if req.corruptions is not None:
        ran = config.corruptions if config is not None else None
        have_names = set(ran.resolved_names) if ran else set()
        want_names = set(CORRUPTION_NAMES) if req.corruptions.names == "all" else set(req.corruptions.names)
        missing_names = sorted(want_names - have_names)
        missing_sev = sorted(set(req.corruptions.severities) - set(ran.severities if ran else []))
        add("corruptions", not missing_names and not missing_sev and bool(ran),
            "the audit ran no corruptions" if not ran else
            f"missing corruptions {missing_names or '-'}, severities {missing_sev or '-'}")
    for split, least in req.min_samples.items():
        got = samples[split].n if split in samples else 0
        add(f"{least} samples of {split}", got >= least, f"the audit used {got} samples of {split}")
    for split in req.full_splits:
        used = samples.get(split)
        add(f"all of {split}", used is not None and used.n == used.of,
            f"the audit used {used.n if used else 0} of {used.of if used else 0} samples of {split} (a subset)")
    for split in req.splits:
        add(f"split {split}", split in samples, f"the audit did not cover {split}")
    for split, ref in req.datasets.items():
        audited = datasets.get(split) or {}
        add(f"{split} set {ref}", ref in (audited.get("ref"), audited.get("sha256")),
            f"the audit's {split} set is {audited.get('ref')} (sha256 {str(audited.get('sha256'))[:12]})")
    return rows
