"""Brown et al.'s study, small, on the bundled digits texture scenario, driven by the study grid contract
(editaudit/contracts/studies.py): every cell of the grid is one edit + audit run as the job runs it
(worker/ml/bundled.py run_as_job), each seed on its own baseline trained to convergence (build_case: smallcnn, 12 + 1
epochs, its train/test curve kept; 8 textured digits of one class with their clean twins). Each run becomes a row in
the shape the service builds from stored audits; editaudit.study summarises the rows (the findings) and renders the
page and its plots.

    python bench/study.py --out docs/study.md          # the page, its plots (docs/img/study_*.png) and the rows
    python bench/study.py --from-rows build/study_runs.json --out docs/study.md  # re-render without re-running

Deltas are edited - original on the same images (the test split's rest where the edit held out its locality set).
The audit: PGD-10 L-inf at eps 0.05 and the 15 corruptions at severities 1, 3, 5, seeded by the run's seed; the
baseline's evaluation is cached per seed and audited inputs, as the job's baseline cache does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from editaudit.contracts import metrics as M
from editaudit.contracts.studies import Cell, StudyGrid, expand
from editaudit.gate.evaluate import evaluate
from editaudit.gate.policy import builtin_policy
from editaudit.study.findings import delta_of, paired_difference, paired_groups
from editaudit.worker.ml.bundled import SCENARIOS, Case, build_case, run_as_job

AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 10, "step_size": 0.0125}],
         "corruptions": {"names": "all", "severities": [1, 3, 5]}}
METHODS = ["finetune", "finetune_layer", "low_rank", "rewrite", "enn"]
HYPERPARAMS = {"low_rank": {"rank": [1]}, "rewrite": {"rank": [1]}}
POLICY = "default"
PGD = M.adv_accuracy("test", "pgd")
CORR = M.corruption_accuracy("test")
PLOTS = {"pareto": "study_pareto.png", "by_depth": "study_by_depth.png", "alpha_curves": "study_alpha_curves.png"}


def grids(seeds: list[int], layers: list[str], interpolate: list[str] | None) -> list[StudyGrid]:
    """The study's grid; with `interpolate` naming only some bases, two grids (with and without 1-LI) whose cells
    are concatenated, since the contract's switch is all or nothing."""
    base = {"layers": layers, "seeds": seeds}
    if interpolate is None:
        return [StudyGrid(methods=METHODS, hyperparams=HYPERPARAMS, interpolate=True, **base)]
    with_li = [m for m in METHODS if m in interpolate]
    rest = [m for m in METHODS if m not in interpolate]
    return [StudyGrid(methods=ms, hyperparams={m: HYPERPARAMS[m] for m in ms if m in HYPERPARAMS}, interpolate=li,
                      **base) for ms, li in ((with_li, True), (rest, False)) if ms]


