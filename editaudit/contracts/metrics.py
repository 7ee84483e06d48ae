"""Metric names: the one place that formats them, parses them and knows which way is better.

Names are stable dotted paths that policies use (`<split>.<measure>`):
  <split>.accuracy                                  clean accuracy (edit/generalization: against the edit targets)
  <split>.agreement                                 share of predictions unchanged vs the baseline
  <split>.drawdown                                  accuracy lost by the edit (baseline - candidate)
  <split>.top_class_share                           share of inputs predicted as the most predicted class (a
                                                    collapsed model predicts one class for most inputs)
  <split>.edit_class_share                          share of inputs predicted as the edit's target class (the
                                                    most common label of the edit split)
  <split>.collapse                                  how far the edit pushed wrong answers into one class: the
                                                    rise (candidate - baseline) of the share of inputs wrongly
                                                    predicted as the candidate's top class or the edit's class,
                                                    whichever rose more (at least 0); the baseline's is 0
  <split>.adv.<attack id>.accuracy                  robust accuracy under that attack
  <split>.adv.<attack id>.success_rate              share of the inputs the model got right that the attack flips
                                                    (robust accuracy alone rises when a model collapses)
  <split>.corruption.<type>.<severity>.accuracy     one corruption cell
  <split>.corruption.<type>.mean.accuracy           a type over its severities
  <split>.corruption.mean.<severity>.accuracy       a severity over the types
  <split>.corruption.mean.accuracy                  everything
  <split>.corruption.<type>.ce, <split>.corruption.mean.ce   corruption error relative to the baseline (1.0 = same)
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

SPLITS = ("test", "edit", "generalization")
MEAN = "mean"
# accuracy lost, corruption error, attack success, one class everywhere; everything else: higher is better
LOWER_IS_BETTER_STATS = ("drawdown", "ce", "success_rate", "top_class_share", "edit_class_share", "collapse")

_GRAMMAR = re.compile(
    r"^(?P<split>test|edit|generalization)\.(?:"
    r"(?P<simple>accuracy|agreement|drawdown|top_class_share|edit_class_share|collapse)"
    r"|adv\.(?P<attack>[A-Za-z0-9_\-]{1,64})\.(?P<adv_stat>accuracy|success_rate)"
    r"|corruption\.(?P<corruption>[a-z0-9_]+)\.(?:(?P<severity>[1-5]|mean)\.accuracy|(?P<stat>accuracy|ce))"
    r")$")


def accuracy(split: str) -> str:
    return f"{split}.accuracy"


def agreement(split: str) -> str:
    return f"{split}.agreement"


def drawdown(split: str) -> str:
    return f"{split}.drawdown"


def adv_key(split: str, attack_id: str) -> str:
    """`<split>.adv.<id>`: the key of an attack's accuracy-vs-eps curve."""
    return f"{split}.adv.{attack_id}"


def adv_accuracy(split: str, attack_id: str) -> str:
    return f"{adv_key(split, attack_id)}.accuracy"


def adv_success_rate(split: str, attack_id: str) -> str:
    return f"{adv_key(split, attack_id)}.success_rate"


def top_class_share(split: str) -> str:
    return f"{split}.top_class_share"


def edit_class_share(split: str) -> str:
    return f"{split}.edit_class_share"


def collapse(split: str) -> str:
    return f"{split}.collapse"


def corruption_accuracy(split: str, corruption: str = MEAN, severity: int | str | None = None) -> str:
    """A cell (type, severity), a type's mean (severity "mean"), a severity's mean (corruption "mean") or the
    overall mean (corruption "mean", no severity)."""
    middle = corruption if severity is None else f"{corruption}.{severity}"
    return f"{split}.corruption.{middle}.accuracy"


def corruption_ce(split: str, corruption: str = MEAN) -> str:
    return f"{split}.corruption.{corruption}.ce"


CLEAN = "clean"


def condition(name: str) -> tuple[str, str] | None:
    """(split, condition) of a per-sample accuracy: `test.accuracy` -> (test, clean), `test.adv.pgd.accuracy` ->
    (test, adv.pgd), `test.corruption.fog.3.accuracy` -> (test, corruption.fog.3); None for anything else (an
    aggregate, a rate). Conditions name the columns of an audit's per-sample file and `?condition=` of its API."""
    m = parse(name)
    if m is None or m.stat != "accuracy" or m.aggregate:
        return None
    if m.measure == "accuracy":
        return m.split, CLEAN
    if m.measure == "adv":
        return m.split, f"adv.{m.attack}"
    if m.measure == "corruption" and m.severity is not None:
        return m.split, f"corruption.{m.corruption}.{m.severity}"
    return None


