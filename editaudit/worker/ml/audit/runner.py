"""Audit a candidate (edited) model against its baseline on the test / edit / generalization splits.

Every number is measured here by running the models and attacks; the result is keyed by the metric names of
DESIGN.md: `<split>.accuracy`, `<split>.agreement`, `<split>.adv.<attack id>.accuracy`.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from editaudit.specs import AuditConfig
from editaudit.worker.ml.audit.attacks import ATTACKS, Attack
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


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def adversarial_predictions(model, attack: Attack, x, y, batch_size, device, seed, tick) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        x_adv = attack.perturb(model, xb, yb, gen)
        with torch.no_grad():
            out.append(model(x_adv).argmax(1).cpu())
        tick()
    return torch.cat(out)


def run_audit(baseline: nn.Module, candidate: nn.Module, splits: dict[str, TensorDataset], config: dict | AuditConfig,
              device: torch.device | str = "cpu", progress: Progress = lambda *_: None) -> dict:
    cfg = config if isinstance(config, AuditConfig) else AuditConfig.model_validate(config)
    device = torch.device(device)
    attacks = cfg.attacks
    models = {"baseline": baseline.to(device).eval(), "candidate": candidate.to(device).eval()}
    for m in models.values():
        for p in m.parameters():
            p.requires_grad_(False)

    subsets = {name: stratified_indices(ds.y.numpy(), cfg.max_samples, cfg.seed) for name, ds in splits.items()}
    batches = {name: -(-len(idx) // cfg.batch_size) for name, idx in subsets.items()}
    total, done = sum(batches.values()) * 2 * len(attacks), 0

    def tick():
        nonlocal done
        done += 1
        progress("auditing", done, total)

    metrics = {"baseline": {}, "candidate": {}}
    deltas, samples, durations = {}, {}, {}
    for split, ds in splits.items():
        idx = torch.from_numpy(subsets[split])
        x, y = ds.x[idx], ds.y[idx]
        samples[split] = {"n": len(idx), "of": len(ds), "ids": subsets[split].tolist() if len(idx) < len(ds) else None}
        t0 = time.perf_counter()
        preds = {k: predict(m, x, cfg.batch_size, device) for k, m in models.items()}
        correct = {k: (p == y).tolist() for k, p in preds.items()}
        for k in models:
            metrics[k][f"{split}.accuracy"] = sum(correct[k]) / len(y)
        deltas[f"{split}.accuracy"] = paired_accuracy_delta(correct["baseline"], correct["candidate"])
        agree = int((preds["baseline"] == preds["candidate"]).sum())
        metrics["baseline"][f"{split}.agreement"] = 1.0
        metrics["candidate"][f"{split}.agreement"] = agree / len(y)
        lo, hi = wilson(agree, len(y))
        deltas[f"{split}.agreement"] = {"value": agree / len(y) - 1.0, "ci95": [lo - 1.0, hi - 1.0], "p_value": None}
        durations[f"{split}.clean"] = time.perf_counter() - t0
        for params in attacks:
            t0 = time.perf_counter()
            attack = Attack(params, ATTACKS[params.name])
            name = f"{split}.adv.{params.id}.accuracy"
            adv_correct = {}
            for k, m in models.items():
                adv = adversarial_predictions(m, attack, x, y, cfg.batch_size, device, cfg.seed + params.seed, tick)
                adv_correct[k] = (adv == y).tolist()
                metrics[k][name] = sum(adv_correct[k]) / len(y)
            deltas[name] = paired_accuracy_delta(adv_correct["baseline"], adv_correct["candidate"])
            durations[name] = time.perf_counter() - t0
    return {"metrics": metrics, "deltas": deltas, "samples": samples, "durations_s": durations,
            "config": cfg.model_dump(mode="json"), "device": str(device)}
