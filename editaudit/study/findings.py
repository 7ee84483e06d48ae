"""Brown et al. (2023)'s four findings, each a verdict computed from the study's numbers and their intervals, never
written by hand: "holds", "does not hold", "inconclusive" (the intervals cannot tell) or "not tested" (the study
lacks the runs the finding needs). The evidence string cites the numbers the verdict rests on. 1-LI runs are the
paper's remedy, not an edit under test: findings 1-3 leave them out and finding 4 is about them alone."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from editaudit.contracts.studies import INTERPOLATE
from editaudit.study.stats import (
    AUDIT_FLOOR_PREFIX,
    Stat,
    delta_stat,
    mean_delta,
    num,
    side,
    stat,
    stat_text,
    t_quantile,
)

WHOLE_MODEL = "finetune"
EQUIVALENT = 0.02  # robust-delta differences within ±2 points of accuracy: no difference worth a finding
CLAIMS = {
    "reduces_robustness": "Edits reduce general robustness (test-set adversarial and corruption accuracy).",
    "method_and_layer": "How much robustness an edit costs depends on the editing method and on the layer edited.",
    "constrained_better": "Constrained edits (one layer, low rank, rewrite) preserve robustness better than "
                          "whole-model fine-tuning.",
    "interpolation_tradeoff": "1-layer interpolation trades edit accuracy for robustness along a monotone path.",
}

Group = dict[str, Any]


@dataclass(frozen=True)
class Curve:
    """One 1-LI run's alpha path, sorted by alpha: (alpha, {test_acc, robust_acc, edit_acc, gen_acc})."""

    seed: Any
    robust_metric: str | None
    points: list[tuple[float, dict[str, float | None]]]
    alpha: float | None = None
    threshold: float | None = None


def findings(groups: list[Group], runs: list[dict[str, Any]], curves: dict[str, list[Curve]], key: str,
             tolerance: float, robust: list[str] | None = None) -> list[dict[str, str]]:
    edits = [g for g in groups if g["method"] != INTERPOLATE and g["n_succeeded"]]
    return [reduces_robustness(edits, runs, robust or []), method_and_layer(edits, runs),
            constrained_better(edits, runs), interpolation_tradeoff(groups, runs, curves, key, tolerance)]


def combine(verdicts: list[str]) -> str:
    """One verdict from the parts of a finding (its metrics, families or groups): all the same → that one; some
    hold → "holds in part" (the evidence says which); else inconclusive (or not tested when nothing was)."""
    tested = [v for v in verdicts if v != "not tested"]
    if not tested:
        return "not tested"
    if len(set(tested)) == 1 and len(tested) == len(verdicts):
        return tested[0]
    return "holds in part" if "holds" in tested else "inconclusive"


def delta_of(run: dict[str, Any], metric: str | None) -> dict[str, Any] | None:
    """A run's robust delta (metric None) or one robustness metric's delta, as {value, ci95}."""
    d = run["robust_delta"] if metric is None else (run.get("robust") or {}).get(metric)
    return d if d is not None and d.get("value") is not None else None


def pooled(groups: list[str], runs: list[dict[str, Any]], metric: str | None = None) -> dict[Any, dict[str, Any]]:
    """seed -> the named groups' mean delta {value, ci95} at that seed (robust delta, or `metric`'s), over the seeds
    where every group has a value (a group missing at a seed would change that seed's mean by who is in it, not by
    what editing did). One group: its run's delta at each seed."""
    names = set(groups)
    at: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["group"] in names and (d := delta_of(r, metric)) is not None:
            at[r["seed"]].append(d)
    return {seed: mean_delta(ds) for seed, ds in at.items() if len(ds) == len(names)}


def _over_seeds(cells: dict[Any, dict[str, Any]]) -> Stat:
    return delta_stat(cells.values())


