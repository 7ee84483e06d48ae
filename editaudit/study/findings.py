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
from editaudit.study.stats import AUDIT_CI, Stat, num, side, stat, stat_text, t_quantile

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
             tolerance: float) -> list[dict[str, str]]:
    edits = [g for g in groups if g["method"] != INTERPOLATE and g["n_succeeded"]]
    return [reduces_robustness(edits, runs), method_and_layer(edits, runs), constrained_better(edits, runs),
            interpolation_tradeoff(groups, curves, key, tolerance)]


def _finding(fid: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"id": fid, "claim": CLAIMS[fid], "verdict": verdict, "evidence": evidence}


def _cite(g: Group) -> str:
    return f"{g['group']} {stat_text(g['robust_delta'], signed=True)}"


def reduces_robustness(edits: list[Group], runs: list[dict[str, Any]]) -> dict[str, str]:
    """About edits in general: per seed, the mean robust delta over every edit group (one baseline and one audit
    draw per seed), with a t interval over seeds (never narrower than the audits'). Holds when it lies below 0,
    does not hold when above, inconclusive when it straddles 0. Each group's own interval is cited as well."""
    rated = [(g, s) for g in edits if (s := side(g["robust_delta"]))]
    per_seed = _by_seed(edits, runs)
    if not rated or not per_seed:
        return _finding("reduces_robustness", "not tested", "no edit group has a robust Δ with an interval")
    means, cis = [], []
    for ds in per_seed.values():
        means.append(statistics.fmean(d["value"] for d in ds))
        bounds = [d["ci95"] for d in ds if d.get("ci95")]
        cis.append((statistics.fmean(b[0] for b in bounds), statistics.fmean(b[1] for b in bounds))
                   if len(bounds) == len(ds) else None)
    pooled = stat(means, cis)
    where = side(pooled)
    verdict = {"below": "holds", "above": "does not hold"}.get(where or "", "inconclusive")
    below = sum(s == "below" for _, s in rated)
    above = sum(s == "above" for _, s in rated)
    cited = "; ".join(f"{_cite(g)} ({s} 0)" for g, s in rated)
    return _finding("reduces_robustness", verdict,
                    f"robust Δ averaged over the {len(edits)} edit groups, per seed: {stat_text(pooled, signed=True)} "
                    f"over {pooled['n']} seed(s) ({pooled['interval'] or 'no interval'}); per group, the interval "
                    f"lies below 0 in {below} of {len(rated)}, above 0 in {above}, straddles 0 in "
                    f"{len(rated) - below - above}: {cited}")


