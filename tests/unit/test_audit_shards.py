"""Sharded audits in the ML core: shards are runs of whole batches, and merged in any order they give the numbers of
one unsharded run bit for bit (attacks with random starts and random corruptions included); the per-sample file
round-trips every outcome; its listing pages through exactly the flipped samples."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.formats import samples as samples_file
from editaudit.worker.ml.audit.outcomes import Evaluation, from_blocks, merge, pack, to_blocks, unpack
from editaudit.worker.ml.audit.runner import (
    build_result,
    evaluate_model,
    plan_shards,
    render_inputs,
    run_audit,
    subset,
)
from editaudit.worker.ml.data import TensorDataset, digits_arrays

CFG = {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.1, "steps": 3, "random_start": True, "eps_sweep": [0.05]},
                   {"id": "fgsm", "name": "fgsm", "eps": 0.05}],
       "corruptions": {"names": ["gaussian_noise", "impulse_noise", "contrast"], "severities": [2, 5]},
       "max_samples": 70, "batch_size": 16, "seed": 3}


@pytest.fixture(scope="module")
def audit_inputs(digits_wrapped):
    te = digits_arrays("test")
    test = TensorDataset(torch.from_numpy(te.x), torch.from_numpy(te.y))
    edit = TensorDataset(torch.from_numpy(te.x[:21]), torch.full((21,), 3, dtype=torch.int64))
    cand = copy.deepcopy(digits_wrapped)
    with torch.no_grad():  # a candidate that differs: some samples flip each way
        noise = torch.randn(cand.net.fc.weight.shape, generator=torch.Generator().manual_seed(1))
        cand.net.fc.weight.add_(0.15 * noise)
    cfg = AuditConfig.model_validate(CFG)
    splits, samples = subset({"test": test, "edit": edit}, cfg)
    return digits_wrapped, cand, splits, samples, cfg


def _result(base: Evaluation, cand: Evaluation, samples, cfg):
    out = build_result(base, cand, samples, cfg, "cpu", False)
    return out.model_dump(include={"metrics", "intervals", "deltas", "curves", "notes"})


@pytest.mark.parametrize("shard_samples", [16, 48, 70])
def test_shards_merged_in_any_order_equal_one_run_bit_for_bit(audit_inputs, shard_samples):
    baseline, candidate, splits, samples, cfg = audit_inputs
    whole = run_audit(baseline, candidate, splits, cfg)
    plan = plan_shards({k: len(v) for k, v in splits.items()}, cfg.batch_size, shard_samples)
    assert len(plan) >= 2
    parts = []
    for spans in random.Random(shard_samples).sample(plan, len(plan)):  # shards finish in any order
        b = evaluate_model(baseline, splits, cfg, torch.device("cpu"), spans=spans)
        c = evaluate_model(candidate, splits, cfg, torch.device("cpu"), spans=spans)
        parts.append(unpack(pack({"baseline": b, "candidate": c})))  # through the store's encoding
    random.Random(1).shuffle(parts)
    base, cand = merge(p["baseline"] for p in parts), merge(p["candidate"] for p in parts)
    assert base.preds == whole.baseline.preds and cand.preds == whole.candidate.preds
    assert _result(base, cand, samples, cfg) == whole.result.model_dump(
        include={"metrics", "intervals", "deltas", "curves", "notes"}), "metrics, intervals and p-values bit for bit"
    # what the job stores: the per-sample file, and the result computed from it
    ids = {k: v.ids for k, v in samples.items()}
    b2, c2 = from_blocks(samples_file.blocks(samples_file.read(samples_file.write(to_blocks(base, cand, ids)))),
                         (base, cand))
    assert _result(b2, c2, samples, cfg) == _result(base, cand, samples, cfg)
    assert samples_file.write(to_blocks(base, cand, ids)) == samples_file.write(
        to_blocks(whole.baseline, whole.candidate, ids)), "the same file, byte for byte, whatever the sharding"
    # the kept inputs: the global first flipped ones per condition and direction, whatever the sharding
    from editaudit.worker.jobs.gallery import kept_images

    def render(wanted):
        return render_inputs(candidate, splits, cfg, torch.device("cpu"), wanted)

    gallery = kept_images(base, cand, ids, 4, render)
    assert gallery == kept_images(whole.baseline, whole.candidate, ids, 4, render)
    kept = samples_file.read_images(gallery)
    assert len(kept) and set(kept.column("direction").to_pylist()) == {"broken", "fixed"}


def test_plan_shards_tiles_every_split_with_whole_batches():
    plan = plan_shards({"test": 100, "edit": 7}, 16, 40)  # 7 + 1 batches, 2 per shard
    assert plan == [{"test": (0, 2)}, {"test": (2, 4)}, {"test": (4, 6)}, {"test": (6, 7), "edit": (0, 1)}]
    assert plan_shards({"test": 5}, 16, 1) == [{"test": (0, 1)}], "at least one batch per shard"


def test_merge_refuses_parts_that_do_not_tile_the_split():
    part = Evaluation(preds={"test.accuracy": [1]}, labels={"test": [1]}, offsets={"test": 16})
    with pytest.raises(ValueError, match="do not tile"):
        merge([part])


def test_the_listing_pages_through_exactly_the_flipped_samples():
    base = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    labels = np.array([0, 1, 2, 3, 0, 0, 0, 0])
    cand = np.array([0, 9, 2, 9, 0, 0, 6, 0])  # broken: 1, 3; fixed: 4, 5, 7; 6 wrong both times
    table = samples_file.read(samples_file.write([samples_file.Block("test", "clean", np.arange(10, 18), labels,
                                                                     base, cand)]))
    assert samples_file.conditions(table) == {"test": ["clean"]}
    block = samples_file.block_table(table, "test", "clean")
    rows, last = samples_file.select(block, "fixed", limit=2)
    assert [r["index"] for r in rows] == [14, 15] and last == 15
    rows, last = samples_file.select(block, "fixed", after=last, limit=2)
    assert [r["index"] for r in rows] == [17] and last is None
    rows, _ = samples_file.select(block, "broken")
    assert [(r["index"], r["baseline_correct"], r["candidate_correct"]) for r in rows] == [(11, True, False),
                                                                                           (13, True, False)]
    with pytest.raises(ValueError):
        samples_file.read(b"PAR1 not a parquet file PAR1")


def test_rendered_inputs_are_the_inputs_the_audit_scored(audit_inputs):
    """A kept adversarial or corrupted input, made again from its batch and seed, gets the prediction the audit
    recorded for that sample."""
    baseline, candidate, splits, samples, cfg = audit_inputs
    ev = evaluate_model(candidate, splits, cfg, torch.device("cpu"))
    wanted = {name: [0, 17, 33, len(ev.preds[name]) - 1] for name in ev.preds if name.startswith("test.")}
    images = render_inputs(candidate, splits, cfg, torch.device("cpu"), wanted)
    for name, positions in wanted.items():
        x = torch.from_numpy(np.stack([images[name][p] for p in positions])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            got = candidate(x).argmax(1).tolist()
        same = sum(g == ev.preds[name][p] for g, p in zip(got, positions, strict=True))
        assert same >= len(positions) - 1, (name, got, [ev.preds[name][p] for p in positions])  # uint8 rounding