def _shared(a: dict[Any, dict[str, Any]],
            b: dict[Any, dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(a[k], b[k]) for k in sorted(set(a) & set(b), key=str)]


def _names(groups: list[Group]) -> list[str]:
    return [g["group"] for g in groups]


def paired_groups(a: str, b: str, runs: list[dict[str, Any]],
                  metric: str | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(group a's delta, group b's) at each seed both ran: one baseline and one audit draw per seed, so the
    difference removes the seed's own spread."""
    return _shared(pooled([a], runs, metric), pooled([b], runs, metric))


def _finding(fid: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"id": fid, "claim": CLAIMS[fid], "verdict": verdict, "evidence": evidence}


def _cite(g: Group) -> str:
    return f"{g['group']} {stat_text(g['robust_delta'], signed=True)}"


def reduces_robustness(edits: list[Group], runs: list[dict[str, Any]], metrics: list[str]) -> dict[str, str]:
    """About edits in general, per robustness metric (each attack's accuracy, the corruption mean): per seed, the
    mean delta over every edit group (one baseline and one audit draw per seed), with a t interval over seeds (never
    narrower than the audits'): holds for a metric when it lies below 0, does not hold when above, inconclusive
    when it straddles 0. The finding holds when it holds for every metric, in part when for some (named)."""
    parts = {m: _over_seeds(pooled(_names(edits), runs, m)) for m in metrics}
    parts = {m: p for m, p in parts.items() if p["n"]}
    if not parts:
        return _finding("reduces_robustness", "not tested", "no edit group has a robustness delta")
    verdicts = {m: {"below": "holds", "above": "does not hold"}.get(side(p) or "", "inconclusive")
                for m, p in parts.items()}
    overall = _over_seeds(pooled(_names(edits), runs))
    rated = [(g, sd) for g in edits if (sd := side(g["robust_delta"]))]
    return _finding("reduces_robustness", combine(list(verdicts.values())),
                    "; ".join(f"{m}: {verdicts[m]}, Δ averaged over the {len(edits)} edit groups per seed "
                              f"{stat_text(p, signed=True)} over {p['n']} seed(s)" for m, p in parts.items())
                    + f"; robust Δ (their mean): {stat_text(overall, signed=True)}; per group: "
                    + "; ".join(f"{_cite(g)} ({sd} 0)" for g, sd in rated))


def paired_difference(pairs: list[tuple[dict[str, Any], dict[str, Any]]], comparisons: int) -> Stat:
    """a − b over seeds with a (1 − 0.05 / comparisons) t interval (Bonferroni: the family of comparisons keeps a
    5% error rate), never narrower than the runs' own audit intervals; one seed: the audits' CIs combined."""
    diffs = [x["value"] - y["value"] for x, y in pairs]
    halves = [max((x["ci95"][1] - x["ci95"][0]) / 2, (y["ci95"][1] - y["ci95"][0]) / 2)
              for x, y in pairs if x.get("ci95") and y.get("ci95")]
    if len(diffs) < 2:
        if not diffs or not halves:
            return stat(diffs)
        x, y = pairs[0]
        return {"mean": diffs[0], "lo": x["ci95"][0] - y["ci95"][1], "hi": x["ci95"][1] - y["ci95"][0], "n": 1,
                "interval": "audit ci95 (one seed: both audits' intervals, no correction)"}
    mean, n = statistics.fmean(diffs), len(diffs)
    half = t_quantile(1 - 0.025 / max(comparisons, 1), n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    floor = statistics.fmean(halves) if halves else 0.0
    return {"mean": mean, "lo": mean - max(half, floor), "hi": mean + max(half, floor), "n": n,
            "interval": (f"{AUDIT_FLOOR_PREFIX}floor: wider than the paired t)" if floor > half
                         else f"paired t, Bonferroni over {comparisons}" if comparisons > 1 else "paired t")}


def _compare(pairs: list[tuple[Group, Group]], runs: list[dict[str, Any]],
             what: str) -> tuple[bool | None, str]:
    """(True: some pair's paired difference excludes 0; False: every difference's interval lies within
    ±EQUIVALENT, shown equal; None: no pair, or the intervals are too wide to tell) and what shows it."""
    if not pairs:
        return None, f"{what}: not tested (no two groups to compare)"
    differences = [(a, b, paired_difference(paired_groups(a["group"], b["group"], runs), len(pairs)))
                   for a, b in pairs]
    rated = [(a, b, d) for a, b, d in differences if d["lo"] is not None]
    apart = [(a, b, d) for a, b, d in rated if side(d) in ("below", "above")]
    if not apart:
        equal = bool(rated) and all(-EQUIVALENT <= d["lo"] and d["hi"] <= EQUIVALENT for _, _, d in rated)
        return (False if equal else None), (
            f"{what}: none of {len(rated)} paired difference(s) excludes 0 (95% family-wise, Bonferroni over "
            f"{len(pairs)}); " + (f"all lie within ±{EQUIVALENT:g}: no difference" if equal else
                                  f"not all lie within ±{EQUIVALENT:g}: too wide to tell"))
    a, b, d = max(apart, key=lambda p: abs(p[2]["mean"]))
    return True, (f"{what}: {len(apart)} of {len(rated)} paired difference(s) exclude 0 (95% family-wise, "
                  f"Bonferroni over {len(pairs)}), largest {a['group']} − {b['group']} = "
                  f"{stat_text(d, signed=True)}")


def method_and_layer(edits: list[Group], runs: list[dict[str, Any]]) -> dict[str, str]:
    """Method: groups of different methods at the same layer (whole-model methods among themselves); layer: groups
    of one method and the same hyperparameters at different layers. Each comparison is the robust delta's
    difference paired by seed (the runs of a seed share their baseline and audit draws), with a Bonferroni-corrected
    interval over its family, so testing many pairs does not make a difference out of noise. Per family: holds when
    a difference is shown, does not hold when every difference is shown within ±EQUIVALENT (no detected difference
    is not evidence of none), inconclusive otherwise; the finding combines the two families (`combine`)."""
    rated = [g for g in edits if g["robust_delta"]["mean"] is not None]
    pairs = [(a, b) for i, a in enumerate(rated) for b in rated[i + 1:]]
    method = _compare([(a, b) for a, b in pairs if a["method"] != b["method"] and a["layers"] == b["layers"]], runs,
                      "method (same layer)")
    layer = _compare([(a, b) for a, b in pairs if a["method"] == b["method"] and a["varied"] == b["varied"]
                      and a["layers"] and b["layers"] and a["layers"] != b["layers"]], runs, "layer (same method)")
    verdicts = [{True: "holds", False: "does not hold", None: "inconclusive"}[found]
                if "not tested" not in text else "not tested" for found, text in (method, layer)]
    return _finding("method_and_layer", combine(verdicts), f"{method[1]}; {layer[1]}")


def constrained_better(edits: list[Group], runs: list[dict[str, Any]]) -> dict[str, str]:
    """Constrained = groups edited at a layer (a known depth); whole-model = `finetune`. Per seed, the constrained
    groups' mean robust delta minus finetune's (seeds where every group ran), with a paired t interval never
    narrower than the audits': holds when it lies above 0, does not hold when below, inconclusive when it straddles
    0. Each group's own paired difference is cited, uncorrected for the number of groups."""
    constrained = [g for g in edits if g["depth"] is not None]
    whole = [g for g in edits if g["method"] == WHOLE_MODEL]
    if not constrained or not whole:
        missing = "whole-model finetune group" if constrained else "constrained (single-layer) edit group"
        return _finding("constrained_better", "not tested", f"the study has no succeeded {missing}")
    base = pooled(_names(whole), runs)
    overall = paired_difference(_shared(pooled(_names(constrained), runs), base), 1)
    if overall["n"] == 0:
        return _finding("constrained_better", "not tested", "no seed has both a constrained and a finetune run")
    verdict = {"above": "holds", "below": "does not hold"}.get(side(overall) or "", "inconclusive")
    per_group = "; ".join(
        f"{_cite(g)} (paired {stat_text(paired_difference(_shared(pooled([g['group']], runs), base), 1), True)})"
        for g in constrained)
    return _finding("constrained_better", verdict,
                    f"constrained − finetune robust Δ, paired by seed: {stat_text(overall, signed=True)} over "
                    f"{overall['n']} seed(s) ({overall['interval'] or 'no interval'}); finetune: "
                    f"{'; '.join(_cite(g) for g in whole)}; each constrained group, paired, uncorrected: {per_group}")


def _monotone(c: Curve, tol: float) -> tuple[bool, str]:
    """Edit accuracy non-decreasing and robust accuracy non-increasing in alpha, within `tol` per step."""
    problems = []
    for (a0, p0), (a1, p1) in zip(c.points, c.points[1:], strict=False):
        e0, e1, r0, r1 = p0["edit_acc"], p1["edit_acc"], p0["robust_acc"], p1["robust_acc"]
        if e0 is not None and e1 is not None and e1 < e0 - tol:
            problems.append(f"edit acc falls {num(e0)}→{num(e1)} at α {a0:g}→{a1:g}")
        if r0 is not None and r1 is not None and r1 > r0 + tol:
            problems.append(f"robust acc rises {num(r0)}→{num(r1)} at α {a0:g}→{a1:g}")
    return not problems, f"seed {c.seed}: " + ("; ".join(problems) if problems else "monotone")


def _mean_path(paths: list[Curve]) -> Curve | None:
    """The seeds' paths averaged at the alphas every seed evaluated (the evenly spaced points every 1-LI audit
    stores): the path the finding is about. A single seed's path wobbles by a few images of the PGD subset."""
    if not paths:
        return None
    common = set.intersection(*({round(a, 6) for a, _ in c.points} for c in paths))
    points = []
    for alpha in sorted(common):
        at = [v for c in paths for a, v in c.points if round(a, 6) == alpha]
        values: dict[str, float | None] = {}
        for k in at[0]:
            present = [x for v in at if (x := v[k]) is not None]
            values[k] = statistics.fmean(present) if present else None
        points.append((alpha, values))
    return Curve(seed="mean", robust_metric=paths[0].robust_metric, points=points) if len(points) > 1 else None


def _accuracy_by_seed(group: str, runs: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """seed -> {value} of a group's run's accuracy (`key`: edit_acc, gen_acc)."""
    return {r["seed"]: {"value": r[key], "ci95": None} for r in runs
            if r["group"] == group and r["status"] == "succeeded" and r.get(key) is not None}


def interpolation_tradeoff(groups: list[Group], runs: list[dict[str, Any]], curves: dict[str, list[Curve]],
                           key: str, tol: float) -> dict[str, str]:
    """Per 1-LI group against its base group, paired by seed: it trades when its robust delta is higher than the
    base's (the paired gain's interval above 0), its accuracy (generalization, else edit) is not higher, and the
    path averaged over seeds is monotone (edit accuracy non-decreasing, robust accuracy non-increasing in alpha,
    within `tol` per step; seeds whose own path wobbles more are named). It goes against the finding when the gain
    lies below 0 or the mean path is not monotone; otherwise it shows no trade. Holds when every group trades, in
    part when some do, does not hold when every group goes against it."""
    by_name = {g["group"]: g for g in groups}
    outcomes: list[tuple[str, str]] = []
    for g in groups:
        if g["method"] != INTERPOLATE or not g["n_succeeded"]:
            continue
        base = by_name.get(g["base"] or "")
        paths = [c for c in curves.get(g["group"], []) if len(c.points) > 1]
        mean = _mean_path(paths)
        if base is None or not base["n_succeeded"]:
            continue
        k = key if g[key]["mean"] is not None and base[key]["mean"] is not None else "edit_acc"
        gain = paired_difference(paired_groups(g["group"], base["group"], runs), 1)
        acc = stat([a["value"] - b["value"] for a, b in _shared(_accuracy_by_seed(g["group"], runs, k),
                                                                  _accuracy_by_seed(base["group"], runs, k))])
        monotone, path = _monotone(mean, tol) if mean is not None else (True, "no alpha path stored")
        wobbly = [c.seed for c in paths if not _monotone(c, tol)[0]]
        where = side(gain)
        outcome = ("against" if where == "below" or not monotone else
                   "trades" if where == "above" and (acc["mean"] or 0.0) <= tol else "no trade shown")
        outcomes.append((outcome, f"{g['group']}: {outcome}; robust Δ gain over its base, paired "
                                  f"{stat_text(gain, True)}; {k.replace('_acc', '')} accuracy change "
                                  f"{stat_text(acc, True)}; "
                                  + path.replace("seed mean", f"mean path over {len(paths)} seed(s)", 1)
                                  + (f" (single seeds {wobbly} wobble by more than {tol:g} at some step: the path's "
                                     "robust accuracy is 1-LI's own PGD check on a test subset)" if wobbly else "")))
    if not outcomes:
        return _finding("interpolation_tradeoff", "not tested", "no succeeded 1-LI group with its base")
    verdict = combine(["holds" if o == "trades" else "does not hold" if o == "against" else "inconclusive"
                       for o, _ in outcomes])
    n_ok = sum(o == "trades" for o, _ in outcomes)
    return _finding("interpolation_tradeoff", verdict, f"{n_ok} of {len(outcomes)} 1-LI group(s) trade accuracy for "
                                                       f"robustness along a monotone path (tolerance {tol:g}): "
                                                       + " | ".join(text for _, text in outcomes))
