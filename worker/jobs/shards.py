"""Sharded audits: one audit's samples split into shards that every worker helps evaluate, merged once.

The edit's attempt (the coordinator, holding the edit's lease) plans the shards (runs of whole batches:
runner.plan_shards), writes one `audit_shards` row each and sends them as a Celery group. Then it takes shards
itself, one at a time, like any worker would; when none is left to take it waits for the ones others run, and takes
over any whose lease lapsed (its worker died). A shard runs under a lease of its own (`take_shard`): a duplicate
delivery is dropped, a lapsed one is retried alone, one that failed `max_attempts` times fails the audit with its
reason. Shards exchange data only through the store (each shard's outcomes, `result_key`) and the database (rows,
progress); a shard's worker rebuilds the models and inputs from the edit's rows, so nothing assumes one host.
Progress adds up over the shards; a cancel of the edit stops every shard at its next batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
from sqlalchemy import and_, or_, select
from torch import nn

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.core.storage import ObjectStore, content_key, sha256
from editaudit.worker.jobs.lease import Lease, LeaseLost, TimeLimitExceeded, heartbeat, worker_name
from editaudit.worker.jobs.progress import Canceled
from editaudit.worker.ml.audit.outcomes import Evaluation, merge, pack, unpack
from editaudit.worker.ml.audit.runner import Span, evaluate_model, plan_units
from editaudit.worker.ml.data import TensorDataset

log = logging.getLogger(__name__)
SHARD_VALUES = 2**24  # input values per shard when the setting is unset: a few seconds to minutes of work each


def shard_samples(settings: Settings, input_shape) -> int:
    """Samples per shard: the setting, else about SHARD_VALUES input values (at least one batch: the planner)."""
    return settings.audit_shard_samples or max(1, SHARD_VALUES // math.prod(input_shape))


# -- leases -----------------------------------------------------------------------------------------------------------

def _held(edit_id: str, token: str):
    """The filter of the shard row `edit_id` (a shard's id: the Lease interface's name) while `token` holds it."""
    return and_(db.AuditShard.id == edit_id, db.AuditShard.lease_token == token,
                db.AuditShard.status == Status.running)


def _takeable(now):
    return or_(db.AuditShard.status == Status.queued,
               and_(db.AuditShard.status == Status.running, db.AuditShard.lease_expires_at < now))


def take_shard(s, shard_id: str, lease_s: float, max_attempts: int) -> str | None:
    """This attempt's token if it now holds the shard (queued, or running under a lapsed lease), else None. A lapsed
    shard that has used its attempts is failed instead (which fails the audit)."""
    now, token = db.utcnow(), db.new_id()
    taken = s.query(db.AuditShard).filter(db.AuditShard.id == shard_id, db.AuditShard.attempt < max_attempts,
                                          _takeable(now)).update(
        {"status": Status.running, "lease_token": token, "lease_expires_at": now + timedelta(seconds=lease_s),
         "attempt": db.AuditShard.attempt + 1, "started_at": now, "worker": worker_name()},
        synchronize_session=False)
    s.commit()
    if taken:
        return token
    gave_up = s.query(db.AuditShard).filter(db.AuditShard.id == shard_id, db.AuditShard.attempt >= max_attempts,
                                            db.AuditShard.status == Status.running,
                                            db.AuditShard.lease_expires_at < now).update(
        {"status": Status.failed, "lease_token": None, "finished_at": now,
         "error": f"gave up after {max_attempts} attempts: each one's worker stopped renewing its lease (killed, out "
                  "of memory, or hung)"}, synchronize_session=False)
    s.commit()
    if gave_up:
        log.warning("audit shard %s: gave up after %s attempts", shard_id, max_attempts)
    return None


class ShardLease(Lease):
    """A shard attempt's hold on its row (`edit_id` is the shard's id here), renewed by the same heartbeat as an
    edit's."""

    table = db.AuditShard
    held = staticmethod(_held)


def aggregate(s, audit_id: str, coordinator: str) -> dict:
    """The edit's progress while its audit runs: the shards' batches added up."""
    rows = s.scalars(select(db.AuditShard).filter_by(audit_id=audit_id, coordinator=coordinator)).all()
    return {"stage": "auditing", "done": sum(r.done for r in rows), "total": sum(r.total for r in rows) or 1,
            "shards": {"done": sum(r.status == Status.succeeded for r in rows), "total": len(rows)}}


