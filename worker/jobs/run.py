"""One edit and its audit: read the job's rows, run the ML core, store the outcome atomically.

Exactly once under redelivery (acks_late, the reconciler): each attempt holds a lease (`lease.py`); a finished edit
or one leased by a live attempt is left alone, one whose lease lapsed is redone from scratch under a new token.
Nothing is kept unless everything succeeded. What the method reads (named datasets, earlier edits) and adds to the
audit comes from its params traits; nothing here branches on a method's name.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import safetensors.torch
import torch

from editaudit.contracts import metrics
from editaudit.contracts.audit_result import HeldOut, SplitSamples
from editaudit.contracts.edits import parse_hyperparams
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore
from editaudit.worker.jobs.cache import StoreMemo, baseline_cache_key, cache_get, cache_put, versions
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
from editaudit.worker.ml.archs.registry import checkpoint_state
from editaudit.worker.ml.audit.runner import Evaluation, run_audit
from editaudit.worker.ml.data import hold_out
from editaudit.worker.ml.edits import run_edit

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # ART places models on the current device: make it this one
    return device


def hold_out_for_edit(params, splits: dict) -> tuple | None:
    """When the edit wants data no field names (a gradient edit's locality set), carve it out of the test split:
    splits["test"] becomes the rest, which is all the audit scores. (held-out set, record) or None."""
    if not params.held_out_roles():
        return None
    if "test" not in splits:
        raise ValueError(f"{sorted(params.held_out_roles())} default to a part of the test split, and this edit has "
                         "none: name a locality_set or set locality_weight to 0")
    splits["test"], held, record = hold_out(splits["test"], params.seed)
    return held, record


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


def run_single_edit(settings: Settings, sessions, store: ObjectStore, edit_id: str) -> None:
    """One attempt at the edit, under its lease (`lease.py`): a delivery that finds a live lease is dropped, and an
    attempt that lost its lease writes nothing."""
    with sessions() as s:
        token = take(s, edit_id, settings.lease_s, settings.max_attempts)
        if token is None:
            return
        edit = s.get(db.Edit, edit_id)
        audit = repo.audit_of(s, edit_id)
        audit.status = Status.running
        s.commit()
        model_row = s.get(db.Model, edit.model_id)
        job = {c: getattr(edit, c) for c in ("method", "layers", "hyperparams", "edit_set", "generalization_set",
                                             "test_set")}
        audit_id, audit_config, spec, model_key = audit.id, audit.config, model_row.spec, model_row.object_key
        model_sha, tenant = model_row.sha256, edit.tenant
    lease = Lease(sessions, edit_id, token, settings.lease_s, settings.job_time_limit_s)
    with heartbeat(lease):
        _attempt(settings, sessions, store, edit_id, lease, job, audit_id, audit_config, spec, model_key, model_sha,
                 tenant)


def _attempt(settings: Settings, sessions, store: ObjectStore, edit_id: str, lease: Lease, job: dict, audit_id: str,
             audit_config: dict, spec: dict, model_key: str, model_sha: str, tenant: str) -> None:
    """`tenant` keys the caches: one tenant's cached baseline or memo never serves (nor reveals) another's."""
    token = lease.token
    try:
        device = pick_device(settings.device)
        params = parse_hyperparams(job["method"], job["hyperparams"])  # validated once, here, for this process
        baseline = load_model(store, model_key, spec)
        splits = {split: load_dataset(job[f"{split}_set"], sessions, store, spec)
                  for split in metrics.SPLITS if job[f"{split}_set"]}
        progress = ProgressWriter(sessions, edit_id, lease=lease)
        t0 = time.perf_counter()
        torch.manual_seed(params.seed)
        held_out = hold_out_for_edit(params, splits)  # before `reference`: the audit and the edit see the rest
        reference = {k: v for k, v in splits.items() if k != "edit"}
        for role, (_, ref, _) in params.datasets().items():  # locality / reference sets, nested edits' included
            reference[role] = load_dataset(ref, sessions, store, spec)
        if held_out:
            reference.update(dict.fromkeys(params.held_out_roles(), held_out[0]))
        linked = {field: load_edited_model(ref, sessions, store, spec) for field, ref in params.edit_refs().items()}
        memo = StoreMemo(store, {"tenant": tenant, "model": model_sha, "spec": spec, "device": device.type,
                                 "versions": versions()})
        edited = run_edit(job["method"], baseline, splits["edit"], job["layers"], params, device, progress,
                          reference=reference, linked_models=linked, memo=memo)
        edited.info["memo"] = memo.report
        edit_seconds = time.perf_counter() - t0
        cache_key = baseline_cache_key(tenant, model_sha, spec, {k: ds.identity for k, ds in splits.items()},
                                       audit_config, device.type)
        cached = cache_get(store, cache_key, lambda data: Evaluation.from_json(json.loads(data)))
        result, base_eval = run_audit(baseline, edited.model, splits, audit_config, device, progress,
                                      baseline_eval=cached)
        if cached is None:
            cache_put(store, cache_key, json.dumps(base_eval.to_json()).encode())
        result.durations_s["edit"] = edit_seconds
        result.sections["inputs"] = inputs_record(spec, splits)
        if held_out:
            note_held_out(result.samples, held_out[1], params.held_out_roles())
        result.add_sections(edited.audit, params.audit_sections)
        state = state_of(edited.model.net)
        saved = checkpoint_state(spec["arch"], edited.model.net, state)  # in the layout the upload had
        weights = safetensors.torch.save(saved)
        delta = make_delta(saved, saved_names(state, saved, edited.changed),
                           {"parent_sha256": model_sha, "method": job["method"]})
        edited.info["delta"] = delta_stats(baseline.net.state_dict(), state, edited.changed)
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
    try:
        store_success(sessions, store, edit_id, audit_id, spec, weights, delta, edited.changed, edited.info,
                      result, token)
    except LeaseLost:
        log.warning("edit %s: attempt %s finished after losing its lease (or a cancel); kept nothing", edit_id, token)
    except Exception as exc:  # noqa: BLE001 - never leave a job `running` (acks_late will not redeliver it)
        log.exception("edit %s: storing the result failed", edit_id)
        finish(sessions, edit_id, Status.failed, f"storing the result failed: {type(exc).__name__}: {exc}",
               token=token)