def condition_metric(split: str, cond: str) -> str | None:
    """The accuracy metric of (split, condition), or None when `cond` is not a condition."""
    name = accuracy(split) if cond == CLEAN else f"{split}.{cond}.accuracy"
    return name if condition(name) == (split, cond) else None


@dataclass(frozen=True)
class Metric:
    """A parsed metric name. `measure` is accuracy | agreement | drawdown | adv | corruption; `stat` is what the
    number is (accuracy, agreement, drawdown or ce)."""

    name: str
    split: str
    measure: str
    stat: str
    attack: str | None = None
    corruption: str | None = None  # a type, or "mean"
    severity: str | None = None  # "1".."5", "mean", or None (overall / ce)

    @property
    def lower_is_better(self) -> bool:
        return self.stat in LOWER_IS_BETTER_STATS

    @property
    def aggregate(self) -> bool:
        """A corruption mean: k conditions of the same images concatenated (their outcomes are correlated)."""
        return self.measure == "corruption" and MEAN in (self.corruption, self.severity)

    @property
    def summary(self) -> bool:
        """Not per-type corruption detail: what a layer sweep's comparison keeps."""
        return self.measure != "corruption" or self.corruption == MEAN

    @property
    def headline(self) -> bool:
        """Worth a glance: a summary that is not per severity either (the overall corruption mean and mCE stay)."""
        return self.summary and self.severity is None


def parse(name: str) -> Metric | None:
    """The metric a name denotes, or None when the name cannot exist under the grammar above."""
    m = _GRAMMAR.match(name)
    if m is None:
        return None
    g = m.groupdict()
    if g["simple"]:
        return Metric(name, g["split"], g["simple"], g["simple"])
    if g["attack"]:
        return Metric(name, g["split"], "adv", g["adv_stat"], attack=g["attack"])
    corruption, severity, stat = g["corruption"], g["severity"], g["stat"] or "accuracy"
    if severity is None and stat == "accuracy" and corruption != MEAN:
        return None  # a type's accuracy names a severity or "mean"
    if severity == MEAN and corruption == MEAN:
        return None  # the overall mean is <split>.corruption.mean.accuracy
    return Metric(name, g["split"], "corruption", stat, corruption=corruption, severity=severity)


def lower_is_better(name: str) -> bool:
    m = parse(name)
    return m is not None and m.lower_is_better


def headline(names: Iterable[str]) -> list[str]:
    """The names worth a glance, sorted: everything but the per-type corruption detail."""
    return sorted(n for n in set(names) if (m := parse(n)) is None or m.headline)


def summary(names: Collection[str], attack_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(label, metric) of what a reviewer reads first, in that order, where the audit has it: clean accuracy, each
    attack's robust accuracy, the corruption mean, then the edit's own splits (the gate's and the reports' summary)."""
    out = [("clean accuracy (test)", accuracy("test"))]
    out += [(f"robust accuracy: {a} (test)", adv_accuracy("test", a)) for a in attack_ids]
    out += [("corruption accuracy, mean (test)", corruption_accuracy("test")),
            ("edit accuracy", accuracy("edit")), ("generalization accuracy", accuracy("generalization"))]
    return [(label, n) for label, n in out if n in names]


def corruption_cell(name: str, split: str) -> tuple[str, int] | None:
    """(type, severity) when `name` is one corruption cell of `split`; None otherwise."""
    m = parse(name)
    if m is None or m.split != split or m.measure != "corruption" or m.stat != "accuracy":
        return None
    if m.corruption is None or m.severity is None or MEAN in (m.corruption, m.severity):
        return None
    return m.corruption, int(m.severity)


def is_pattern(name: str) -> bool:
    """Shell-style wildcards (`test.adv.*.accuracy`): a policy rule then applies to every matching metric."""
    return any(ch in name for ch in "*?[")


def examples(attack_ids: Collection[str] = ("pgd",), corruptions: Collection[str] = ()) -> list[str]:
    """Well-formed names for suggestions: every split's simple measures, the given attacks, corruption summaries."""
    out = []
    for s in SPLITS:
        out += [accuracy(s), agreement(s), drawdown(s), top_class_share(s), edit_class_share(s), collapse(s),
                corruption_accuracy(s), corruption_ce(s)]
        out += [adv_accuracy(s, a) for a in attack_ids] + [adv_success_rate(s, a) for a in attack_ids]
        out += [corruption_accuracy(s, MEAN, sev) for sev in range(1, 6)]
        out += [corruption_accuracy(s, c, MEAN) for c in corruptions] + [corruption_ce(s, c) for c in corruptions]
    return out


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=n, cutoff=0.5)
