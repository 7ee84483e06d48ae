"""The job's reads and writes of rows and objects: loading inputs, the state transitions of an edit, and storing a
success atomically (weights and delta objects, the edited model row, the audit and the edit's status together;
objects rolled back on failure unless another row points at the same content address)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path, PurePath

import safetensors.torch
import torch

import editaudit
from editaudit.contracts.audit_result import AuditResult
from editaudit.contracts.datasets import is_builtin
from editaudit.contracts.statuses import Status
from editaudit.core import db, repo, webhooks
from editaudit.core.storage import ObjectStore, content_key, download_to, downloaded, sha256
from editaudit.worker.jobs.cache import versions
from editaudit.worker.jobs.lease import LeaseLost, held
from editaudit.worker.ml.archs import create_model
from editaudit.worker.ml.data import TensorDataset, load_builtin, load_file
from editaudit.worker.ml.sharded import load_sharded

log = logging.getLogger(__name__)


def load_dataset(ref: str, sessions, store: ObjectStore, spec: dict | None = None) -> TensorDataset:
    """A dataset id or builtin name as tensors, tagged with its identity (what caches key on): an upload's sha256,
    a built-in's name at this editaudit version. A sharded dataset (an ingested archive) is streamed from its
    shards, downloaded to a folder that lives as long as the dataset. With the model's `spec`: labels follow its
    `class_names` by name when the dataset has class names (and no explicit class_to_idx), and images of another
    size get the model's preprocessing (resize, centre crop) per batch."""
    if is_builtin(ref):
        ds = load_builtin(ref)
        ds.identity = f"{ref}@{editaudit.__version__}"
        return ds
    with sessions() as s:
        row = s.get(db.Dataset, ref)
        key, filename, digest, manifest = row.object_key, row.filename, row.sha256, row.manifest
        classes = None if (row.options or {}).get("class_to_idx") else row.classes
        identity = row.upload_key or digest  # an archive's identity includes its import options
    if manifest is not None:
        ds = _load_shards(store, manifest)
    else:
        with downloaded(store, key, PurePath(key).suffix) as path:
            ds = load_file(path, filename)
    ds.identity = identity
    if spec is not None:
        ds = _fit_to_model(ds, classes, spec)
    return ds


def _load_shards(store: ObjectStore, manifest: dict) -> TensorDataset:
    folder = tempfile.TemporaryDirectory(prefix="editaudit-shards-")
    paths = [download_to(store, shard["key"], Path(folder.name) / f"{i:06d}.safetensors")
             for i, shard in enumerate(manifest["shards"])]
    ds = load_sharded(manifest, paths)
    ds.keep_alive = folder  # removed when the dataset is garbage-collected
    return ds


def _fit_to_model(ds: TensorDataset, classes: list[str] | None, spec: dict) -> TensorDataset:
    names = spec.get("class_names")
    if classes and names:
        index = {name: i for i, name in enumerate(names)}
        missing = [c for c in classes if c not in index]
        if missing:
            raise ValueError(f"the dataset's classes {missing[:10]} are not among the model's class_names")
        ds.y = torch.tensor([index[c] for c in classes], dtype=torch.int64)[ds.y]
    hw = tuple(spec["input_shape"][1:])
    return ds.with_preprocess(spec.get("preprocess"), hw)


def load_model(store: ObjectStore, key: str, spec: dict):
    """A stored checkpoint as a model, read from a temporary file (never a second in-memory copy of its bytes)."""
    with downloaded(store, key, ".safetensors") as path:
        return create_model(spec, safetensors.torch.load_file(str(path)))


def load_edited_model(edit_id: str, sessions, store: ObjectStore, spec: dict):
    """The model an earlier edit produced (1-LI's `base_edit_id`: its weights are W1)."""
    with sessions() as s:
        key = s.get(db.Model, s.get(db.Edit, edit_id).edited_model_id).object_key
    return load_model(store, key, spec)


