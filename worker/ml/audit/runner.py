"""Audit a candidate (edited) model against its baseline on the test / edit / generalization splits.

Each model is evaluated on its own (`evaluate_model`) into per-sample predictions per condition (outcomes.py): that
is what the baseline cache stores, what shards return and what the per-sample file holds. outcomes.compare turns two
evaluations into the metrics and deltas named by editaudit.contracts.metrics; `run_audit` runs the whole audit in
one process and returns the contract's AuditResult (editaudit.contracts.audit_result) with both evaluations.
Random draws (attack starts, corruptions) are seeded per split, attack/corruption and global batch index, never per
model or shard, so both models face the same inputs and a shard (`plan_shards`: runs of whole batches) computes
exactly what an unsharded run computes for its rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from editaudit.contracts import metrics as M
from editaudit.contracts.attacks import EpsAttack
from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.audit_result import AuditResult, SplitSamples
from editaudit.worker.ml.audit.attacks import make_attack
from editaudit.worker.ml.audit.fastpath import prepare_model, to_device
from editaudit.worker.ml.audit.outcomes import Evaluation, collapse_notes, compare
from editaudit.worker.ml.audit.stats import AGGREGATE_METHOD, SINGLE_METHOD
from editaudit.worker.ml.data import TensorDataset, stratified_indices

Progress = Callable[[str, int, int], None]


def _seed(*parts) -> int:
    """A stable 63-bit seed from its parts (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


Span = tuple[int, int]  # batches [first, stop) of one split


def plan_units(splits: dict[str, TensorDataset], cfg: AuditConfig, spans: dict[str, Span] | None = None) -> int:
    """Batches one model's evaluation runs (of `spans`, default all): the progress total."""
    per_batch = 1 + sum(len(a.radii()) for a in cfg.attacks)
    if cfg.corruptions is not None:
        per_batch += len(cfg.corruptions.resolved_names) * len(cfg.corruptions.severities)
    spans = spans if spans is not None else all_batches(splits, batch_size(cfg))
    return sum(stop - first for first, stop in spans.values()) * per_batch


def batch_size(cfg: AuditConfig) -> int:
    if cfg.batch_size is None:
        raise ValueError("the audit's batch size is not resolved yet (editaudit.worker.ml.audit.runner.resolve)")
    return cfg.batch_size


def resolve(cfg: AuditConfig, input_shape, device: torch.device) -> AuditConfig:
    """The config with `batch_size` chosen from the input size and free memory when the request left it out. The
    batch is the unit of the audit's random draws, so it is chosen once per audit and every shard uses it."""
    if cfg.batch_size is not None:
        return cfg
    from editaudit.worker.ml.audit.batching import auto_batch_size

    return cfg.model_copy(update={"batch_size": auto_batch_size(tuple(input_shape), device)})


def all_batches(splits: dict[str, TensorDataset], size: int) -> dict[str, Span]:
    return {name: (0, -(-len(ds) // size)) for name, ds in splits.items()}


def plan_shards(sizes: dict[str, int], size: int, shard_samples: int) -> list[dict[str, Span]]:
    """Consecutive runs of whole batches, about `shard_samples` samples each (at least one batch): a shard's
    samples, seeds and batches are exactly those of the same rows in an unsharded run."""
    per = max(1, shard_samples // size)
    shards: list[dict[str, Span]] = []
    room = 0
    for split, n in sizes.items():
        b, stop = 0, -(-n // size)
        while b < stop:
            if room == 0:
                shards.append({})
                room = per
            take = min(room, stop - b)
            shards[-1][split] = (b, b + take)
            b, room = b + take, room - take
    return shards


def _batches(ds: TensorDataset, size: int, device: torch.device, span: Span):
    """(batch index, images on `device` as float32, labels) for the batches of `span`: uint8 images are converted
    here, one batch at a time."""
    for b in range(*span):
        i = b * size
        yield b, ds.images(slice(i, i + size), device), ds.y[i : i + size]


def _adv_input(attack, net, p_k, cfg: AuditConfig, split: str, k: int, b: int, xb: torch.Tensor, yb: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """An attack's input for batch `b` (radius index `k`): seeded by split, attack, radius and global batch."""
    gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, p_k.seed, split, p_k.id, k, b))
    return attack.perturb(net, xb, yb, gen)


def _corrupted_input(cfg: AuditConfig, split: str, name: str, sev: int, b: int, xb: torch.Tensor,
                     device: torch.device) -> torch.Tensor:
    from editaudit.worker.ml.audit.corruptions import corrupt

    gen = torch.Generator(device=device).manual_seed(_seed(cfg.seed, split, name, sev, b))
    return corrupt(xb, name, sev, gen)


def evaluate_model(model: nn.Module, splits: dict[str, TensorDataset], cfg: AuditConfig, device: torch.device,
                   tick: Callable[[], None] = lambda: None, spans: dict[str, Span] | None = None) -> Evaluation:
    """One model's outcomes on the batches of `spans` (default: everything). Seeds are per split, condition and
    global batch index, so a shard computes exactly what an unsharded run computes for its rows."""
    size = batch_size(cfg)
    spans = spans if spans is not None else all_batches(splits, size)
    eager, fast = prepare_model(model, device, cfg.compile, sum(len(d) for d in splits.values()), cfg.fold_bn)
    ev = Evaluation()
    for split, span in spans.items():
        ds = splits[split]
        first = span[0] * size
        y = ds.y[first : span[1] * size]
        ev.labels[split], ev.offsets[split] = y.tolist(), first
        t0 = time.perf_counter()
        preds = []
        name = M.accuracy(split)
        with torch.no_grad():
            for _, xb, _ in _batches(ds, size, device, span):
                xb = to_device(xb, device)
                preds.append(fast(xb).argmax(1).cpu())
                tick()
        ev.preds[name] = torch.cat(preds).tolist()
        ev.durations_s[f"{split}.clean"] = time.perf_counter() - t0

        for params in cfg.attacks:
            t0 = time.perf_counter()
            net = fast if params.native else eager  # ART attacks need the eager module
            radii = params.radii()
            counts = []
            for k, eps in enumerate(radii):
                if k == 0:
                    p_k = params
                else:  # a sweep: only a norm-bounded attack has more than one radius
                    assert isinstance(params, EpsAttack) and eps is not None
                    p_k = params.at_eps(eps)
                attack, outcome = make_attack(p_k), []
                name = M.adv_accuracy(split, params.id)
                for b, xb, yb in _batches(ds, size, device, span):
                    xb, yb = to_device(xb, device), yb.to(device)
                    x_adv = _adv_input(attack, net, p_k, cfg, split, k, b, xb, yb, device)
                    with torch.no_grad():
                        outcome.append(fast(x_adv).argmax(1).cpu())
                    tick()
                pred = torch.cat(outcome)
                if k == 0:
                    ev.preds[name] = pred.tolist()
                counts.append(int((pred == y).sum()))
            if len(radii) > 1:
                ev.curves[M.adv_key(split, params.id)] = {"eps": list(radii), "correct": counts}
            ev.durations_s[M.adv_key(split, params.id)] = time.perf_counter() - t0

        if cfg.corruptions is not None:
            t0 = time.perf_counter()
            for cname in cfg.corruptions.resolved_names:
                for sev in cfg.corruptions.severities:
                    outcome = []
                    name = M.corruption_accuracy(split, cname, sev)
                    for b, xb, _ in _batches(ds, size, device, span):
                        xb = to_device(xb, device)
                        with torch.no_grad():
                            outcome.append(fast(_corrupted_input(cfg, split, cname, sev, b, xb, device)).argmax(1)
                                           .cpu())
                        tick()
                    ev.preds[name] = torch.cat(outcome).tolist()
            ev.durations_s[f"{split}.corruption"] = time.perf_counter() - t0
    return ev


def render_inputs(model: nn.Module, splits: dict[str, TensorDataset], cfg: AuditConfig, device: torch.device,
                  wanted: dict[str, list[int]]) -> dict[str, dict[int, np.ndarray]]:
    """The inputs `model` saw at the given positions, per condition metric, as uint8 HWC: made again from the same
    batch and the same seed (a clean image, its corruption, or the attack's adversarial input against `model`), so
    they are the inputs the audit scored, without any shard keeping images."""
    size = batch_size(cfg)
    eager, fast = prepare_model(model, device, cfg.compile, sum(len(d) for d in splits.values()), cfg.fold_bn)
    attacks = {a.id: a for a in cfg.attacks}
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, positions in wanted.items():
        split, cond = M.condition(name)  # type: ignore[misc]  # callers name condition metrics
        ds = splits[split]
        for b in sorted({p // size for p in positions}):
            (_, xb, yb), = _batches(ds, size, device, (b, b + 1))
            xb, yb = to_device(xb, device), yb.to(device)
            kind, _, rest = cond.partition(".")
            if kind == "adv":
                params = attacks[rest]
                x = _adv_input(make_attack(params), fast if params.native else eager, params, cfg, split, 0, b, xb,
                               yb, device)
            elif kind == "corruption":
                cname, sev = rest.rsplit(".", 1)
                with torch.no_grad():
                    x = _corrupted_input(cfg, split, cname, int(sev), b, xb, device)
            else:
                x = xb
            for p in (p for p in positions if p // size == b):
                img = x[p - b * size].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
                out.setdefault(name, {})[p] = img.permute(1, 2, 0).cpu().numpy()
    return out


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
    stores; pass it back as `baseline_eval` to audit another candidate of the same model on the same inputs), and
    the candidate's."""

    result: AuditResult
    baseline: Evaluation
    candidate: Evaluation


def build_result(base: Evaluation, cand: Evaluation, samples: dict[str, SplitSamples], cfg: AuditConfig,
                 device: torch.device | str, cached: bool) -> AuditResult:
    """The AuditResult of two evaluations: statistics from outcomes.compare, notes, durations by model."""
    out = compare(base, cand)
    return AuditResult(
        **out, samples=samples, config=cfg, device=str(device), baseline_cached=cached,
        durations_s={**{f"candidate.{k}": v for k, v in cand.durations_s.items()},
                     **({} if cached else {f"baseline.{k}": v for k, v in base.durations_s.items()})},
        notes=collapse_notes(out["metrics"], base.labels) + method_notes(cfg))


def run_audit(baseline: nn.Module, candidate: nn.Module, splits: dict[str, TensorDataset],
              config: dict | AuditConfig, device: torch.device | str = "cpu", progress: Progress = lambda *_: None,
              baseline_eval: Evaluation | None = None) -> AuditRun:
    """The whole audit in this process (one shard). Pass `baseline_eval` (from the cache) to skip re-evaluating the
    baseline."""
    cfg = config if isinstance(config, AuditConfig) else AuditConfig.model_validate(config)
    device = torch.device(device)
    first = next(iter(splits.values()))
    cfg = resolve(cfg, first.images(slice(0, 1)).shape[1:], device)
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
    result = build_result(base, cand, samples, cfg, device, cached)
    result.durations_s["audit"] = time.perf_counter() - t0
    return AuditRun(result, base, cand)


def method_notes(cfg: AuditConfig) -> list[str]:
    """What a reader of the report must know about how some numbers were produced."""
    notes = [n for n in (a.note() for a in cfg.attacks) if n]
    notes.append(f"deltas: {SINGLE_METHOD} for single metrics" + (
        f"; {AGGREGATE_METHOD} for corruption means" if cfg.corruptions is not None else "") + ".")
    if cfg.corruptions is not None:
        notes.append("corruptions: ImageNet-C in torch; see docs/corruptions.md for deviations from the reference "
                     "(procedural frost and fog, size scaling below 224 px, DCT-based JPEG).")
    return notes
