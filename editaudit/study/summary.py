"""A finished study summarised: what each run and each group of seeds did to edit success and to general robustness,
with intervals, and which group to ship. Pure functions of the rows the service (and bench/study.py) build, one per
run:

    {"index", "group", "method", "layers", "varied", "seed", "base", "depth", "edit_id", "audit_id", "status",
     "error", "baseline": {metric: v}, "candidate": {metric: v}, "deltas": {metric: {"value", "ci95", "p_value"}},
     "durations_s": {"edit", "audit"}, "alpha", "alpha_curve": [{"alpha", "metrics"}], "threshold" (optional: the
     accuracy 1-LI's alpha had to reach), "gate": {"verdict", "failed"}}

Only succeeded runs carry numbers; the others are listed with their status and error and left out of every
statistic, so one failed run never fails the summary. The output is JSON-safe (NaN and infinities become None).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from editaudit.contracts import metrics as M
from editaudit.contracts.studies import INTERPOLATE
from editaudit.study.findings import Curve, findings
from editaudit.study.stats import Stat, ci, clipped, delta_stat, finite, mean_delta, num, stat

SUCCEEDED = "succeeded"
VERDICTS = ("pass", "warn", "fail")
# one test-set granularity (a test split of a few hundred images): differences smaller than this are noise
TOLERANCE = 0.005
EDIT_ACC, GEN_ACC, CLEAN = M.accuracy("edit"), M.accuracy("generalization"), M.accuracy("test")
CORRUPTION = M.corruption_accuracy("test")
ACCURACY_METRIC = {"gen_acc": GEN_ACC, "edit_acc": EDIT_ACC}

Row = dict[str, Any]


def summarise(runs: list[Row], policy_name: str | None = None, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Every section of the study's summary (see the module docstring for the rows; the report renders it)."""
    rows = sorted(runs, key=lambda r: r.get("index", 0))
    robust = robustness_metrics(rows)
    views = [_run(r, robust) for r in rows]
    groups = _groups(rows, views, robust)
    key = "gen_acc" if any(g["gen_acc"]["mean"] is not None for g in groups) else "edit_acc"
    curves = {g["group"]: [_curve(r) for r in rows if r.get("group") == g["group"] and _ok(r) and r.get("alpha_curve")]
              for g in groups if g["method"] == INTERPOLATE}
    return {
        "n_runs": len(rows),
        "counts": dict(Counter(str(r.get("status")) for r in rows)),
        "robustness_metrics": robust,
        "accuracy": key,
        "accuracy_metric": ACCURACY_METRIC[key],
        "tolerance": tolerance,
        "runs": views,
        "groups": groups,
        "pareto": pareto(groups, key),
        "by_depth": by_depth(rows, views),
        "alpha_curves": alpha_curves(groups, rows, curves),
        "policy": policy(groups, views, policy_name, key),
        "findings": findings(groups, views, curves, key, tolerance, robust),
    }


def robustness_metrics(rows: list[Row]) -> list[str]:
    """What "general robustness" averages: every test-set attack's accuracy and the overall corruption mean, as far
    as the succeeded audits measured them (a study without corruptions averages its attacks alone)."""
    names: set[str] = set()
    for r in rows:
        if _ok(r):
            names |= set(r.get("deltas") or {})
    return sorted(n for n in names if n == CORRUPTION or ((m := M.parse(n)) is not None and m.split == "test"
                                                            and m.measure == "adv" and m.stat == "accuracy"))


def _ok(row: Row) -> bool:
    return row.get("status") == SUCCEEDED


def _delta(row: Row, name: str) -> dict[str, Any]:
    d = (row.get("deltas") or {}).get(name) or {}
    bounds = ci(d.get("ci95"))
    return {"value": finite(d.get("value")), "ci95": list(bounds) if bounds else None}