def finish(sessions, edit_id: str, status: Status, error: str, only_if: frozenset | None = None,
           token: str | None = None) -> None:
    """Mark an edit and its audit finished (failed/canceled); with `only_if`, only from those states; with `token`,
    only while that attempt holds the lease (a stale attempt must not fail a job another one is running)."""
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if only_if is not None and edit.status not in only_if:
            return
        if token is not None and (edit.lease_token != token or edit.status != Status.running):
            log.info("edit %s: attempt %s no longer holds the lease; not marking it %s", edit_id, token, status)
            return
        repo.finish_edit(s, edit, status, error)
        s.commit()


def json_safe(obj):
    """NaN/inf are not JSON (Postgres refuses them, the API cannot send them): they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


AUDIT_OBJECTS = {"samples_key": ("audit-samples", ".parquet"), "images_key": ("audit-images", ".parquet")}


def store_success(sessions, store, edit_id, audit_id, spec, weights, delta, changed, info, result: AuditResult,
                  token: str, audit_objects: dict[str, bytes] | None = None) -> None:
    """Objects first (content-addressed), then every row in one transaction that starts by claiming the edit's
    `succeeded` under this attempt's lease: if another attempt holds it (or a cancel came), nothing is written and
    the objects this attempt created are dropped unless a row uses them. `audit_objects`: the audit's per-sample
    files by column (AUDIT_OBJECTS)."""
    digest, delta_digest = sha256(weights), sha256(delta)
    key, delta_key = content_key("models", digest, ".safetensors"), content_key("deltas", delta_digest, ".safetensors")
    audit_keys = {col: content_key(AUDIT_OBJECTS[col][0], sha256(data), AUDIT_OBJECTS[col][1])
                  for col, data in (audit_objects or {}).items()}
    created: list[str] = []
    try:
        for k, data in ((key, weights), (delta_key, delta),
                        *((audit_keys[c], d) for c, d in (audit_objects or {}).items())):
            if store.put(k, data):
                created.append(k)
        with sessions() as s:
            claimed = s.query(db.Edit).filter(held(edit_id, token)).update(
                {"status": Status.succeeded, "lease_token": None}, synchronize_session=False)
            if not claimed:  # canceled while the last batch ran, or another attempt took over: keep nothing
                s.rollback()
                raise LeaseLost(edit_id)
            edit, audit = s.get(db.Edit, edit_id), s.get(db.Audit, audit_id)
            model = db.Model(tenant=edit.tenant, sha256=digest, arch=spec["arch"], spec=spec, object_key=key,
                             size_bytes=len(weights), parent_model_id=edit.model_id, edit_id=edit_id)
            s.add(model)
            s.flush()
            edit.edited_model_id, edit.finished_at = model.id, db.utcnow()
            edit.delta_object_key, edit.delta_sha256 = delta_key, delta_digest
            edit.info = {**info, "changed_keys": changed}
            edit.progress = {"stage": "done", "done": 1, "total": 1}
            # the result without the config: that is the row's `config` (stored once, when it was requested)
            audit.status, audit.result, audit.finished_at = Status.succeeded, json_safe(result.stored()), db.utcnow()
            audit.versions = versions()
            for col, k in audit_keys.items():
                setattr(audit, col, k)
            webhooks.edit_finished(s, edit)  # the events commit with the result, or neither does
            s.commit()
    except BaseException:
        drop_unreferenced(sessions, store, created)
        raise


def drop_unreferenced(sessions, store: ObjectStore, keys: list[str]) -> None:
    """Roll back objects this job created, unless a row (of another edit with identical content: keys are content
    addresses) has come to point at them meanwhile."""
    with sessions() as s:
        for k in keys:
            used = s.query(db.Model.id).filter_by(object_key=k).first() or \
                s.query(db.Edit.id).filter_by(delta_object_key=k).first() or \
                s.query(db.Audit.id).filter((db.Audit.samples_key == k) | (db.Audit.images_key == k)).first()
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


def state_of(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
