"""The edit-and-audit job: reads the job from the database, runs the ML core, stores the outcome atomically.

Idempotent under redelivery (acks_late): a finished edit is left alone; a `running` one is redone from scratch.
Nothing is kept unless everything succeeded: the edited weights and delta objects, the edited model row, the audit
result and the edit's `succeeded` status are written together at the end (objects are rolled back on failure
unless another edit with identical content points at them). A layer sweep runs its sub-edits one after another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time

import numpy as np
import safetensors.torch
import torch

import editaudit
from editaudit.service import db
from editaudit.service.settings import Settings
from editaudit.service.storage import ObjectStore, content_key, sha256, store_from_url
from editaudit.specs import named_datasets
from editaudit.worker.ml.archs import create_model
from editaudit.worker.ml.audit.runner import Evaluation, run_audit
from editaudit.worker.ml.data import TensorDataset, load_builtin, load_bytes
from editaudit.worker.ml.edits import run_edit

log = logging.getLogger(__name__)
TERMINAL = {"succeeded", "failed", "canceled"}


def pick_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # ART places models on the current device: make it this one
    return device


def versions() -> dict:
    import art
    import torchvision

    return {"editaudit": editaudit.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "art": art.__version__, "numpy": np.__version__, "python": platform.python_version()}


class Canceled(Exception):
    """The edit was canceled through the API; raised between batches (cooperative cancellation)."""


class ProgressWriter:
    """Writes (stage, done, total) to the edit row at most every `every` seconds and at a stage's end; each write
    also checks whether the edit was canceled, so a cancel takes effect within one batch plus `every` seconds."""

    def __init__(self, sessions, edit_id: str, every: float = 0.5):
        self.sessions, self.edit_id, self.every, self._last = sessions, edit_id, every, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        with self.sessions() as s:
            edit = s.get(db.Edit, self.edit_id)
            if edit.status == "canceled":
                raise Canceled(self.edit_id)
            edit.progress = {"stage": stage, "done": done, "total": total}
            s.commit()


def dataset_identity(ref: str, sessions) -> str:
    if ref.startswith("builtin:"):
        return f"{ref}@{editaudit.__version__}"
    with sessions() as s:
        return s.get(db.Dataset, ref).sha256


def baseline_cache_key(model_sha: str, spec: dict, datasets: dict[str, str], config: dict, device: str) -> str:
    """(model sha256 + spec, dataset identities, audit config, device type, library versions) -> a content address.
    The spec carries the normalisation; the device type decides RNG streams and precision (bf16 on CUDA)."""
    return ident_hash({"model": model_sha, "spec": spec, "datasets": datasets, "config": config, "device": device,
                       "versions": versions()})


def ident_hash(ident: dict) -> str:
    """A content address for a JSON-able identity (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def load_dataset(ref: str, sessions, store: ObjectStore) -> TensorDataset:
    if ref.startswith("builtin:"):
        return load_builtin(ref)
    with sessions() as s:
        row = s.get(db.Dataset, ref)
        key, filename = row.object_key, row.filename
    return load_bytes(store.get(key), filename)


def run_edit_job(settings: Settings, edit_id: str) -> None:
    """The Celery task's body: one edit and its audit, or a layer sweep (its sub-edits one after another)."""
    sessions = db.session_factory(settings.resolved_database_url)
    store = store_from_url(settings.resolved_store_url, settings.s3_endpoint_url, settings.s3_region)
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if edit is None:
            log.error("edit %s not found; dropping the message", edit_id)
            return
        is_sweep = edit.sweep
    (run_sweep if is_sweep else run_single_edit)(settings, sessions, store, edit_id)


def _start(s, edit_id: str) -> bool:
    """queued/running -> running, as one conditional update: a concurrent cancel wins, a finished edit stays."""
    started = s.query(db.Edit).filter(db.Edit.id == edit_id, db.Edit.status.in_(("queued", "running"))).update(
        {"status": "running", "started_at": db.utcnow(), "error": None,
         "progress": {"stage": "loading", "done": 0, "total": 1}}, synchronize_session=False)
    if not started:
        log.info("edit %s already %s", edit_id, s.get(db.Edit, edit_id).status)
    return bool(started)


def run_single_edit(settings: Settings, sessions, store: ObjectStore, edit_id: str) -> None:
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if not _start(s, edit_id):
            return
        audit = s.query(db.Audit).filter_by(edit_id=edit_id).one()
        audit.status = "running"
        s.commit()
        model_row = s.get(db.Model, edit.model_id)
        job = {c: getattr(edit, c) for c in ("method", "layers", "hyperparams", "edit_set", "generalization_set",
                                             "test_set")}
        audit_id, audit_config, spec, model_key = audit.id, audit.config, model_row.spec, model_row.object_key
        model_sha = model_row.sha256
    try:
        device = pick_device(settings.device)
        state = safetensors.torch.load(store.get(model_key))
        baseline = create_model(spec, state)
        splits = {"test": load_dataset(job["test_set"], sessions, store),
                  "edit": load_dataset(job["edit_set"], sessions, store)}
        if job["generalization_set"]:
            splits["generalization"] = load_dataset(job["generalization_set"], sessions, store)
        progress = ProgressWriter(sessions, edit_id)
        t0 = time.perf_counter()
        torch.manual_seed(int(job["hyperparams"].get("seed", 0)))
        reference = {k: v for k, v in splits.items() if k != "edit"}
        named = named_datasets(job["method"], job["hyperparams"])  # locality / reference sets, 1-LI's base included
        for role, (_, ref) in named.items():
            reference[role] = load_dataset(ref, sessions, store)
        base_model = _base_model(job["hyperparams"].get("base_edit_id"), sessions, store, spec)
        memo_data = named["reference"][1] if "reference" in named else job["test_set"]  # what rewrite's C is over
        memo = StoreMemo(store, {"model": model_sha, "spec": spec, "device": device.type, "versions": versions(),
                                 "reference": dataset_identity(memo_data, sessions)})
        edited = run_edit(job["method"], baseline, splits["edit"], job["layers"], job["hyperparams"], device, progress,
                          reference=reference, base_model=base_model, memo=memo)
        edited.info["memo"] = memo.report
        edit_seconds = time.perf_counter() - t0
        refs = {k: job[f"{k}_set"] for k in splits}
        cache_key = content_key("cache/baseline", baseline_cache_key(
            model_sha, spec, {k: dataset_identity(r, sessions) for k, r in refs.items()}, audit_config,
            device.type), ".json")
        cached = cache_get(store, cache_key, lambda data: Evaluation.from_json(json.loads(data)))
        result = run_audit(baseline, edited.model, splits, audit_config, device, progress, baseline_eval=cached)
        base_eval = result.pop("baseline_eval")
        if cached is None:
            cache_put(store, cache_key, json.dumps(base_eval.to_json()).encode())
        result["durations_s"]["edit"] = edit_seconds
        if "alpha_curve" in edited.info:  # 1-LI: the path, and whether it was monotone (an MLI check)
            result["alpha_curve"] = edited.info["alpha_curve"]
            result["mli"] = {"monotone": edited.info["alpha_curve_monotone"], "alpha": edited.info["alpha"],
                             "evaluations": edited.info["alpha_evaluations"], "search": edited.info["alpha_search"]}
        state = {k: v.detach().cpu().contiguous() for k, v in edited.model.net.state_dict().items()}
        weights = safetensors.torch.save(state)
        delta = make_delta(state, edited.changed, {"parent_sha256": model_sha, "method": job["method"]})
        edited.info["delta"] = delta_stats(baseline.net.state_dict(), state, edited.changed)
    except Canceled:
        log.info("edit %s canceled", edit_id)
        _finish(sessions, edit_id, "canceled", "canceled by request")
        return
    except Exception as exc:  # noqa: BLE001 - every failure becomes a readable error on the job
        log.exception("edit %s failed", edit_id)
        _finish(sessions, edit_id, "failed", f"{type(exc).__name__}: {exc}")
        return
    try:
        _store_success(sessions, store, edit_id, audit_id, spec, weights, delta, edited.changed, edited.info,
                       json_safe(result))
    except Exception as exc:  # noqa: BLE001 - never leave a job `running` (acks_late will not redeliver it)
        log.exception("edit %s: storing the result failed", edit_id)
        _finish(sessions, edit_id, "failed", f"storing the result failed: {type(exc).__name__}: {exc}")


def run_sweep(settings: Settings, sessions, store: ObjectStore, sweep_id: str) -> None:
    """One sub-edit per layer, in the order the request named them, sharing the cached baseline evaluation. The
    sweep's audit holds the comparison table. Under redelivery finished sub-edits are skipped, a `running` one is
    redone; whatever goes wrong, the sweep ends failed with a reason, never `running`."""
    with sessions() as s:
        if not _start(s, sweep_id):
            return
        parent = s.get(db.Edit, sweep_id)
        plan = [(c.id, c.layers[0]) for c in db.sub_edits(s, parent)]
        audit = s.query(db.Audit).filter_by(edit_id=sweep_id).one()
        audit.status, audit_id = "running", audit.id
        s.commit()
    try:
        for i, (child_id, layer) in enumerate(plan):
            with sessions() as s:
                parent = s.get(db.Edit, sweep_id)
                if parent.status == "canceled":
                    return
                parent.progress = {"stage": "sweep", "done": i, "total": len(plan), "layer": layer}
                s.commit()
            try:
                run_single_edit(settings, sessions, store, child_id)
            except Exception as exc:  # noqa: BLE001 - one layer's failure is a row of the table, not the sweep's end
                log.exception("sweep %s: sub-edit %s", sweep_id, child_id)
                _finish(sessions, child_id, "failed", f"{type(exc).__name__}: {exc}", only_if=("queued", "running"))
        with sessions() as s:
            rows = [sweep_row(s, child_id, layer) for child_id, layer in plan]
            bad = {r["layer"]: r["status"] for r in rows if r["status"] != "succeeded"}
            table = sweep_table(rows)
            info = {"sweep": {"sub_edits": [{"layer": r["layer"], "edit_id": r["edit_id"]} for r in rows],
                              "best": table["best"]}}
            status = "failed" if bad else "succeeded"
            done = s.query(db.Edit).filter(db.Edit.id == sweep_id, db.Edit.status == "running").update(
                {"status": status, "info": info, "finished_at": db.utcnow(),
                 "error": f"sub-edits did not succeed: {bad}; see the sweep table" if bad else None,
                 "progress": {"stage": "done", "done": len(plan), "total": len(plan)}}, synchronize_session=False)
            if done:  # not canceled meanwhile
                audit = s.get(db.Audit, audit_id)
                audit.status, audit.finished_at, audit.versions = status, db.utcnow(), versions()
                audit.result = json_safe({"sweep": table})
            s.commit()
    except Exception as exc:  # noqa: BLE001 - never leave a sweep `running`
        log.exception("sweep %s failed", sweep_id)
        _finish(sessions, sweep_id, "failed", f"the sweep failed: {type(exc).__name__}: {exc}",
                only_if=("queued", "running"))


def sweep_row(s, edit_id: str, layer: str) -> dict:
    """A sub-edit's line of the comparison: status, headline candidate metrics and their deltas, edit info."""
    edit = s.get(db.Edit, edit_id)
    result = s.query(db.Audit).filter_by(edit_id=edit_id).one().result or {}
    keep = lambda name: ".corruption." not in name or ".corruption.mean." in name  # noqa: E731 - per-type is noise here
    info = edit.info or {}
    return {"layer": layer, "edit_id": edit_id, "status": edit.status, "error": edit.error,
            "edited_model_id": edit.edited_model_id,
            "metrics": {k: v for k, v in result.get("metrics", {}).get("candidate", {}).items() if keep(k)},
            "deltas": {k: v for k, v in result.get("deltas", {}).items() if keep(k)},
            "info": {k: info[k] for k in ("delta_rank", "alpha", "delta", "final_loss") if k in info}}


LOWER_IS_BETTER = (".drawdown", ".ce")  # accuracy lost, corruption error; every other metric: higher is better


def sweep_table(rows: list[dict]) -> dict:
    """The rows plus, for every metric the sub-edits share, the layer with the best candidate value."""
    done = [r for r in rows if r["status"] == "succeeded"]
    names = sorted(set.intersection(*(set(r["metrics"]) for r in done))) if done else []

    def score(row: dict, name: str) -> float:
        v = row["metrics"][name]
        return -math.inf if v is None else -v if name.endswith(LOWER_IS_BETTER) else v

    best = {n: max(done, key=lambda r: score(r, n))["layer"] for n in names}
    return {"metrics": names, "rows": rows, "best": best}


def _base_model(base_edit_id: str | None, sessions, store: ObjectStore, spec: dict):
    """interpolate with `base_edit_id`: the earlier edit's weights are W1."""
    if not base_edit_id:
        return None
    with sessions() as s:
        base = s.get(db.Edit, base_edit_id)
        key = s.get(db.Model, base.edited_model_id).object_key
    return create_model(spec, safetensors.torch.load(store.get(key)))


class StoreMemo:
    """Backs the ML core's `memo(name, compute)` with the object store: a tensor is kept under a content address of
    (model sha + spec, reference data identity, device type, library versions, name), so every later edit of the
    same model with the same reference data reuses it (rewrite's second moment of keys)."""

    def __init__(self, store: ObjectStore, ident: dict):
        self.store, self.ident, self.report = store, ident, {"hits": [], "misses": []}

    def __call__(self, name: str, compute):
        key = content_key("cache/memo", ident_hash({**self.ident, "name": name}), ".safetensors")
        value = cache_get(self.store, key, lambda data: safetensors.torch.load(data)["value"])
        if value is not None:
            self.report["hits"].append(name)
            return value
        value = compute()
        self.report["misses"].append(name)
        cache_put(self.store, key, safetensors.torch.save({"value": value.detach().cpu().contiguous()}))
        return value


def json_safe(obj):
    """NaN/inf are not JSON (Postgres refuses them, the API cannot send them): they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def cache_get(store: ObjectStore, key: str, decode):
    """A cache entry decoded, or None when absent; an unreadable entry is deleted (to be recomputed), never fatal."""
    try:
        return decode(store.get(key))
    except KeyError:
        return None
    except Exception:  # noqa: BLE001 - a bad entry is recomputed and overwritten
        log.warning("ignoring unreadable cache entry %s", key, exc_info=True)
        store.delete(key)
        return None


def cache_put(store: ObjectStore, key: str, data: bytes) -> None:
    """Write a cache entry; a failure is logged, never fatal (caches are an optimisation)."""
    try:
        store.put(key, data)
    except Exception:  # noqa: BLE001
        log.warning("could not write the cache entry %s", key, exc_info=True)


def _finish(sessions, edit_id: str, status: str, error: str, only_if: tuple[str, ...] | None = None) -> None:
    """Mark an edit and its audit finished (failed/canceled); with `only_if`, only from those states."""
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if only_if is not None and edit.status not in only_if:
            return
        db.finish_edit(s, edit, status, error)
        s.commit()


def _store_success(sessions, store, edit_id, audit_id, spec, weights, delta, changed, info, result) -> None:
    digest, delta_digest = sha256(weights), sha256(delta)
    key, delta_key = content_key("models", digest, ".safetensors"), content_key("deltas", delta_digest, ".safetensors")
    created: list[str] = []
    try:
        for k, data in ((key, weights), (delta_key, delta)):
            if store.put(k, data):
                created.append(k)
        with sessions() as s:
            edit, audit = s.get(db.Edit, edit_id), s.get(db.Audit, audit_id)
            if edit.status == "canceled":  # canceled while the last batch ran: keep nothing
                raise Canceled(edit_id)
            model = db.Model(sha256=digest, arch=spec["arch"], spec=spec, object_key=key, size_bytes=len(weights),
                             parent_model_id=edit.model_id, edit_id=edit_id)
            s.add(model)
            s.flush()
            edit.status, edit.edited_model_id, edit.finished_at = "succeeded", model.id, db.utcnow()
            edit.delta_object_key, edit.delta_sha256 = delta_key, delta_digest
            edit.info = {**info, "changed_keys": changed}
            edit.progress = {"stage": "done", "done": 1, "total": 1}
            audit.status, audit.result, audit.finished_at = "succeeded", result, db.utcnow()
            audit.versions = versions()
            s.commit()
    except BaseException as exc:
        _drop_unreferenced(sessions, store, created)
        if not isinstance(exc, Canceled):
            raise


def _drop_unreferenced(sessions, store: ObjectStore, keys: list[str]) -> None:
    """Roll back objects this job created, unless a row (of another edit with identical content: keys are content
    addresses) has come to point at them meanwhile."""
    with sessions() as s:
        for k in keys:
            used = s.query(db.Model.id).filter_by(object_key=k).first() or \
                s.query(db.Edit.id).filter_by(delta_object_key=k).first()
            if not used:
                store.delete(k)


def make_delta(after: dict, changed: list[str], metadata: dict) -> bytes:
    """The changed tensors (their new values) as safetensors: loading the parent and then these keys gives the edited
    model bit for bit; the parent's own values give the revert."""
    meta = {"format": "editaudit-delta/1", "changed": json.dumps(changed), **{k: str(v) for k, v in metadata.items()}}
    return safetensors.torch.save({k: after[k] for k in changed}, metadata=meta)


def delta_stats(before: dict, after: dict, changed: list[str]) -> dict:
    """Per changed tensor: the Frobenius norm of the change and its size relative to the original."""
    out = {}
    for k in changed:
        d = (after[k].double() - before[k].detach().cpu().double())
        ref = float(before[k].double().norm())
        out[k] = {"norm": float(d.norm()), "relative": float(d.norm()) / ref if ref else None}
    return out
