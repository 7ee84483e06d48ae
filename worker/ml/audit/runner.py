"""Audit a candidate (edited) model against its baseline on the test / edit / generalization splits.

Each model is evaluated on its own (`evaluate_model`) into per-sample outcomes: that is what the baseline cache
stores, and what makes paired statistics possible. `compare` turns two evaluations into the metrics and deltas named
by editaudit.contracts.metrics (accuracy, agreement, drawdown, adversarial and corruption accuracies and their
aggregates, corruption errors relative to the baseline); `run_audit` returns them as the contract's AuditResult
(editaudit.contracts.audit_result) with the baseline's evaluation beside it.
Random draws (attack starts, corruptions) are seeded per split, attack/corruption and batch, never per model, so
both models face the same inputs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from editaudit.contracts import metrics as M
from editaudit.contracts.attacks import EpsAttack
from editaudit.contracts.audit import CORRUPTION_NAMES, AuditConfig
from editaudit.contracts.audit_result import AuditResult, SplitSamples
from editaudit.worker.ml.audit.attacks import make_attack
from editaudit.worker.ml.audit.fastpath import prepare_model, to_device
from editaudit.worker.ml.audit.stats import (
    AGGREGATE_METHOD,
    SINGLE_METHOD,
    aggregate_accuracy_delta,
    newcombe_difference,
    paired_accuracy_delta,
    wilson,
)
from editaudit.worker.ml.data import TensorDataset, stratified_indices

Progress = Callable[[str, int, int], None]


def _seed(*parts) -> int:
    """A stable 63-bit seed from its parts (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


@dataclass
class Evaluation:
    """One model's per-sample outcomes on the audit's inputs."""

    correct: dict[str, list[bool]] = field(default_factory=dict)  # metric name -> correctness per sample
    preds: dict[str, list[int]] = field(default_factory=dict)  # split -> clean predictions
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # <split>.adv.<id> -> {eps, accuracy}
    durations_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Evaluation:
        return cls(**d)


def plan_units(splits: dict[str, TensorDataset], cfg: AuditConfig) -> int:
    """Batches one model's evaluation runs: the progress total."""
    per_batch = 1 + sum(len(a.radii()) for a in cfg.attacks)
    if cfg.corruptions is not None:
        per_batch += len(cfg.corruptions.resolved_names) * len(cfg.corruptions.severities)
    return sum(-(-min(len(ds), cfg.max_samples or len(ds)) // cfg.batch_size) for ds in splits.values()) * per_batch


def _batches(ds: TensorDataset, batch_size: int, device: torch.device):
    """(index, images on `device` as float32, labels): uint8 images are converted here, one batch at a time."""
    for b, i in enumerate(range(0, len(ds), batch_size)):
        yield b, ds.images(slice(i, i + batch_size), device), ds.y[i : i + batch_size]


def evaluate_model(model: nn.Module, splits: dict[str, TensorDataset], cfg: AuditConfig, device: torch.device,
                   tick: Callable[[], None] = lambda: None) -> Evaluation:
    eager, fast = prepare_model(model, device, cfg.compile, sum(len(d) for d in splits.values()))
    ev = Evaluation()
    for split, ds in splits.items():
        y = ds.y
        t0 = time.perf_counter()
        preds = []
        with torch.no_grad():
            for _, xb, _ in _batches(ds, cfg.batch_size, device):
                preds.append(fast(to_device(xb, device)).argmax(1).cpu())
                tick()
        pred = torch.cat(preds)
        ev.preds[split] = pred.tolist()
        ev.correct[M.accuracy(split)] = (pred == y).tolist()
        ev.durations_s[f"{split}.clean"] = time.perf_counter() - t0

        for params in cfg.attacks:
            t0 = time.perf_counter()
            net = fast if params.native else eager  # ART attacks need the eager module
            radii = params.radii()
            accs = []
            for k, eps in enumerate(radii):
                if k == 0:
                    p = params
                else:  # a sweep: only a norm-bounded attack has more than one radius
                    assert isinstance(params, EpsAttack) and eps is not None
                    p = params.at_eps(eps)
                attack, outcome = make_attack(p), []
                for b, xb, yb in _batches(ds, cfg.batch_size, device):
                    xb, yb = to_device(xb, device), yb.to(device)
                    gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, p.seed, split, p.id, k, b))
                    x_adv = attack.perturb(net, xb, yb, gen)
                    with torch.no_grad():
                        outcome.append((fast(x_adv).argmax(1) == yb).cpu())
                    tick()
                ok = torch.cat(outcome)
                if k == 0:
                    ev.correct[M.adv_accuracy(split, params.id)] = ok.tolist()
                accs.append(_mean(ok.tolist()))
            if len(radii) > 1:
                order = np.argsort(np.asarray(radii, dtype=float))
                ev.curves[M.adv_key(split, params.id)] = {"eps": [radii[i] for i in order],
                                                         "accuracy": [accs[i] for i in order]}
            ev.durations_s[M.adv_key(split, params.id)] = time.perf_counter() - t0

        if cfg.corruptions is not None:
            from editaudit.worker.ml.audit.corruptions import corrupt

            t0 = time.perf_counter()
            for name in cfg.corruptions.resolved_names:
                for sev in cfg.corruptions.severities:
                    outcome = []
                    for b, xb, yb in _batches(ds, cfg.batch_size, device):
                        xb = to_device(xb, device)
                        gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, split, name, sev, b))
                        with torch.no_grad():
                            outcome.append(fast(corrupt(xb, name, sev, gen)).argmax(1).cpu() == yb)
                        tick()
                    ev.correct[M.corruption_accuracy(split, name, sev)] = torch.cat(outcome).tolist()
            _aggregate_corruptions(ev.correct, split, cfg)
            ev.durations_s[f"{split}.corruption"] = time.perf_counter() - t0
    return ev