class ShardProgress:
    """A shard's ticks: every `every` seconds (and at the end) it writes the shard's count, learns whether the edit
    was canceled or re-planned by another attempt, and (on the coordinator) writes the edit's summed progress."""

    def __init__(self, sessions, row: dict, token: str, lease: Lease, edit_lease: Lease | None = None,
                 every: float = 0.5):
        self.sessions, self.row, self.token, self.lease, self.edit_lease = sessions, row, token, lease, edit_lease
        self.every, self._last, self.done = every, 0.0, 0

    def __call__(self) -> None:
        self.done += 1
        for lease in (self.lease, self.edit_lease):
            if lease is not None:
                lease.check()
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        self.write()

    def write(self) -> None:
        with self.sessions() as s:
            edit = s.get(db.Edit, self.row["edit_id"])
            if edit.status == Status.canceled:
                raise Canceled(edit.id)
            if edit.lease_token != self.row["coordinator"]:
                raise LeaseLost(self.row["id"])  # another attempt of the edit re-planned the audit
            kept = s.query(db.AuditShard).filter(_held(self.row["id"], self.token)).update(
                {"done": self.done}, synchronize_session=False)
            if not kept:
                raise LeaseLost(self.row["id"])
            if self.edit_lease is not None:
                edit.progress = aggregate(s, self.row["audit_id"], self.row["coordinator"])
            s.commit()


# -- one shard --------------------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """What evaluating a shard needs, built from the edit's rows by whichever worker runs it."""

    baseline: nn.Module  # the wrapped models (worker.ml.archs)
    candidate: nn.Module
    splits: dict[str, TensorDataset]  # subset as the audit's config says
    device: torch.device


def run_shard(sessions, store: ObjectStore, row: dict, token: str, lease: Lease, inputs: Inputs,
              edit_lease: Lease | None = None) -> None:
    """Evaluate the shard's batches (the baseline unless the coordinator has it cached, then the candidate), put the
    outcomes in the store and mark the shard succeeded under its lease. Raises LeaseLost when the shard is no
    longer this attempt's."""
    plan = row["plan"]
    cfg = AuditConfig.model_validate(plan["config"])
    spans: dict[str, Span] = {k: (int(v[0]), int(v[1])) for k, v in plan["spans"].items()}
    tick = ShardProgress(sessions, row, token, lease, edit_lease)
    parts: dict[str, Evaluation] = {}
    if plan["baseline"]:
        parts["baseline"] = evaluate_model(inputs.baseline, inputs.splits, cfg, inputs.device, tick, spans)
    parts["candidate"] = evaluate_model(inputs.candidate, inputs.splits, cfg, inputs.device, tick, spans)
    tick.write()  # a cancel or a lost lease that came during the last batches: keep nothing
    data = pack(parts)
    key = content_key("audit-shards", sha256(data), ".safetensors")
    created = store.put(key, data)
    with sessions() as s:
        done = s.query(db.AuditShard).filter(_held(row["id"], token)).update(
            {"status": Status.succeeded, "result_key": key, "lease_token": None, "finished_at": db.utcnow(),
             "done": tick.done, "error": None}, synchronize_session=False)
        s.commit()
    if not done:
        if created:
            store.delete(key)
        raise LeaseLost(row["id"])


def fail_shard(sessions, row: dict, token: str, error: str, max_attempts: int) -> None:
    """An attempt that raised: the shard is queued again (its error kept) while attempts remain, else failed."""
    with sessions() as s:
        shard = s.get(db.AuditShard, row["id"])
        if shard is None or shard.lease_token != token or shard.status != Status.running:
            return
        last = shard.attempt >= max_attempts
        shard.status = Status.failed if last else Status.queued
        shard.error, shard.lease_token = error, None
        if last:
            shard.finished_at = db.utcnow()
        s.commit()


def row_dict(shard: db.AuditShard) -> dict:
    return {c: getattr(shard, c) for c in ("id", "audit_id", "edit_id", "index", "coordinator", "plan", "tenant")}


def attempt_shard(settings: Settings, sessions, store: ObjectStore, row: dict, token: str,
                  inputs: Callable[[], Inputs], edit_lease: Lease | None = None) -> None:
    """One attempt at a shard this process holds, under a heartbeat; every outcome is written to its row."""
    lease = ShardLease(sessions, row["id"], token, settings.lease_s, settings.job_time_limit_s)
    with heartbeat(lease):
        try:
            run_shard(sessions, store, row, token, lease, inputs(), edit_lease)
        except LeaseLost:
            log.warning("audit shard %s: attempt %s lost its lease; kept nothing", row["id"], token)
            if edit_lease is not None and edit_lease.lost:
                raise
        except Canceled:
            with sessions() as s:
                s.query(db.AuditShard).filter(_held(row["id"], token)).update(
                    {"status": Status.canceled, "lease_token": None, "finished_at": db.utcnow()},
                    synchronize_session=False)
                s.commit()
            raise
        except TimeLimitExceeded as exc:
            fail_shard(sessions, row, token, str(exc), max_attempts=0)
            if edit_lease is not None:
                raise
        except Exception as exc:  # noqa: BLE001 - a shard's failure is retried, then fails the audit with its reason
            log.exception("audit shard %s failed", row["id"])
            fail_shard(sessions, row, token, f"{type(exc).__name__}: {exc}", settings.max_attempts)


# -- the coordinator --------------------------------------------------------------------------------------------------

class ShardFailed(Exception):
    """A shard failed after its retries: the audit fails with its reason."""


