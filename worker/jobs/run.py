"""One edit and its audit: read the job's rows, run the ML core, store the outcome atomically.

Exactly once under redelivery (acks_late, the reconciler): each attempt holds a lease (`lease.py`); a finished edit
or one leased by a live attempt is left alone, one whose lease lapsed is redone from scratch under a new token.
Nothing is kept unless everything succeeded. What the method reads (named datasets, earlier edits) and adds to the
audit comes from its params traits; nothing here branches on a method's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch

from editaudit.contracts import metrics
from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.audit_result import AuditResult, HeldOut, SplitSamples
from editaudit.contracts.edits import parse_hyperparams
from editaudit.contracts.formats import samples as samples_file
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore
from editaudit.worker.jobs.cache import StoreMemo, baseline_cache_key, cache_get, cache_put, versions
from editaudit.worker.jobs.gallery import kept_images
from editaudit.worker.jobs.lease import Lease, LeaseLost, heartbeat, take
from editaudit.worker.jobs.persist import (
    delta_stats,
    finish,
    load_dataset,
    load_edited_model,
    load_model,
    make_delta,
    state_of,
    store_success,
)
from editaudit.worker.jobs.progress import Canceled, ProgressWriter
from editaudit.worker.jobs.shards import (
    Inputs,
    candidate_key,
    coordinate,
    drop_outcomes,
    merged,
    plan_rows,
    shard_samples,
)
from editaudit.worker.ml.archs.registry import checkpoint_state
from editaudit.worker.ml.audit.outcomes import from_blocks, pack, to_blocks, unpack
from editaudit.worker.ml.audit.runner import batch_size, build_result, plan_shards, render_inputs, resolve, subset
from editaudit.worker.ml.data import hold_out_for_edit
from editaudit.worker.ml.edits import edit_notes, run_edit

log = logging.getLogger(__name__)
JOB_FIELDS = ("method", "layers", "hyperparams", "edit_set", "generalization_set", "test_set")
Dispatch = Callable[[list[str]], None]  # sends audit shards (their ids) to the other workers


def pick_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # ART places models on the current device: make it this one
    return device


def note_held_out(samples: dict[str, SplitSamples], record: dict, roles: set[str]) -> None:
    """The audit's test `samples` in terms of the whole split: ids into it, `of` its size, what was held out."""
    rest_idx = np.setdiff1d(np.arange(record["of"]), record["ids"])
    row = samples["test"]
    row.ids = (rest_idx[row.ids] if row.ids is not None else rest_idx).tolist()
    row.of = record["of"]
    row.held_out = HeldOut(**record, roles=sorted(roles))


def saved_names(state: dict, saved: dict, keys: list[str]) -> list[str]:
    """`keys` (the network's names) as the saved checkpoint names the same tensors."""
    if saved is state:
        return keys
    by_tensor = {id(v): k for k, v in saved.items()}
    return [by_tensor.get(id(state[k]), k) for k in keys]


def inputs_record(spec: dict, splits: dict) -> dict:
    """What the model saw, for the audit's resolved config: its input, normalisation and preprocessing (attacks and
    corruptions act on the preprocessed [0, 1] image; mean/std are applied inside the model), and per split the
    stored image shape and whether it was preprocessed."""
    return {"input_shape": spec["input_shape"], "mean": spec.get("mean"), "std": spec.get("std"),
            "preprocess": spec.get("preprocess"), "class_names": bool(spec.get("class_names")),
            "splits": {name: {"n": len(ds), "stored_shape": list(getattr(ds, "stored_shape", spec["input_shape"])),
                              "preprocessed": bool(getattr(ds, "preprocess", None))} for name, ds in splits.items()}}


def load_splits(job: dict, spec: dict, sessions, store: ObjectStore) -> dict:
    """The edit's named datasets as the model sees them (labels by class name, the model's preprocessing)."""
    return {split: load_dataset(job[f"{split}_set"], sessions, store, spec)
            for split in metrics.SPLITS if job[f"{split}_set"]}