def _paired_runs(a: Group, b: Group, runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(a's robust delta, b's) at each seed both groups ran: one baseline and one audit draw per seed, so the
    difference removes the seed's own spread."""
    by = {g["group"]: {r["seed"]: r["robust_delta"] for r in runs if r["group"] == g["group"]
                       and r["robust_delta"]["value"] is not None} for g in (a, b)}
    shared = sorted(set(by[a["group"]]) & set(by[b["group"]]), key=str)
    return [(by[a["group"]][s], by[b["group"]][s]) for s in shared]


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
                "interval": AUDIT_CI}
    mean, n = statistics.fmean(diffs), len(diffs)
    half = t_quantile(1 - 0.025 / max(comparisons, 1), n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    floor = statistics.fmean(halves) if halves else 0.0
    return {"mean": mean, "lo": mean - max(half, floor), "hi": mean + max(half, floor), "n": n,
            "interval": f"paired t, Bonferroni over {comparisons}" + (" (audit ci95 floor)" if floor > half else "")}


def _compare(pairs: list[tuple[Group, Group]], runs: list[dict[str, Any]],
             what: str) -> tuple[bool | None, str]:
    """(True: some pair's paired difference excludes 0; False: every difference's interval lies within
    ±EQUIVALENT, shown equal; None: no pair, or the intervals are too wide to tell) and what shows it."""
    if not pairs:
        return None, f"{what}: not tested (no two groups to compare)"
    rated = [(a, b, d) for a, b in pairs if (d := paired_difference(_paired_runs(a, b, runs), len(pairs)))["lo"]
             is not None]
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
    """Method: groups of different methods; layer: groups of one method and the same hyperparameters at different
    layers (each family tested when the study has two such groups). Each comparison is the robust delta's
    difference paired by seed (the runs of a seed share their baseline and audit draws), with a Bonferroni-corrected
    interval over its family, so testing many pairs does not make a difference out of noise. Holds when every
    tested family finds one; does not hold when every tested family shows its differences within ±EQUIVALENT
    (absence of a detected difference is not evidence of none); inconclusive otherwise."""
    rated = [g for g in edits if g["robust_delta"]["mean"] is not None]
    pairs = [(a, b) for i, a in enumerate(rated) for b in rated[i + 1:]]
    method = _compare([(a, b) for a, b in pairs if a["method"] != b["method"]], runs, "method")
    layer = _compare([(a, b) for a, b in pairs if a["method"] == b["method"] and a["varied"] == b["varied"]
                      and a["layers"] and b["layers"] and a["layers"] != b["layers"]], runs, "layer (same method)")
    found = [m for m, text in (method, layer) if "not tested" not in text]
    verdict = ("not tested" if not found else "holds" if all(m is True for m in found) else
               "does not hold" if all(m is False for m in found) else "inconclusive")
    return _finding("method_and_layer", verdict, f"{method[1]}; {layer[1]}")


def _by_seed(groups: list[Group], runs: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    names = {g["group"] for g in groups}
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["group"] in names and r["robust_delta"]["value"] is not None:
            out[r["seed"]].append(r["robust_delta"])
    return out


def _paired(a: dict[Any, list[dict[str, Any]]], b: dict[Any, list[dict[str, Any]]]) -> Stat:
    """mean(a) - mean(b) per shared seed, with a t interval over seeds; for one seed the difference of the audits'
    CIs ([a.lo - b.hi, a.hi - b.lo]: conservative), when both sides have them."""
    seeds = sorted(set(a) & set(b), key=str)

    def mean(ds: list[dict[str, Any]], i: int | None = None) -> float:
        return statistics.fmean(d["value"] if i is None else d["ci95"][i] for d in ds)

    diffs = [mean(a[s]) - mean(b[s]) for s in seeds]
    if len(seeds) != 1:
        return stat(diffs)
    s = seeds[0]
    if not all(d["ci95"] for d in a[s] + b[s]):
        return stat(diffs)
    return {"mean": diffs[0], "lo": mean(a[s], 0) - mean(b[s], 1), "hi": mean(a[s], 1) - mean(b[s], 0), "n": 1,
            "interval": AUDIT_CI}


def constrained_better(edits: list[Group], runs: list[dict[str, Any]]) -> dict[str, str]:
    """Constrained = groups edited at a layer (a known depth); whole-model = `finetune`. Per seed, the constrained
    runs' mean robust delta minus finetune's: holds when that difference's interval lies above 0, does not hold when
    below, inconclusive when it straddles 0."""
    constrained = [g for g in edits if g["depth"] is not None]
    whole = [g for g in edits if g["method"] == WHOLE_MODEL]
    if not constrained or not whole:
        missing = "whole-model finetune group" if constrained else "constrained (single-layer) edit group"
        return _finding("constrained_better", "not tested", f"the study has no succeeded {missing}")
    base = _by_seed(whole, runs)
    overall = _paired(_by_seed(constrained, runs), base)
    if overall["n"] == 0:
        return _finding("constrained_better", "not tested", "no seed has both a constrained and a finetune run")
    where = side(overall)
    verdict = {"above": "holds", "below": "does not hold"}.get(where or "", "inconclusive")
    per_group = "; ".join(f"{_cite(g)} (paired {stat_text(_paired(_by_seed([g], runs), base), signed=True)})"
                          for g in constrained)
    return _finding("constrained_better", verdict,
                    f"constrained − finetune robust Δ, paired by seed: {stat_text(overall, signed=True)} over "
                    f"{overall['n']} seed(s) ({overall['interval'] or 'no interval'}); finetune: "
                    f"{'; '.join(_cite(g) for g in whole)}; constrained: {per_group}")


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


def interpolation_tradeoff(groups: list[Group], curves: dict[str, list[Curve]], key: str,
                           tol: float) -> dict[str, str]:
    """Per 1-LI group: against its base group, accuracy (generalization, else edit) no higher and robust delta no
    lower (within `tol`); along the alpha path averaged over seeds, edit accuracy non-decreasing and robust accuracy
    non-increasing in alpha (within `tol` per step; seeds whose own path wobbles more are named). Holds when every
    1-LI group passes its checks, does not hold when none does."""
    by_name = {g["group"]: g for g in groups}
    checked: list[tuple[bool, str]] = []
    for g in groups:
        if g["method"] != INTERPOLATE or not g["n_succeeded"]:
            continue
        checks = []
        base = by_name.get(g["base"] or "")
        if base is not None and base["n_succeeded"]:
            k = key if g[key]["mean"] is not None and base[key]["mean"] is not None else "edit_acc"
            acc, acc0 = g[k]["mean"], base[k]["mean"]
            rob, rob0 = g["robust_delta"]["mean"], base["robust_delta"]["mean"]
            if None not in (acc, acc0, rob, rob0):
                ok = acc <= acc0 + tol and rob >= rob0 - tol
                checks.append((ok, f"{k.replace('_acc', '')} acc {num(acc)} vs base {num(acc0)}, robust Δ "
                                   f"{num(rob, True)} vs {num(rob0, True)}"))
        paths = [c for c in curves.get(g["group"], []) if len(c.points) > 1]
        mean = _mean_path(paths)
        if mean is not None:
            ok, text = _monotone(mean, tol)
            wobbly = [c.seed for c in paths if not _monotone(c, tol)[0]]
            checks.append((ok, text.replace("seed mean", f"mean path over {len(paths)} seed(s)", 1)
                           + (f" (single seeds {wobbly} wobble by more than {tol:g} at some step: the path's PGD "
                              "accuracy is measured on a subset of the test split)" if wobbly else "")))
        if checks:
            good = all(ok for ok, _ in checks)
            checked.append((good, f"{g['group']}: {'; '.join(text for _, text in checks)}"))
    if not checked:
        return _finding("interpolation_tradeoff", "not tested", "no succeeded 1-LI group with a base or a path")
    n_ok = sum(ok for ok, _ in checked)
    verdict = "holds" if n_ok == len(checked) else "does not hold" if n_ok == 0 else "inconclusive"
    return _finding("interpolation_tradeoff", verdict, f"{n_ok} of {len(checked)} 1-LI group(s) trade accuracy for "
                                                       f"robustness monotonically (tolerance {tol:g}): "
                                                       + " | ".join(text for _, text in checked))