def _robust_delta(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of the robustness deltas; its CI the mean of their CIs when all have one (exact if the metrics moved
    together, wider than the truth otherwise: a conservative band for one seed)."""
    present = [d for d in deltas if d["value"] is not None]
    if not present:
        return {"value": None, "ci95": None}
    value = statistics.fmean(d["value"] for d in present)
    if all(d["ci95"] for d in present):
        return {"value": value, "ci95": [statistics.fmean(d["ci95"][0] for d in present),
                                         statistics.fmean(d["ci95"][1] for d in present)]}
    return {"value": value, "ci95": None}


def _run(row: Row, robust: list[str]) -> dict[str, Any]:
    ok = _ok(row)
    cand = (row.get("candidate") or {}) if ok else {}
    deltas = {n: _delta(row, n) for n in robust} if ok else {}
    durations = row.get("durations_s") or {}
    spent = [v for v in (finite(durations.get("edit")), finite(durations.get("audit"))) if v is not None]
    gate = row.get("gate") or {}
    return {
        "index": row.get("index"), "group": row.get("group"), "method": row.get("method"), "seed": row.get("seed"),
        "status": row.get("status"), "error": row.get("error"), "edit_id": row.get("edit_id"),
        "audit_id": row.get("audit_id"),
        "edit_acc": finite(cand.get(EDIT_ACC)), "gen_acc": finite(cand.get(GEN_ACC)),
        "clean_delta": _delta(row, CLEAN) if ok else {"value": None, "ci95": None},
        "robust": deltas, "robust_delta": _robust_delta(list(deltas.values())),
        "collapse": finite(cand.get(M.collapse("test"))),
        "top_class_share": finite(cand.get(M.top_class_share("test"))),
        "edit_class_share": finite(cand.get(M.edit_class_share("test"))),
        "cost_s": sum(spent) if spent else None,
        "verdict": gate.get("verdict") if ok else None, "failed": list(gate.get("failed") or []) if ok else [],
        "alpha": finite(row.get("alpha")) if ok else None,
    }


def _values(runs: list[dict[str, Any]], key: str) -> Stat:
    """Accuracies and shares stay in [0, 1]; cost is only bounded below."""
    s = stat([r[key] for r in runs])
    return clipped(s, 0.0, math.inf) if key == "cost_s" else clipped(s)


def _groups(rows: list[Row], views: list[dict[str, Any]], robust: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r.get("group") for r in rows):
        members = [(r, v) for r, v in zip(rows, views, strict=True) if r.get("group") == name]
        first = members[0][0]
        ok = [v for _, v in members if v["status"] == SUCCEEDED]
        gated = Counter(v["verdict"] if v["verdict"] in VERDICTS else "ungated" for v in ok)
        counts = {k: gated.get(k, 0) for k in (*VERDICTS, "ungated")}
        # a group passes only when every one of its runs succeeded and passed: a seed that failed, was canceled or
        # is still running is a seed the recommendation has not seen
        verdict = ("fail" if counts["fail"] else "warn" if counts["warn"] else
                   "incomplete" if len(ok) < len(members) else "pass" if ok and counts["pass"] == len(ok) else None)
        out.append({
            "group": name, "method": first.get("method"), "layers": list(first.get("layers") or []),
            "depth": finite(first.get("depth")), "base": first.get("base"), "varied": first.get("varied") or {},
            "n_runs": len(members), "n_succeeded": len(ok), "seeds": [v["seed"] for v in ok],
            "edit_acc": _values(ok, "edit_acc"), "gen_acc": _values(ok, "gen_acc"),
            "clean_delta": delta_stat([v["clean_delta"] for v in ok]),
            "robust_delta": delta_stat([v["robust_delta"] for v in ok]),
            "robust": {n: delta_stat([v["robust"].get(n) for v in ok]) for n in robust},
            "collapse": _values(ok, "collapse"), "cost_s": _values(ok, "cost_s"),
            "policy": counts, "verdict": verdict, "on_front": None,
        })
    return out


def pareto(groups: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Groups no other group beats on both accuracy (generalization, else edit; higher is better) and robust delta
    (higher is better). Marks each group's `on_front` (None: it lacks one of the two numbers)."""
    points = [{"group": g["group"], "method": g["method"], "accuracy": g[key], "robust_delta": g["robust_delta"]}
              for g in groups if g[key]["mean"] is not None and g["robust_delta"]["mean"] is not None]

    def xy(p: dict[str, Any]) -> tuple[float, float]:
        return p["robust_delta"]["mean"], p["accuracy"]["mean"]

    for p in points:
        (x, y) = xy(p)
        p["on_front"] = not any(qx >= x and qy >= y and (qx, qy) != (x, y) for qx, qy in map(xy, points))
    marks = {p["group"]: p["on_front"] for p in points}
    for g in groups:
        g["on_front"] = marks.get(g["group"])
    front = sorted((p for p in points if p["on_front"]), key=xy)
    return {"accuracy": key, "accuracy_metric": ACCURACY_METRIC[key], "robust": "robust_delta", "points": points,
            "front": [p["group"] for p in front]}


def by_depth(rows: list[Row], views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Robustness change by layer depth: per (method, layer) edited at a known depth, the robust delta over its
    succeeded runs (every hyperparameter set and seed pooled), sorted by depth."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for r, v in zip(rows, views, strict=True):
        depth = finite(r.get("depth"))
        if depth is None:
            continue
        cell = cells.setdefault((str(r.get("method")), " ".join(r.get("layers") or [])),
                                {"depth": depth, "runs": [], "groups": []})
        if r.get("group") not in cell["groups"]:
            cell["groups"].append(r.get("group"))
        if v["status"] == SUCCEEDED:
            cell["runs"].append(v)
    out = [{"method": method, "layer": layer, "depth": c["depth"], "groups": c["groups"],
            "robust_delta": _per_seed(c["runs"])} for (method, layer), c in cells.items()]
    return sorted(out, key=lambda e: (e["depth"], e["method"], e["layer"]))


def _per_seed(runs: list[dict[str, Any]]) -> Stat:
    """The cell's robust delta averaged per seed first (its groups share each seed's baseline and audit draw, so
    they are not independent samples), then a t interval over seeds."""
    by_seed: dict[Any, list[dict[str, Any]]] = {}
    for v in runs:
        if v["robust_delta"]["value"] is not None:
            by_seed.setdefault(v["seed"], []).append(v["robust_delta"])
    return delta_stat(mean_delta(ds) for ds in by_seed.values())


def _curve(row: Row) -> Curve:
    """One 1-LI run's path sorted by alpha: (alpha, {test, robust, edit, gen accuracy}); robust = the curve's first
    test-set attack accuracy."""
    points = [p for p in row.get("alpha_curve") or [] if finite(p.get("alpha")) is not None]
    names = sorted({n for p in points for n in p.get("metrics") or {}})
    adv = next((n for n in names if (m := M.parse(n)) and m.split == "test" and m.measure == "adv"
                and m.stat == "accuracy"), None)
    path = []
    for p in sorted(points, key=lambda p: p["alpha"]):
        got = p.get("metrics") or {}
        path.append((float(p["alpha"]), {"test_acc": finite(got.get(CLEAN)), "robust_acc": finite(got.get(adv or "")),
                                         "edit_acc": finite(got.get(EDIT_ACC)), "gen_acc": finite(got.get(GEN_ACC))}))
    return Curve(seed=row.get("seed"), robust_metric=adv, points=path, alpha=finite(row.get("alpha")),
                 threshold=finite(row.get("threshold")))


def alpha_curves(groups: list[dict[str, Any]], rows: list[Row], curves: dict[str, list[Curve]]) -> list[dict[str, Any]]:
    """Per 1-LI group: its path averaged over seeds at the alphas every seed evaluated (the evenly spaced points
    each 1-LI audit stores; a bisection's own points differ per seed, and a mean over whichever seeds happened to
    visit an alpha would draw dips no seed's path has), the alpha each seed chose and the threshold it had to
    reach."""
    out = []
    for g in groups:
        if g["method"] != INTERPOLATE:
            continue
        runs = [r for r in rows if r.get("group") == g["group"] and _ok(r)]
        found = curves.get(g["group"], [])
        buckets: dict[float, list[dict[str, float | None]]] = {}
        for c in found:
            for alpha, values in c.points:
                buckets.setdefault(round(alpha, 6), []).append(values)
        points = []
        for alpha in sorted(buckets):
            at = buckets[alpha]
            if len(at) < len(found):
                continue
            points.append({"alpha": alpha, "n": len(at), **{k: _mean([v[k] for v in at]) for k in at[0]}})
        thresholds = [t for t in (finite(r.get("threshold")) for r in runs) if t is not None]
        out.append({"group": g["group"], "base": g["base"],
                    "robust_metric": next((c.robust_metric for c in found if c.robust_metric), None),
                    "points": points,
                    "chosen": [{"seed": r.get("seed"), "alpha": finite(r.get("alpha")),
                                "threshold": finite(r.get("threshold"))} for r in runs],
                    "threshold": _mean(thresholds)})
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def policy(groups: list[dict[str, Any]], views: list[dict[str, Any]], name: str | None,
           key: str) -> dict[str, Any]:
    """The gate's verdict per run and per group, and the recommendation: among groups whose every run succeeded
    and passed, the highest mean accuracy (generalization, else edit), ties broken by robust delta."""
    out: dict[str, Any] = {
        "name": name,
        "runs": [{"index": v["index"], "group": v["group"], "status": v["status"], "verdict": v["verdict"],
                  "failed": v["failed"]} for v in views],
        "groups": {g["group"]: g["verdict"] for g in groups},
    }
    blocked = Counter(rule for v in views if v["verdict"] in ("warn", "fail") for rule in v["failed"])
    out["blocked_by"] = dict(blocked.most_common())
    passing = [g for g in groups if g["verdict"] == "pass"]
    label = "generalization" if key == "gen_acc" else "edit"
    if passing:
        def rank(g: dict[str, Any]) -> tuple[float, float]:
            acc, rob = g[key]["mean"], g["robust_delta"]["mean"]
            return (-math.inf if acc is None else acc, -math.inf if rob is None else rob)

        best = max(passing, key=rank)
        out["recommended"] = best["group"]
        out["reason"] = (f"highest mean {label} accuracy ({num(best[key]['mean'])}, robust Δ "
                         f"{num(best['robust_delta']['mean'], True)}) among {len(passing)} group(s) whose every "
                         f"run succeeded and passed {_policy_name(name)}")
        return out
    out["recommended"] = None
    succeeded = [v for v in views if v["status"] == SUCCEEDED]
    gated = [v for v in succeeded if v["verdict"] in VERDICTS]
    if not succeeded:
        out["reason"] = "no run succeeded"
    elif not gated:
        out["reason"] = "no run was gated: there is no policy to recommend against"
    elif any(g["verdict"] == "incomplete" for g in groups) and not blocked:
        out["reason"] = "no group has every run succeeded and passed yet (runs failed, were canceled or are running)"
    elif blocked:
        rule, n = blocked.most_common(1)[0]
        out["reason"] = (f"no group passed {_policy_name(name)} on every run; rule `{rule}` blocked most runs "
                         f"({n} of {len(gated)} gated runs)")
    else:
        out["reason"] = f"no group passed {_policy_name(name)} on every run (the gates named no rule)"
    return out


def _policy_name(name: str | None) -> str:
    return f"policy `{name}`" if name else "the policy"