def run_single_edit(settings: Settings, sessions, store: ObjectStore, edit_id: str,
                    dispatch: Dispatch | None = None) -> None:
    """One attempt at the edit, under its lease (`lease.py`): a delivery that finds a live lease is dropped, and an
    attempt that lost its lease writes nothing. `dispatch` sends the audit's shards to the other workers (without
    it this process runs them all)."""
    with sessions() as s:
        token = take(s, edit_id, settings.lease_s, settings.max_attempts)
        if token is None:
            return
        edit = s.get(db.Edit, edit_id)
        audit = repo.audit_of(s, edit_id)
        audit.status = Status.running
        s.commit()
        model_row = s.get(db.Model, edit.model_id)
        job = {c: getattr(edit, c) for c in JOB_FIELDS}
        audit_id, audit_config, spec, model_key = audit.id, audit.config, model_row.spec, model_row.object_key
        model_sha, tenant = model_row.sha256, edit.tenant
    lease = Lease(sessions, edit_id, token, settings.lease_s, settings.job_time_limit_s)
    ctx = Attempt(settings, sessions, store, edit_id, lease, job, audit_id, audit_config, spec, model_key, model_sha,
                  tenant, dispatch)
    with heartbeat(lease):
        _attempt(ctx)


@dataclass
class Attempt:
    """One attempt's fixed facts. `tenant` keys the caches: one tenant's cached baseline or memo never serves (nor
    reveals) another's."""

    settings: Settings
    sessions: Any
    store: ObjectStore
    edit_id: str
    lease: Lease
    job: dict
    audit_id: str
    audit_config: dict
    spec: dict
    model_key: str
    model_sha: str
    tenant: str
    dispatch: Dispatch | None


def _attempt(a: Attempt) -> None:
    sessions, store, edit_id, token = a.sessions, a.store, a.edit_id, a.lease.token
    try:
        device = pick_device(a.settings.device)
        params = parse_hyperparams(a.job["method"], a.job["hyperparams"])  # validated once, here, for this process
        baseline = load_model(store, a.model_key, a.spec)
        splits = load_splits(a.job, a.spec, sessions, store)
        progress = ProgressWriter(sessions, edit_id, lease=a.lease)
        t0 = time.perf_counter()
        torch.manual_seed(params.seed)
        held_out = hold_out_for_edit(params, splits)  # before `reference`: the audit and the edit see the rest
        reference = {k: v for k, v in splits.items() if k != "edit"}
        for role, (_, ref, _) in params.datasets().items():  # locality / reference sets, nested edits' included
            reference[role] = load_dataset(ref, sessions, store, a.spec)
        if held_out:
            reference.update(dict.fromkeys(params.held_out_roles(), held_out[0]))
        linked = {field: load_edited_model(ref, sessions, store, a.spec) for field, ref in params.edit_refs().items()}
        memo = StoreMemo(store, {"tenant": a.tenant, "model": a.model_sha, "spec": a.spec, "device": device.type,
                                 "versions": versions()})
        edited = run_edit(a.job["method"], baseline, splits["edit"], a.job["layers"], params, device, progress,
                          reference=reference, linked_models=linked, memo=memo)
        edited.info["memo"] = memo.report
        edit_seconds = time.perf_counter() - t0
        state = state_of(edited.model.net)
        saved = checkpoint_state(a.spec["arch"], edited.model.net, state)  # in the layout the upload had
        weights = safetensors.torch.save(saved)
        delta = make_delta(saved, saved_names(state, saved, edited.changed),
                           {"parent_sha256": a.model_sha, "method": a.job["method"]})
        edited.info["delta"] = delta_stats(baseline.net.state_dict(), state, edited.changed)
        # the audit scores the weights as stored (what ships), loaded back: shards on other hosts load the same
        store.put(candidate_key(token), weights)
        candidate = load_model(store, candidate_key(token), a.spec)
        t1 = time.perf_counter()
        result, samples_objects = audit_sharded(a, baseline, candidate, splits, held_out, params, device, progress)
        result.durations_s |= {"edit": edit_seconds, "audit": time.perf_counter() - t1}
        result.sections["inputs"] = inputs_record(a.spec, splits) | result.sections.get("inputs", {})
        result.add_sections(edited.audit, params.audit_sections)
        result.notes[:0] = edit_notes(edited.info)
    except LeaseLost:
        log.warning("edit %s: attempt %s lost its lease to another attempt; dropping its work", edit_id, token)
        return
    except Canceled:
        log.info("edit %s canceled", edit_id)
        finish(sessions, edit_id, Status.canceled, "canceled by request", token=token)
        return
    except Exception as exc:  # noqa: BLE001 - every failure becomes a readable error on the job
        log.exception("edit %s failed", edit_id)
        finish(sessions, edit_id, Status.failed, f"{type(exc).__name__}: {exc}", token=token)
        return
    finally:
        drop_outcomes(sessions, store, a.audit_id, token)
    try:
        store_success(sessions, store, edit_id, a.audit_id, a.spec, weights, delta, edited.changed, edited.info,
                      result, token, samples_objects)
    except LeaseLost:
        log.warning("edit %s: attempt %s finished after losing its lease (or a cancel); kept nothing", edit_id, token)
    except Exception as exc:  # noqa: BLE001 - never leave a job `running` (acks_late will not redeliver it)
        log.exception("edit %s: storing the result failed", edit_id)
        finish(sessions, edit_id, Status.failed, f"storing the result failed: {type(exc).__name__}: {exc}",
               token=token)


