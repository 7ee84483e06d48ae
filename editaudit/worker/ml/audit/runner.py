"""Audit a candidate (edited) model against its baseline on the test / edit / generalization splits.

Each model is evaluated on its own (`evaluate_model`) into per-sample outcomes: that is what the baseline cache
stores, and what makes paired statistics possible. `compare` turns two evaluations into the metrics and deltas of
DESIGN.md: `<split>.accuracy`, `<split>.agreement`, `<split>.adv.<id>.accuracy`,
`<split>.corruption.<name>.<severity>.accuracy` with the aggregates `<split>.corruption.<name>.mean.accuracy`,
`<split>.corruption.mean.<severity>.accuracy`, `<split>.corruption.mean.accuracy`, and the corruption errors
relative to the baseline `<split>.corruption.<name>.ce` / `<split>.corruption.mean.ce` (candidate only; 1.0 = same).
Random draws (attack starts, corruptions) are seeded per split, attack/corruption and batch, never per model, so
both models face the same inputs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from editaudit.specs import CORRUPTION_NAMES, AuditConfig
from editaudit.worker.ml.audit.attacks import ATTACKS, Attack
from editaudit.worker.ml.audit.fastpath import NATIVE_ATTACKS, prepare_model, to_device
from editaudit.worker.ml.audit.stats import paired_accuracy_delta, wilson
from editaudit.worker.ml.data import TensorDataset

Progress = Callable[[str, int, int], None]


def stratified_indices(y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded class-stratified subset of `max_samples` (sorted, so batches stay ordered)."""
    n = len(y)
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / n * max_samples).astype(int)
    for i in np.argsort(-(counts / n * max_samples - quota))[: max_samples - quota.sum()]:
        quota[i] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


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
    def from_json(cls, d: dict) -> "Evaluation":
        return cls(**d)


def plan_units(splits: dict[str, TensorDataset], cfg: AuditConfig) -> int:
    """Batches one model's evaluation runs: the progress total."""
    per_batch = 1 + sum(1 + len(a.eps_sweep or []) if hasattr(a, "eps_sweep") else 1 for a in cfg.attacks)
    if cfg.corruptions is not None:
        per_batch += len(cfg.corruptions.resolved_names) * len(cfg.corruptions.severities)
    return sum(-(-min(len(ds), cfg.max_samples or len(ds)) // cfg.batch_size) for ds in splits.values()) * per_batch


def _batches(x, y, batch_size):
    for b, i in enumerate(range(0, len(x), batch_size)):
        yield b, x[i : i + batch_size], y[i : i + batch_size]


def _with_eps(params, eps: float):
    """The attack at another radius; an explicit step size scales with eps."""
    update = {"eps": eps}
    if getattr(params, "step_size", None) is not None and params.eps > 0:
        update["step_size"] = params.step_size * eps / params.eps
    return params.model_copy(update=update)


def evaluate_model(model: nn.Module, splits: dict[str, TensorDataset], cfg: AuditConfig, device: torch.device,
                   tick: Callable[[], None] = lambda: None) -> Evaluation:
    eager, fast = prepare_model(model, device, cfg.compile, sum(len(d) for d in splits.values()))
    ev = Evaluation()
    for split, ds in splits.items():
        x, y = ds.x, ds.y
        t0 = time.perf_counter()
        preds = []
        with torch.no_grad():
            for _, xb, _ in _batches(x, y, cfg.batch_size):
                preds.append(fast(to_device(xb, device)).argmax(1).cpu())
                tick()
        pred = torch.cat(preds)
        ev.preds[split] = pred.tolist()
        ev.correct[f"{split}.accuracy"] = (pred == y).tolist()
        ev.durations_s[f"{split}.clean"] = time.perf_counter() - t0

        for params in cfg.attacks:
            t0 = time.perf_counter()
            net = fast if params.name in NATIVE_ATTACKS else eager
            radii = [params.eps, *(getattr(params, "eps_sweep", None) or [])]
            accs = []
            for k, eps in enumerate(radii):
                p = params if k == 0 else _with_eps(params, eps)
                attack, outcome = Attack(p, ATTACKS[p.name]), []
                for b, xb, yb in _batches(x, y, cfg.batch_size):
                    xb, yb = to_device(xb, device), yb.to(device)
                    gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, p.seed, split, p.id, k, b))
                    x_adv = attack.perturb(net, xb, yb, gen)
                    with torch.no_grad():
                        outcome.append((fast(x_adv).argmax(1) == yb).cpu())
                    tick()
                ok = torch.cat(outcome)
                if k == 0:
                    ev.correct[f"{split}.adv.{params.id}.accuracy"] = ok.tolist()
                accs.append(_mean(ok.tolist()))
            if len(radii) > 1:
                order = np.argsort(radii)
                ev.curves[f"{split}.adv.{params.id}"] = {"eps": [radii[i] for i in order],
                                                         "accuracy": [accs[i] for i in order]}
            ev.durations_s[f"{split}.adv.{params.id}"] = time.perf_counter() - t0

        if cfg.corruptions is not None:
            from editaudit.worker.ml.audit.corruptions import corrupt

            t0 = time.perf_counter()
            for name in cfg.corruptions.resolved_names:
                for sev in cfg.corruptions.severities:
                    outcome = []
                    for b, xb, yb in _batches(x, y, cfg.batch_size):
                        xb = to_device(xb, device)
                        gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, split, name, sev, b))
                        with torch.no_grad():
                            outcome.append((fast(corrupt(xb, name, sev, gen)).argmax(1).cpu() == yb))
                        tick()
                    ev.correct[f"{split}.corruption.{name}.{sev}.accuracy"] = torch.cat(outcome).tolist()
            _aggregate_corruptions(ev.correct, split, cfg)
            ev.durations_s[f"{split}.corruption"] = time.perf_counter() - t0
    return ev


