"""The ingest job: check what the torch-free API cannot, before anything uses it.

- a timm or Hugging Face model: build it, load the weights (the first tensor that does not fit is named), run one
  forward pass; the row becomes `ready` with the resolved spec (classes, input size, mean/std, preprocessing) and
  its module table (what edits' `layers` are checked against), or `invalid` with the reason;
- an image-folder archive: decode it member by member into uint8 shards in the store (memory bounded by one
  shard; keys under the dataset's own prefix), the row becomes `ready` with the shards' manifest, or `invalid`
  naming the member, its shards removed.

Idempotent and safe to repeat (a redelivery, the reconciler sending a stale one again): a retry writes the same
shard keys, and the final write happens only while the row is still `validating`; each attempt is counted, and a
check that never finishes (its worker killed every time) ends `invalid` after `max_attempts`. A store or database
outage is not the upload's fault: the row stays `validating` and the reconciler sends it again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path, PurePath

import safetensors.torch
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from editaudit.contracts.formats import FormatError, iter_archive, scan_archive
from editaudit.contracts.statuses import IngestStatus
from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore, StoreUnavailable, downloaded, sha256_file, store_from_url
from editaudit.worker.jobs.cache import versions
from editaudit.worker.ml.archs.inspect import inspect_model
from editaudit.worker.ml.ingest import IngestError, decode_to_shards

log = logging.getLogger(__name__)
TRANSIENT = (StoreUnavailable, OperationalError)
PROGRESS_EVERY_S = 2.0


def run_ingest(settings: Settings, kind: str, row_id: str) -> None:
    sessions = db.unscoped_sessions(db.session_factory(settings.resolved_database_url),
                                    "a worker's ingest job: the upload's row is addressed by id, whichever tenant's")
    store = store_from_url(settings.resolved_store_url, settings.s3_endpoint_url, settings.s3_region)
    job = {"models": ingest_model, "datasets": ingest_dataset}.get(kind)
    if job is None:
        log.error("ingest of unknown kind %r (%s); dropping the message", kind, row_id)
        return
    try:
        job(settings, sessions, store, row_id)
    except TRANSIENT as exc:
        log.warning("ingest of %s %s stopped by an outage (%s); it stays validating and is sent again", kind,
                    row_id, exc)


def _finish(sessions, table, row_id: str, status: IngestStatus, **values) -> bool:
    """The row's final state, written only while it is still `validating` (a repeated job writes nothing)."""
    with sessions() as s:
        moved = s.execute(update(table).where(table.id == row_id, table.status == IngestStatus.validating)
                          .values(status=status, ingested_at=db.utcnow(), **values)).rowcount
        s.commit()
    return bool(moved)


def _begin(sessions, table, row_id: str, max_attempts: int) -> bool:
    """Count this attempt on the row (models: `info`, datasets: `progress`); past `max_attempts` the row is
    `invalid` instead: a check that kills its worker every time (memory) must not be sent again forever."""
    column = "info" if table is db.Model else "progress"
    with sessions() as s:
        row = s.get(table, row_id)
        if row is None or row.status != IngestStatus.validating:
            return False
        record = dict(getattr(row, column) or {})
        record["attempts"] = int(record.get("attempts", 0)) + 1
        setattr(row, column, record)
        s.commit()
    if record["attempts"] > max_attempts:
        _finish(sessions, table, row_id, IngestStatus.invalid,
                error=f"the check was started {max_attempts} times and never finished (its worker stopped: out of "
                      "memory, or killed); upload a smaller model or archive, or give the workers more memory")
        return False
    return True


def ingest_model(settings: Settings, sessions, store: ObjectStore, model_id: str) -> None:
    if not _begin(sessions, db.Model, model_id, settings.max_attempts):
        return
    with sessions() as s:
        row = s.get(db.Model, model_id)
        spec, key = dict(row.spec), row.object_key
    with downloaded(store, key, ".safetensors") as path:
        state = safetensors.torch.load_file(str(path))
    try:
        found = inspect_model(spec, state)
    except Exception as exc:  # noqa: BLE001 - whatever stops the model from building is why it is invalid
        log.info("model %s is invalid: %s", model_id, exc)
        _finish(sessions, db.Model, model_id, IngestStatus.invalid, error=f"{type(exc).__name__}: {exc}")
        return
    info = {"modules": found["modules"], "requested_spec": spec, "versions": versions()}
    _finish(sessions, db.Model, model_id, IngestStatus.ready, spec=found["spec"], info=info, error=None)
    log.info("model %s is ready (%s)", model_id, found["spec"]["arch"])


class _Progress:
    """The row's {done, total}, written at most every PROGRESS_EVERY_S."""

    def __init__(self, sessions, dataset_id: str, attempts: int):
        self.sessions, self.dataset_id, self.last, self.attempts = sessions, dataset_id, 0.0, attempts

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and done < total:
            return
        self.last = now
        with self.sessions() as s:  # "at": a sign of life the reconciler reads (editaudit.worker.jobs.reconcile)
            s.execute(update(db.Dataset).where(db.Dataset.id == self.dataset_id)
                      .values(progress={"done": done, "total": total, "at": time.time(),
                                        "attempts": self.attempts}))
            s.commit()


def ingest_dataset(settings: Settings, sessions, store: ObjectStore, dataset_id: str) -> None:
    if not _begin(sessions, db.Dataset, dataset_id, settings.max_attempts):
        return
    with sessions() as s:
        row = s.get(db.Dataset, dataset_id)
        key, filename, options = row.object_key, row.filename, dict(row.options or {})
        total = int((row.progress or {}).get("total", row.n))
        attempts = int((row.progress or {}).get("attempts", 1))
    limits = settings.archive_limits
    written: list[str] = []
    progress = _Progress(sessions, dataset_id, attempts)
    progress(0, total)

    def put_shard(path: Path) -> tuple[str, str]:
        digest, _ = sha256_file(path)
        shard_key = shard_key_of(dataset_id, digest)
        store.put_file(shard_key, path)
        written.append(shard_key)
        return shard_key, digest

    try:
        with downloaded(store, key, PurePath(key).suffix) as path:
            with open(path, "rb") as f:
                summary = scan_archive(f, filename, limits, resize=bool(options.get("resize") or options.get("crop")))
            with open(path, "rb") as f:
                manifest = decode_to_shards(iter_archive(f, filename, limits), summary, options, put_shard, limits,
                                            progress)
    except (IngestError, FormatError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        log.info("dataset %s is invalid: %s", dataset_id, reason)
        if _finish(sessions, db.Dataset, dataset_id, IngestStatus.invalid, error=reason):
            for shard in written:  # this dataset's own keys, and it can no longer become ready: safe to drop
                store.delete(shard)
        return
    done = _finish(sessions, db.Dataset, dataset_id, IngestStatus.ready, manifest=manifest, n=manifest["n"],
                   shape=manifest["shape"], label_max=manifest["label_max"], has_x_orig=manifest["has_x_orig"],
                   has_mask=manifest["has_mask"], classes=summary.classes,
                   progress={"done": manifest["n"], "total": manifest["n"]}, error=None)
    if done:
        log.info("dataset %s is ready: %d images in %d shards", dataset_id, manifest["n"], len(manifest["shards"]))


def shard_key_of(dataset_id: str, digest: str) -> str:
    """A shard's key: under its dataset, so no other dataset (of any tenant) ever reads it and a failed ingest can
    drop its own shards without asking who else uses them. An attempt stopped by an outage leaves them for the
    retry, which writes the same keys."""
    return f"datasets/{dataset_id}/shards/{digest}.safetensors"