def audit_sharded(a: Attempt, baseline, candidate, splits: dict, held_out, params, device,
                  progress: ProgressWriter) -> tuple[AuditResult, dict[str, bytes]]:
    """The audit in shards (worker/jobs/shards.py), merged, written as the per-sample file and computed from it:
    (the result, {"samples_key": its Parquet, "images_key": the kept inputs}) for store_success."""
    cfg = resolve(AuditConfig.model_validate(a.audit_config), a.spec["input_shape"], device)
    audit_splits, samples = subset(splits, cfg)
    cache_key = baseline_cache_key(a.tenant, a.model_sha, a.spec, {k: ds.identity for k, ds in splits.items()},
                                   cfg.model_dump(mode="json"), device.type)
    cached = cache_get(a.store, cache_key, lambda data: unpack(data)["baseline"])
    plan = plan_shards({k: len(ds) for k, ds in audit_splits.items()}, batch_size(cfg),
                       shard_samples(a.settings, a.spec["input_shape"]))
    common = {"config": cfg.model_dump(mode="json"), "candidate_key": candidate_key(a.lease.token),
              "device": device.type}
    rows = plan_rows(a.sessions, a.store, a.audit_id, a.edit_id, a.tenant, a.lease.token, plan, common, cfg,
                     audit_splits, cached is None)
    if len(rows) > 1 and a.dispatch is not None:
        try:
            a.dispatch([r["id"] for r in rows[1:]])  # this process starts with the first
        except Exception:  # noqa: BLE001 - without the broker this process runs every shard itself
            log.warning("edit %s: could not send the audit's shards; running them here", a.edit_id, exc_info=True)
    local = Inputs(baseline, candidate, audit_splits, device)
    keys = coordinate(a.settings, a.sessions, a.store, rows, a.lease, lambda: local, lambda p: progress(**p))
    base, cand = merged(a.store, keys, cached)
    if cached is None:
        cache_put(a.store, cache_key, pack({"baseline": base}))
    if held_out:
        note_held_out(samples, held_out[1], params.held_out_roles())
    ids = {k: v.ids for k, v in samples.items()}
    table = samples_file.write(to_blocks(base, cand, ids))
    result = build_result(*from_blocks(samples_file.blocks(samples_file.read(table)), (base, cand)), samples, cfg,
                          device, cached is not None)
    result.sections["inputs"] = {"batch_size": batch_size(cfg), "shards": len(rows)}
    gallery = kept_images(base, cand, ids, a.settings.audit_keep_images,
                          lambda wanted: render_inputs(candidate, audit_splits, cfg, device, wanted))
    return result, {"samples_key": table, "images_key": gallery}