def _aggregate_corruptions(correct: dict, split: str, cfg: AuditConfig) -> None:
    """Means as concatenated per-sample outcomes, so they get paired statistics like any other accuracy."""
    names, sevs = cfg.corruptions.resolved_names, cfg.corruptions.severities
    key = lambda n, s: f"{split}.corruption.{n}.{s}.accuracy"  # noqa: E731
    for n in names:
        correct[f"{split}.corruption.{n}.mean.accuracy"] = [v for s in sevs for v in correct[key(n, s)]]
    for s in sevs:
        correct[f"{split}.corruption.mean.{s}.accuracy"] = [v for n in names for v in correct[key(n, s)]]
    correct[f"{split}.corruption.mean.accuracy"] = [v for n in names for s in sevs for v in correct[key(n, s)]]


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
        deltas[name] = paired_accuracy_delta(b, c)
    for split in base.preds:  # drawdown (Sinitsin et al. 2020): accuracy lost by the edit, baseline - candidate
        d = deltas[f"{split}.accuracy"]
        metrics["baseline"][f"{split}.drawdown"], metrics["candidate"][f"{split}.drawdown"] = 0.0, -d["value"]
        deltas[f"{split}.drawdown"] = {"value": -d["value"], "ci95": [-d["ci95"][1], -d["ci95"][0]],
                                       "p_value": d["p_value"]}
    for split, bp in base.preds.items():
        cp = cand.preds[split]
        agree = sum(p == q for p, q in zip(bp, cp))
        name = f"{split}.agreement"
        metrics["baseline"][name], metrics["candidate"][name] = 1.0, agree / len(bp)
        lo, hi = wilson(agree, len(bp))
        deltas[name] = {"value": agree / len(bp) - 1.0, "ci95": [lo - 1.0, hi - 1.0], "p_value": None}
        _corruption_errors(metrics, split)
    curves = {k: {"eps": v["eps"], "baseline": v["accuracy"], "candidate": cand.curves[k]["accuracy"]}
              for k, v in base.curves.items()}
    return {"metrics": metrics, "intervals": intervals, "deltas": deltas, "curves": curves}