def _aggregate_corruptions(correct: dict, split: str, cfg: AuditConfig) -> None:
    """Means as concatenated per-sample outcomes, so they get paired statistics like any other accuracy."""
    assert cfg.corruptions is not None  # called for an audit that ran corruptions
    names, sevs = cfg.corruptions.resolved_names, cfg.corruptions.severities
    cell = lambda n, s: correct[M.corruption_accuracy(split, n, s)]  # noqa: E731
    for n in names:
        correct[M.corruption_accuracy(split, n, M.MEAN)] = [v for s in sevs for v in cell(n, s)]
    for s in sevs:
        correct[M.corruption_accuracy(split, M.MEAN, s)] = [v for n in names for v in cell(n, s)]
    correct[M.corruption_accuracy(split)] = [v for n in names for s in sevs for v in cell(n, s)]


def _mean(v: list[bool]) -> float:
    return sum(v) / len(v) if v else float("nan")


def compare(base: Evaluation, cand: Evaluation) -> dict:
    metrics: dict = {"baseline": {}, "candidate": {}}
    intervals: dict = {"baseline": {}, "candidate": {}}  # 95% Wilson interval of each accuracy
    deltas: dict = {}
    for name, b in base.correct.items():
        c = cand.correct[name]
        metrics["baseline"][name], metrics["candidate"][name] = _mean(b), _mean(c)
        intervals["baseline"][name], intervals["candidate"][name] = wilson(sum(b), len(b)), wilson(sum(c), len(c))
        parsed = M.parse(name)
        assert parsed is not None  # the evaluation names its metrics with editaudit.contracts.metrics
        deltas[name] = aggregate_accuracy_delta(b, c, len(base.preds[parsed.split])) if parsed.aggregate \
            else paired_accuracy_delta(b, c)
    for split in base.preds:  # drawdown (Sinitsin et al. 2020): accuracy lost by the edit, baseline - candidate
        d, name = deltas[M.accuracy(split)], M.drawdown(split)
        metrics["baseline"][name], metrics["candidate"][name] = 0.0, -d["value"]
        deltas[name] = {"value": -d["value"], "ci95": [-d["ci95"][1], -d["ci95"][0]],
                                       "p_value": d["p_value"]}
    for split, bp in base.preds.items():
        cp = cand.preds[split]
        agree = sum(p == q for p, q in zip(bp, cp, strict=True))  # both models' predictions on the same inputs
        name = M.agreement(split)
        metrics["baseline"][name], metrics["candidate"][name] = 1.0, agree / len(bp)
        lo, hi = wilson(agree, len(bp))
        deltas[name] = {"value": agree / len(bp) - 1.0, "ci95": [lo - 1.0, hi - 1.0], "p_value": None}
        _corruption_errors(metrics, split)
        name = M.top_class_share(split)
        metrics["baseline"][name], metrics["candidate"][name] = _top_share(bp), _top_share(cp)
        deltas[name] = {"value": _top_share(cp) - _top_share(bp), "ci95": None, "p_value": None}
    for name in list(base.correct):
        m = M.parse(name)
        if m is None or m.measure != "adv" or m.attack is None:
            continue
        clean = M.accuracy(m.split)
        rates = [_success_rate(ev.correct[clean], ev.correct[name]) for ev in (base, cand)]
        rate_name = M.adv_success_rate(m.split, m.attack)
        metrics["baseline"][rate_name], metrics["candidate"][rate_name] = (r[0] for r in rates)
        deltas[rate_name] = newcombe_difference(rates[1], rates[0])
    curves = {k: {"eps": v["eps"], "baseline": v["accuracy"], "candidate": cand.curves[k]["accuracy"]}
              for k, v in base.curves.items()}
    return {"metrics": metrics, "intervals": intervals, "deltas": deltas, "curves": curves}


def _top_share(preds: list[int]) -> float:
    """The share of inputs predicted as the most predicted class."""
    return max(np.bincount(np.asarray(preds, dtype=np.int64))) / len(preds)


def _success_rate(clean: list[bool], robust: list[bool]) -> tuple[float | None, int, int]:
    """(rate, flipped, clean-correct): the share of clean-correct inputs the attack flips."""
    right = sum(clean)
    flipped = sum(1 for c, r in zip(clean, robust, strict=True) if c and not r)
    return (flipped / right if right else None), flipped, right