def depth_of(net: torch.nn.Module, layers: list[str]) -> float | None:
    """0..1: the edited layer's place among the modules that hold parameters of their own, in module order; None for
    whole-model methods."""
    if len(layers) != 1:
        return None
    names = [n for n, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return names.index(layers[0]) / (len(names) - 1) if layers[0] in names else None


def per_class(run, edit_class: int) -> dict[str, float]:
    """PGD and corruption-mean accuracy deltas on the edit class's test images and on the other classes'."""
    base, cand = run.baseline, run.candidate
    labels = np.asarray(base.labels["test"])
    corr = [n for n in base.preds if M.corruption_cell(n, "test")]
    out = {}
    for what, names in (("pgd", [PGD]), ("corruption", corr)):
        for group, sel in (("edit_class", labels == edit_class), ("others", labels != edit_class)):
            delta = [np.mean(np.asarray(cand.preds[n])[sel] == labels[sel])
                     - np.mean(np.asarray(base.preds[n])[sel] == labels[sel]) for n in names]
            out[f"{what}.{group}"] = float(np.mean(delta))
    return out


def clean(v):
    """JSON without NaN or infinities."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


def run_cell(index: int, cell: Cell, c: Case, evals: dict, device: str = "cpu") -> tuple[dict, dict]:
    """(the row, extras for the page: test n, per-class deltas, the edit's stop reason)."""
    row = {"index": index, "group": cell.group, "method": cell.method, "layers": list(cell.layers),
           "varied": cell.varied, "seed": cell.seed, "base": cell.base, "depth": depth_of(c.model.net, cell.layers),
           "edit_id": None, "audit_id": None, "status": "failed", "error": None, "baseline": None, "candidate": None,
           "deltas": {}, "durations_s": {}, "alpha": None, "alpha_curve": None, "gate": None}
    extra: dict = {"index": index}
    t0 = time.perf_counter()
    try:
        job = run_as_job(c.model, c.splits, cell.method, cell.layers, cell.hyperparams, seed=cell.seed,
                         audit=AUDIT, baseline_evals=evals, device=device)
        audit = job.audit.result
        gate = evaluate(audit, builtin_policy(POLICY), typos_are_usage=False)
        row.update(status="succeeded", baseline=dict(audit.metrics.baseline), candidate=dict(audit.metrics.candidate),
                   deltas={k: d.model_dump(mode="json") for k, d in audit.deltas.items()},
                   durations_s={"edit": job.durations_s["edit"], "audit": job.durations_s["audit"]},
                   alpha=audit.mli.alpha if audit.mli else None, threshold=audit.mli.threshold if audit.mli else None,
                   alpha_curve=[p.model_dump(mode="json") for p in audit.alpha_curve] if audit.alpha_curve else None,
                   gate={"verdict": gate.verdict, "failed": [r.metric for r in gate.rules if r.outcome == "fail"]})
        info = job.edited.info
        extra.update(n_test=audit.samples["test"].n, per_class=per_class(job.audit, c.edit_class),
                     stopped=str(info.get("stopped", info.get("alpha_search", "")) or ""),
                     mli=audit.mli.model_dump(mode="json") if audit.mli else None)
    except Exception as exc:  # noqa: BLE001 - one failed run is a failed row, not a failed study
        row.update(error=f"{type(exc).__name__}: {exc}", durations_s={"edit": time.perf_counter() - t0})
    return clean(row), clean(extra)


def run_study(args) -> dict:
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    cells = [cell for g in grids(args.seeds, args.layers, args.interpolate) for cell in expand(g)]
    rows, extras, seeds = [], [], []
    for seed in args.seeds:
        t_seed = time.perf_counter()
        c = build_case(args.scenario, seed, args.device)
        trained = time.perf_counter() - t_seed
        evals: dict = {}
        for index, cell in enumerate(cells):
            if cell.seed != seed:
                continue
            row, extra = run_cell(index, cell, c, evals, args.device)
            rows.append(row)
            extras.append(extra)
            d = row["deltas"]
            print(f"{time.perf_counter() - t0:6.0f}s  seed {seed}  {cell.group:40s} {row['status']:9s} "
                  + (f"edit {row['candidate']['edit.accuracy']:.3f}  PGD Δ {d[PGD]['value']:+.3f}  "
                     f"corr Δ {d[CORR]['value']:+.3f}  gate {row['gate']['verdict']}"
                     if row["status"] == "succeeded" else str(row["error"])), flush=True)
        full = max((r for r in rows if r["seed"] == seed and r["status"] == "succeeded"),
                   key=lambda r: next(e["n_test"] for e in extras if e["index"] == r["index"]), default=None)
        before = None
        if full:
            before = {k: full["baseline"].get(k) for k in ("test.accuracy", PGD, CORR, "generalization.accuracy",
                                                          "edit.accuracy")}
            before["n_test"] = next(e["n_test"] for e in extras if e["index"] == full["index"])
        seeds.append({"seed": seed, "edit_class": c.edit_class, "curve": c.curve, "train_s": trained,
                      "n": {k: len(v) for k, v in c.splits.items()}, "before": before})
        load.append(os.getloadavg()[0])
    order = sorted(range(len(rows)), key=lambda i: rows[i]["index"])
    took = time.perf_counter() - t0
    return {"meta": {"command": " ".join(["python", "bench/study.py", *sys.argv[1:]]),
                     "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                     "cores": os.cpu_count(), "device": args.device, "wall_s": took, "load_1min": load,
                     "scenario": args.scenario,
                     "seeds": args.seeds,
                     "layers": args.layers, "methods": METHODS, "hyperparams": HYPERPARAMS,
                     "interpolate": args.interpolate, "audit": AUDIT, "policy": POLICY, "cells": len(cells),
                     "per_seed": seeds},
            "runs": [rows[i] for i in order], "extras": [extras[i] for i in order]}


# --- the page ---------------------------------------------------------------------------------------------------------


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def mean_sd(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    text = f"{statistics.mean(vals):+.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:+.3f}"
    return text.replace("-", "−")


def f3(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def baseline_section(meta: dict) -> str:
    per = meta["per_seed"]
    sc = SCENARIOS[meta["scenario"]]
    curve_rows = [[str(e["epoch"]), *(f"{s['curve'][i]['train_accuracy']:.3f} / {s['curve'][i]['test_accuracy']:.3f}"
                                      for s in per)] for i, e in enumerate(per[0]["curve"])]
    before = [[str(s["seed"]), str(s["edit_class"]), str((s["before"] or {}).get("n_test", s["n"]["test"])),
               *(f3((s["before"] or {}).get(k)) for k in ("test.accuracy", PGD, CORR, "generalization.accuracy",
                                                           "edit.accuracy")), f"{s['train_s']:.0f}"] for s in per]
    return "\n\n".join([
        f"## The baseline\n\n{sc.describe}, one per seed, trained {sc.epochs} epochs at "
        f"lr {sc.lr:g} and {sc.settle_epochs} at lr {sc.lr / 10:g} to settle BatchNorm; train / test accuracy after "
        "each epoch:",
        md_table(["epoch", *(f"seed {s['seed']}" for s in per)], curve_rows),
        "Its robustness before any edit, on the test split (the audit's baseline side; PGD-10 L∞ ε = 0.05, "
        "corruptions = mean over the 15 at severities 1, 3, 5), and on the scenario's textured images of the edit "
        "class (generalization set) and the 8 edit exemplars:",
        md_table(["seed", "edit class", "n test", "clean", "PGD", "corruptions", "textured (gen.)", "edit set",
                  "training s"], before)])


def per_class_rows(runs: list[dict], extras: list[dict]) -> tuple[list[list[str]], int, int]:
    """Per group, PGD and corruption-mean accuracy Δ on the edit class's test images and on the other classes'
    (mean ± sd over seeds), and in how many runs the edit class gained PGD accuracy while the others lost it."""
    by_index = {e["index"]: e for e in extras}
    groups: dict[str, list[dict]] = {}
    for r in runs:
        if r["status"] == "succeeded" and by_index.get(r["index"], {}).get("per_class"):
            groups.setdefault(r["group"], []).append(by_index[r["index"]]["per_class"])
    keys = ["pgd.edit_class", "pgd.others", "corruption.edit_class", "corruption.others"]
    rows = [[f"`{g}`", *(mean_sd([pc[k] for pc in pcs]) for k in keys)] for g, pcs in groups.items()]
    split = sum(1 for pcs in groups.values() for pc in pcs if pc["pgd.edit_class"] > 0 > pc["pgd.others"])
    return rows, split, sum(len(pcs) for pcs in groups.values())


def _value(view: dict, metric: str | None) -> float | None:
    return (delta_of(view, metric) or {}).get("value")


def paired(views: list[dict], a: str, b: str, metric: str | None = None) -> dict:
    """Group a's robust Δ (or `metric`'s Δ) minus group b's, per seed (the same baseline, the same audit seed), with
    the t interval over seeds (uncorrected for how many are shown; never narrower than the runs' own audit
    intervals): the baseline's own seed-to-seed spread cancels."""
    pairs = paired_groups(a, b, views, metric)
    return paired_difference(pairs, 1) | {"per_seed": [x["value"] - y["value"] for x, y in pairs]}


def _paired_row(views: list[dict], metrics: list[str], a: str, b: str) -> list[str]:
    """`a − b` paired by seed: robust Δ, each metric's Δ (bold where the interval excludes 0), robust Δ per seed."""
    from editaudit.study.stats import num, side, stat_text

    cells = []
    for m in (None, *metrics):
        d = paired(views, a, b, m)
        text = stat_text(d, True)
        cells.append(f"**{text}**" if side(d) in ("below", "above") else text)
    return [f"`{a}` − `{b}`", *cells, " ".join(num(x, True) for x in paired(views, a, b)["per_seed"])]


def paired_header(metrics: list[str]) -> list[str]:
    short = {CORR: "corruption Δ", PGD: "PGD Δ"}
    return ["difference, paired by seed", "robust Δ", *(short.get(m, m) for m in metrics), "robust Δ per seed"]


def explain(summary: dict, runs: list[dict], extras: list[dict]) -> str:
    """For each finding that does not hold, the measurements that show why (computed here from the same runs)."""
    from editaudit.study.findings import constrained_better, reduces_robustness
    from editaudit.study.stats import T975, side

    views = summary["runs"]
    groups = [g for g in summary["groups"] if g["method"] != "interpolate" and g["n_succeeded"]]
    seeds = sorted({v["seed"] for v in views if v["status"] == "succeeded"})
    n = len(seeds)
    t = T975[n - 2] if n >= 2 else None
    out = ["## Behind the verdicts, measured",
           f"Intervals are 95% over {n} seeds: a group's is a Student t interval"
           + (f" (mean ± {t:.2f} · sd / √{n}: with {n} seeds about ±{t / n ** 0.5:.1f} sd of the seed-to-seed "
              "spread; the seeds are different baselines, see the baseline table)" if t else "")
           + ", widened to the runs' own audit interval where that is wider (marked †); finding 2's differences "
           "are Bonferroni-corrected over their family, as its evidence says. The tables below split the robust Δ "
           "(the mean of the PGD and the corruption Δ) into its parts, and compare runs paired by seed (same "
           "baseline, same audit seed), which removes the baseline's own spread; their intervals are uncorrected "
           "for the number of rows."]
    verdicts = {f["id"]: f["verdict"] for f in summary["findings"]}
    metrics = summary["robustness_metrics"]
    rows = []  # always shown: the finding's verdict is per metric, and the reader should see each
    if metrics:
        for m in metrics:
            sides = [side(g["robust"][m]) for g in groups]
            drops = sum(1 for v in views if v["method"] != "interpolate" and (_value(v, m) or 0) < 0)
            total = sum(1 for v in views if v["method"] != "interpolate" and _value(v, m) is not None)
            verdict = reduces_robustness(groups, views, [m])["verdict"]
            rows.append([f"`{m}`", str(sides.count("below")), str(sides.count("straddles")),
                         str(sides.count("above")), f"{drops} of {total}", f"**{verdict}**"])
        out += ["### 1. Edits reduce general robustness",
                f"Per robustness metric, how many of the {len(groups)} edit groups (1-LI left out) have their "
                "interval below 0, straddling it or above it, in how many single runs the metric fell, and the "
                "finding's verdict by its own rule applied to that metric alone; the section *Where the deltas sit* "
                "below splits each run's Δ into the edit's class and the others:",
                md_table(["metric", "below 0", "straddles 0", "above 0", "runs with a drop",
                          "verdict on this metric alone"], rows)]
    if verdicts.get("method_and_layer") != "holds":
        by_method: dict[str, list[dict]] = {}
        for g in groups:
            if g["layers"]:
                by_method.setdefault(f"{g['method']} {sorted(g['varied'].items())}", []).append(g)
        layer_rows = [_paired_row(views, metrics, a["group"], b["group"])
                      for gs in by_method.values() for i, a in enumerate(gs) for b in gs[i + 1:]]
        layers = sorted({g["layers"][0] for g in groups if g["layers"]}, key=lambda x: [g["depth"] for g in groups
                                                                                       if g["layers"] == [x]][0])
        method_rows = []
        for layer in layers:
            at = [g for g in groups if g["layers"] == [layer]]
            method_rows += [_paired_row(views, metrics, a["group"], b["group"]) for i, a in enumerate(at)
                            for b in at[i + 1:]]
        apart = [sum(1 for r in rs if r[1].startswith("**")) for rs in (layer_rows, method_rows)]
        out += ["### 2. The damage depends on the method and the layer",
                "The finding's test pairs the groups' robust Δ by seed (one baseline and one audit draw per seed) "
                "with a Bonferroni-corrected interval over each family of comparisons. Below, each difference with "
                f"its own, uncorrected 95% interval per metric: {apart[0]} of {len(layer_rows)} layer differences "
                f"and {apart[1]} of {len(method_rows)} method differences in robust Δ exclude 0 at that level. The "
                "same method at two layers (bold: the interval excludes 0):",
                md_table(paired_header(metrics), layer_rows),
                "and two methods at the same layer:", md_table(paired_header(metrics), method_rows)]
    if verdicts.get("constrained_better") != "holds":
        whole = [g for g in groups if g["method"] == "finetune"]
        rows = [_paired_row(views, metrics, g["group"], w["group"]) for w in whole for g in groups
                if g["depth"] is not None]
        kinds = []
        for method in dict.fromkeys(g["method"] for g in groups if g["depth"] is not None):
            f = constrained_better(whole + [g for g in groups if g["method"] == method], views)
            kinds.append(f"`{method}` alone: **{f['verdict']}** ({f['evidence'].split(';')[0]})")
        out += ["### 3. Constrained edits preserve robustness better than fine-tuning",
                "Each constrained group against whole-model `finetune`, paired by seed (bold: the uncorrected 95% "
                "interval excludes 0; > 0 = the constrained edit kept more robustness). A constraint in the paper's "
                "sense is one layer, a low rank or the rewrite objective; the rows show which of them the robustness "
                "follows:",
                md_table(paired_header(metrics), rows),
                "The finding's own rule applied to one constrained method at a time (its layers pooled, paired by "
                "seed with `finetune`):\n\n" + "\n".join(f"- {k}" for k in kinds)]
    mli = [e["mli"] for e in extras if e.get("mli")]
    if mli:
        flat = sum(1 for m in mli if not m["monotone"])
        grid = sum(1 for m in mli if str(m.get("search", "")).startswith("grid"))
        splits = sorted({str(m.get("target_split")) for m in mli})
        held = verdicts.get("interpolation_tradeoff") == "holds"
        out += ["### 4. 1-LI along its path",
                "The finding checks edit accuracy (non-decreasing) and PGD accuracy (non-increasing) along the path "
                "averaged over seeds at the evenly spaced alphas every 1-LI audit stores. The path's robust accuracy "
                "is 1-LI's own PGD-10 check (ε = `alpha.robust_eps`, 0.03, on 256 test images; not the audit's ε 0.05 "
                "over the whole split), so a single seed's path can wobble by a few images (the evidence names such "
                "seeds); whether 1-LI gains robustness over its base is judged on the audit's robust Δ, paired by "
                "seed. "
                + ("Every group traded. " if held else "The evidence says, per group, what it showed. ")
                + f"1-LI's own check (`mli.monotone`) is on the accuracy its alpha search drives "
                f"({', '.join(splits)}; tolerance one image, over every evaluated point): non-monotone on {flat} of "
                f"{len(mli)} 1-LI runs; the search itself met it and fell back to a grid on {grid}. The curves below "
                "average the seeds at the alphas every seed evaluated."]
    return "\n\n".join(out) if len(out) > 2 else ""  # the preamble alone: nothing to explain


def per_class_section(runs: list[dict], extras: list[dict]) -> str:
    rows, split, total = per_class_rows(runs, extras)
    return "\n\n".join([
        "## Where the deltas sit: the edit's class and the others",
        "PGD and corruption-mean accuracy Δ on the test images of the edit's class and on the other classes' (mean ± "
        "sd over seeds, from each run's per-sample outcomes). The edit teaches the edit class's textured images; in "
        f"{split} of {total} runs the edit class gained PGD accuracy while the other classes lost it, so a "
        "class-averaged Δ nets a loss on the classes the edit did not touch against a gain on the one it did.",
        md_table(["run", "PGD Δ edit class", "PGD Δ others", "corr. Δ edit class", "corr. Δ others"], rows)])


def insert_before(text: str, heading: str, block: str) -> str:
    """`block` before the section `heading` of the rendered summary (at the end when it has none)."""
    at = text.find(f"\n{heading}\n")
    return text + "\n" + block + "\n" if at < 0 else text[:at + 1] + block + "\n\n" + text[at + 1:]


def insert_after_note(text: str, heading: str, block: str) -> str:
    """`block` after the first paragraph of the section `heading` (its note); at the end when it has none."""
    at = text.find(f"\n{heading}\n\n")
    if at < 0:
        return text + "\n" + block + "\n"
    end = text.find("\n\n", at + len(heading) + 3)
    end = len(text) if end < 0 else end
    return text[:end] + "\n\n" + block + text[end:]


def render_page(doc: dict, out: Path, img_dir: Path) -> None:
    from editaudit.study import render
    from editaudit.study.summary import summarise

    meta, runs, extras = doc["meta"], doc["runs"], doc.get("extras", [])
    summary = summarise(runs, POLICY)
    img_dir.mkdir(parents=True, exist_ok=True)
    for key, png in render.plots(summary).items():
        (img_dir / PLOTS.get(key, f"study_{key}.png")).write_bytes(png)
    rel = Path(os.path.relpath(img_dir, out.parent)).as_posix()
    body = render.markdown(summary, {"name": f"{meta['scenario']} texture scenario, seeds "
                                             f"{' '.join(map(str, meta['seeds']))}"})
    body = body.split("\n", 1)[1].lstrip("\n")  # the page has its own title
    for heading, key, alt in (("## Pareto front", "pareto", "Pareto front"),
                              ("## Robustness change by layer depth", "by_depth", "robust Δ by layer depth"),
                              ("## 1-LI alpha curves", "alpha_curves", "1-LI alpha curves")):
        body = insert_after_note(body, heading, f"![{alt}]({rel}/{PLOTS[key]})")
    why = explain(summary, runs, extras)
    body = insert_before(body, "## Groups", (why + "\n\n" if why else "") + per_class_section(runs, extras))
    failed = [r for r in runs if r["status"] != "succeeded"]
    li = meta.get("interpolate")
    text = "\n\n".join([
        "# What editing costs: Brown et al.'s findings on the bundled scenario",
        "Brown et al. (2023, *Robustness of edited neural networks*) found that (1) edits reduce general robustness, "
        "(2) how much depends on the method and the layer edited, (3) constrained edits (one layer, low rank, "
        "rewrite) preserve robustness better than fine-tuning, and (4) 1-layer interpolation (1-LI) trades edit "
        "accuracy for robustness along a monotone path. This page tests each on the bundled texture scenario "
        f"`{meta['scenario']}` ({SCENARIOS[meta['scenario']].describe}; `worker/ml/bundled.py`: 8 textured images "
        "of one class with their clean twins, a concept in a "
        "new context; the generalization set is held-out textured images of that class). The grid is a study "
        "(`editaudit/contracts/studies.py`, what `POST /studies` runs on your model): methods "
        f"{', '.join(f'`{m}`' for m in meta['methods'])} (low_rank and rewrite at rank 1; finetune and enn edit "
        f"the whole model), layers {', '.join(f'`{x}`' for x in meta['layers'])}, seeds "
        f"{', '.join(map(str, meta['seeds']))}, and a 1-LI run for "
        + ("every single-layer run of an interpolation base" if li is None else
           f"the single-layer runs of {', '.join(f'`{m}`' for m in li) or 'no method'}")
        + ". Each run is an edit and its audit as the job runs them (`run_as_job`), each seed on its own baseline "
        "trained to convergence. The findings are computed by `editaudit.study` from the runs, not written by hand; "
        "robust Δ is the mean of the PGD-10 L∞ (ε = 0.05) and the corruption-mean accuracy Δ on the test split.",
        "The same grid runs through the service on any model and data it accepts (your own checkpoint, timm, Hugging "
        "Face, image folders): `examples/study.yaml` is this grid as a request, at 3 seeds (`editaudit study submit "
        "study.yaml --wait`, then `editaudit study report STUDY_ID -o study.html`; [api.md](api.md#studies)). "
        "Its runs are ordinary edits on the workers, and its report is rendered by the same `editaudit.study`. "
        "A larger scenario for a GPU, torchvision ResNet-18 on 3×64×64 shapes, is bundled: `python bench/study.py "
        "--scenario resnet18 --out study-resnet18.md` (CUDA when there is one).",
        f"Generated by `{meta['command']}` on {meta['date']}: torch {meta['torch']}, {meta['threads']} CPU threads "
        f"({meta['cores']} cores{', ' + meta['device'] if meta.get('device', 'cpu') != 'cpu' else ''}), "
        f"{meta['cells']} runs in **{meta['wall_s']:.0f} s** "
        f"({meta['wall_s'] / 60:.1f} min, baseline training included"
        + (f"; 1-minute load average {', '.join(f'{x:.1f}' for x in meta['load_1min'])} at the start and after each "
           f"seed, above the study's own {meta['threads']} threads: other jobs shared the cores"
           if max(meta.get("load_1min") or [0]) > meta["threads"] + 0.5 else "")
        + f"); failed runs: {len(failed)}"
        + ("." if not failed else " (" + "; ".join(f"`{r['group']}` seed {r['seed']}: {r['error']}"
                                                     for r in failed) + ")."),
        baseline_section(meta),
        body])
    out.write_text(text.rstrip() + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--layers", nargs="+", default=None, help="default: the scenario's study layers")
    ap.add_argument("--scenario", default="digits", choices=list(SCENARIOS))
    ap.add_argument("--interpolate", nargs="*", default=None, metavar="BASE",
                    help="the base methods that get a 1-LI run (default: every interpolation base)")
    ap.add_argument("--out", type=Path, help="write the page here (docs/study.md); its plots go to --img-dir")
    ap.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    ap.add_argument("--rows-out", type=Path, default=Path("build/study_runs.json"),
                    help="the runs as JSON, for --from-rows (~2 MB a seed: kept out of git)")
    ap.add_argument("--from-rows", type=Path, help="render from a rows file instead of running the study")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when there is one): training and runs")
    args = ap.parse_args()
    args.layers = args.layers or list(SCENARIOS[args.scenario].study_layers)
    args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.from_rows:
        doc = json.loads(args.from_rows.read_text())
    else:
        doc = run_study(args)
        args.rows_out.parent.mkdir(parents=True, exist_ok=True)
        args.rows_out.write_text(json.dumps(doc) + "\n")
        print(f"{len(doc['runs'])} runs in {doc['meta']['wall_s']:.0f} s; rows in {args.rows_out}", flush=True)
    if args.out:
        render_page(doc, args.out, args.img_dir)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