def candidate_key(coordinator: str) -> str:
    """Where the coordinator puts the candidate's weights for the shards: its attempt's own object (another
    attempt's, or another tenant's identical weights, never share it), dropped with the shards' outcomes."""
    return f"audit-candidates/{coordinator}.safetensors"


def plan_rows(sessions, store: ObjectStore, audit_id: str, edit_id: str, tenant: str, coordinator: str,
              shards: list[dict[str, Span]], common: dict, cfg: AuditConfig, splits: dict,
              with_baseline: bool) -> list[dict]:
    """One row per shard for this attempt of the edit, written only while it holds the edit's lease; rows of an
    earlier attempt are dropped with their outcome objects (their workers then find their rows gone and stop)."""
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if edit.lease_token != coordinator or edit.status != Status.running:
            raise LeaseLost(edit_id)
        old = s.scalars(select(db.AuditShard).filter_by(audit_id=audit_id)).all()
        stale = {r.result_key for r in old if r.result_key} | {candidate_key(r.coordinator) for r in old}
        for r in old:
            s.delete(r)
        s.flush()
        rows = []
        for i, spans in enumerate(shards):
            total = plan_units(splits, cfg, spans) * (2 if with_baseline else 1)
            shard = db.AuditShard(tenant=tenant, audit_id=audit_id, edit_id=edit_id, index=i, coordinator=coordinator,
                                  plan={**common, "baseline": with_baseline,
                                        "spans": {k: list(v) for k, v in spans.items()}},
                                  status=Status.queued, total=total)
            s.add(shard)
            rows.append(shard)
        s.commit()
        out = [row_dict(r) for r in rows]
    _delete(store, stale - {candidate_key(coordinator)})
    return out


def coordinate(settings: Settings, sessions, store: ObjectStore, rows: list[dict], edit_lease: Lease,
               inputs: Callable[[], Inputs], progress: Callable[[dict], None], poll_s: float = 0.5) -> list[str]:
    """Take and run shards until none is left to take, then wait for the others' (retrying any whose lease lapses);
    the keys of the shards' outcome objects in shard order once all succeeded. Raises ShardFailed, Canceled,
    LeaseLost."""
    audit_id, coordinator = rows[0]["audit_id"], rows[0]["coordinator"]
    by_id = {r["id"]: r for r in rows}
    while True:
        taken = None
        with sessions() as s:
            now = db.utcnow()
            ids = s.scalars(select(db.AuditShard.id).filter(db.AuditShard.audit_id == audit_id,
                                                            db.AuditShard.coordinator == coordinator,
                                                            _takeable(now)).order_by(db.AuditShard.index)).all()
            for sid in ids:
                token = take_shard(s, sid, settings.lease_s, settings.max_attempts)
                if token is not None:
                    taken = (sid, token)
                    break
        if taken is not None:
            attempt_shard(settings, sessions, store, by_id[taken[0]], taken[1], inputs, edit_lease)
            continue
        with sessions() as s:
            progress(aggregate(s, audit_id, coordinator))  # raises on a cancel, a lost lease, the time limit
            shards = s.scalars(select(db.AuditShard).filter_by(audit_id=audit_id, coordinator=coordinator)
                               .order_by(db.AuditShard.index)).all()
            failed = next((r for r in shards if r.status == Status.failed), None)
            if failed is not None:
                raise ShardFailed(f"audit shard {failed.index + 1} of {len(shards)} failed after {failed.attempt} "
                                  f"attempt(s): {failed.error}")
            if len(shards) != len(rows):
                raise LeaseLost(audit_id)  # re-planned by another attempt of the edit
            if all(r.status == Status.succeeded for r in shards):
                return [r.result_key for r in shards]
        time.sleep(poll_s)


def merged(store: ObjectStore, keys: list[str], cached: Evaluation | None) -> tuple[Evaluation, Evaluation]:
    """(baseline, candidate) of the whole audit from the shards' outcome objects, read one at a time."""
    base, cand = [], []
    for key in keys:
        part = unpack(store.get(key))
        cand.append(part["candidate"])
        if cached is None:
            base.append(part["baseline"])
    return (cached if cached is not None else merge(base)), merge(cand)


def drop_outcomes(sessions, store: ObjectStore, audit_id: str, coordinator: str) -> None:
    """This attempt's shard outcomes and candidate copy once merged (or abandoned): intermediate, never read again.
    Only this attempt's: a newer attempt of the same edit has its own."""
    with sessions() as s:
        keys = s.scalars(select(db.AuditShard.result_key).filter(db.AuditShard.audit_id == audit_id,
                                                                 db.AuditShard.coordinator == coordinator,
                                                                 db.AuditShard.result_key.is_not(None))).all()
    _delete(store, set(keys) | {candidate_key(coordinator)})


def _delete(store: ObjectStore, keys: set[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001 - garbage left behind is not a failed audit
            log.warning("could not delete the intermediate object %s", key, exc_info=True)