def collapse_notes(metrics: dict, splits) -> list[str]:
    """A candidate that predicts one class for most test inputs, where the baseline did not: its robust accuracy
    can rise (a constant model cannot be attacked), so say so where a reader looks first."""
    notes = []
    for split in (s for s in splits if s == "test"):  # edit sets are one class by construction
        name = M.top_class_share(split)
        b, c = metrics["baseline"].get(name), metrics["candidate"].get(name)
        if c is not None and c >= 0.5 and c >= b + 0.25:
            notes.append(f"COLLAPSED: the candidate predicts one class for {c:.0%} of {split} inputs (baseline "
                         f"{b:.0%}); read robust accuracy with its success rate ({split}.adv.<id>.success_rate)")
    return notes


def _corruption_errors(metrics: dict, split: str) -> None:
    """CE of each type = sum over severities of the candidate's error / the baseline's; mCE = their mean."""
    cells: dict[str, list[str]] = {}  # type -> its per-severity accuracy names
    for name in metrics["baseline"]:
        cell = M.corruption_cell(name, split)
        if cell:
            cells.setdefault(cell[0], []).append(name)
    ces = []
    for n in (n for n in CORRUPTION_NAMES if n in cells):
        err_b = sum(1 - metrics["baseline"][k] for k in cells[n])
        err_c = sum(1 - metrics["candidate"][k] for k in cells[n])
        if err_b == 0:  # no baseline error to compare against: CE is undefined, leave it out
            continue
        ce = err_c / err_b
        metrics["baseline"][M.corruption_ce(split, n)], metrics["candidate"][M.corruption_ce(split, n)] = 1.0, ce
        ces.append(ce)
    if ces:
        metrics["baseline"][M.corruption_ce(split)] = 1.0
        metrics["candidate"][M.corruption_ce(split)] = sum(ces) / len(ces)


def subset(splits: dict[str, TensorDataset], cfg: AuditConfig) -> tuple[dict[str, TensorDataset],
                                                                        dict[str, SplitSamples]]:
    """Apply `max_samples` (stratified, seeded) and record which samples were used."""
    out, samples = {}, {}
    for name, ds in splits.items():
        idx = stratified_indices(ds.y.numpy(), cfg.max_samples, _seed(cfg.seed, name) % 2**32)
        out[name] = ds.take(idx, f"audit:{cfg.seed}:{cfg.max_samples}")
        samples[name] = SplitSamples(n=len(idx), of=len(ds), ids=idx.tolist() if len(idx) < len(ds) else None)
    return out, samples


class AuditRun(NamedTuple):
    """What `run_audit` returns: the result, and the baseline's evaluation beside it (what the baseline cache
    stores; pass it back as `baseline_eval` to audit another candidate of the same model on the same inputs)."""

    result: AuditResult
    baseline: Evaluation


def run_audit(baseline: nn.Module, candidate: nn.Module, splits: dict[str, TensorDataset],
              config: dict | AuditConfig, device: torch.device | str = "cpu", progress: Progress = lambda *_: None,
              baseline_eval: Evaluation | None = None) -> AuditRun:
    """The whole audit. Pass `baseline_eval` (from the cache) to skip re-evaluating the baseline."""
    cfg = config if isinstance(config, AuditConfig) else AuditConfig.model_validate(config)
    device = torch.device(device)
    splits, samples = subset(splits, cfg)
    units = plan_units(splits, cfg)
    total, done = units * (1 if baseline_eval is not None else 2), 0

    def tick():
        nonlocal done
        done += 1
        progress("auditing", done, total)

    t0 = time.perf_counter()
    cached = baseline_eval is not None
    base = baseline_eval if baseline_eval is not None else evaluate_model(baseline, splits, cfg, device, tick)
    cand = evaluate_model(candidate, splits, cfg, device, tick)
    out = compare(base, cand)
    result = AuditResult(
        **out, samples=samples, config=cfg, device=str(device), baseline_cached=cached,
        durations_s={"audit": time.perf_counter() - t0, **{f"candidate.{k}": v for k, v in cand.durations_s.items()},
                     **({} if cached else {f"baseline.{k}": v for k, v in base.durations_s.items()})},
        notes=collapse_notes(out["metrics"], splits) + method_notes(cfg))
    return AuditRun(result, base)


def method_notes(cfg: AuditConfig) -> list[str]:
    """What a reader of the report must know about how some numbers were produced."""
    notes = [n for n in (a.note() for a in cfg.attacks) if n]
    notes.append(f"deltas: {SINGLE_METHOD} for single metrics" + (
        f"; {AGGREGATE_METHOD} for corruption means" if cfg.corruptions is not None else "") + ".")
    if cfg.corruptions is not None:
        notes.append("corruptions: ImageNet-C in torch; see docs/corruptions.md for deviations from the reference "
                     "(procedural frost and fog, size scaling below 224 px, DCT-based JPEG).")
    return notes