def _corruption_errors(metrics: dict, split: str) -> None:
    """CE of each type = sum over severities of the candidate's error / the baseline's; mCE = their mean."""
    ces = []
    for n in CORRUPTION_NAMES:
        prefix = f"{split}.corruption.{n}."
        sevs = [k for k in metrics["baseline"] if k.startswith(prefix) and k[len(prefix):-len(".accuracy")].isdigit()]
        if not sevs:
            continue
        err_b = sum(1 - metrics["baseline"][k] for k in sevs)
        err_c = sum(1 - metrics["candidate"][k] for k in sevs)
        if err_b == 0:  # no baseline error to compare against: CE is undefined, leave it out
            continue
        ce = err_c / err_b
        metrics["baseline"][f"{prefix}ce"], metrics["candidate"][f"{prefix}ce"] = 1.0, ce
        ces.append(ce)
    if ces:
        metrics["baseline"][f"{split}.corruption.mean.ce"] = 1.0
        metrics["candidate"][f"{split}.corruption.mean.ce"] = sum(ces) / len(ces)


def subset(splits: dict[str, TensorDataset], cfg: AuditConfig) -> tuple[dict[str, TensorDataset], dict]:
    """Apply `max_samples` (stratified, seeded) and record which samples were used."""
    out, samples = {}, {}
    for name, ds in splits.items():
        idx = stratified_indices(ds.y.numpy(), cfg.max_samples, _seed(cfg.seed, name) % 2**32)
        t = torch.from_numpy(idx)
        out[name] = TensorDataset(ds.x[t], ds.y[t])
        samples[name] = {"n": len(idx), "of": len(ds), "ids": idx.tolist() if len(idx) < len(ds) else None}
    return out, samples


def run_audit(baseline: nn.Module, candidate: nn.Module, splits: dict[str, TensorDataset],
              config: dict | AuditConfig, device: torch.device | str = "cpu", progress: Progress = lambda *_: None,
              baseline_eval: Evaluation | None = None) -> dict:
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
    base = baseline_eval if cached else evaluate_model(baseline, splits, cfg, device, tick)
    cand = evaluate_model(candidate, splits, cfg, device, tick)
    out = compare(base, cand)
    out.update(samples=samples, config=cfg.model_dump(mode="json"), device=str(device),
               durations_s={"audit": time.perf_counter() - t0,
                            **{f"candidate.{k}": v for k, v in cand.durations_s.items()},
                            **({} if cached else {f"baseline.{k}": v for k, v in base.durations_s.items()})},
               baseline_cached=cached)
    out["notes"] = method_notes(cfg)
    out["baseline_eval"] = base
    return out


def method_notes(cfg: AuditConfig) -> list[str]:
    """What a reader of the report must know about how some numbers were produced."""
    notes = []
    for a in cfg.attacks:
        if a.name == "autoattack":
            notes.append(f"{a.id}: ART's AutoAttack, composition '{a.composition}'. "
                         + ("APGD-CE + APGD-DLR (untargeted) + Square; the standard cascade's APGD-T is replaced by "
                            "untargeted APGD-DLR and FAB-T is absent (ART has no FAB)." if a.composition == "standard"
                            else "ART's default list: APGD-CE and APGD-DLR (5 restarts each), DeepFool, Square "
                                 "(5000 queries, 5 restarts); not the standard APGD-CE, APGD-T, FAB-T, Square."))
        if a.name in ("cw", "deepfool"):
            notes.append(f"{a.id}: minimal-perturbation attack" + (f"; only perturbations with L2 <= {a.eps:g} count"
                                                                   if a.eps else "; unbounded"))
    if cfg.corruptions is not None:
        notes.append("corruptions: ImageNet-C in torch; see docs/corruptions.md for deviations from the reference "
                     "(procedural frost and fog, size scaling below 224 px, DCT-based JPEG).")
    return notes
