"""Sharded audits on real workers (Postgres, Redis, `celery worker` processes on loopback): an audit's shards run on
both workers; a worker SIGKILLed mid-shard costs that shard one retry and nothing else, and the audit's numbers are
those of an unsharded run; a cancel stops every shard on every worker."""

from __future__ import annotations

import os
import signal
import time
from unittest import mock

import pytest
from sqlalchemy import select

from editaudit.cli.embedded import start_worker
from editaudit.contracts.statuses import Status
from editaudit.core import db
from tests.conftest import postgres_database, unscoped
from tests.integration.test_faults import SLOW_AUDIT, WAIT_S, _stack, _wait

pytestmark = pytest.mark.slow
# 200 test samples in 10 batches: shards of 2 batches (audit_shard_samples); steps enough that each shard takes a
# few seconds, so the second worker surely joins before the coordinator has run them all
SHARDED = {**SLOW_AUDIT, "batch_size": 20,
           "attacks": [{**SLOW_AUDIT["attacks"][0], "steps": 300}]}
STABLE = ("metrics", "intervals", "deltas", "curves", "notes", "samples")


@pytest.fixture()
def sharded_stack(tmp_path, redis_url, digits_model, failures_npz):
    """A database of its own: the session's shared one holds other tests' unfinished edits, which these workers'
    reconcilers would take up (and so keep a worker from the shards this test watches)."""
    with postgres_database() as url, _stack(tmp_path, url, redis_url, digits_model, failures_npz,
                                            audit_shard_samples=40) as c:
        c.body = {**c.body, "audit": SHARDED}
        yield c


def _shards(c, audit_id: str) -> list[db.AuditShard]:
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        rows = s.scalars(select(db.AuditShard).filter_by(audit_id=audit_id).order_by(db.AuditShard.index)).all()
        for r in rows:
            s.expunge(r)
        return rows


def _once(c, edit_id: str) -> None:
    """One edited-model row with its object, the lease released, and no intermediate object left behind."""
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        models = s.scalars(select(db.Model).where(db.Model.edit_id == edit_id)).all()
        assert len(models) == 1 and s.get(db.Edit, edit_id).lease_token is None
        assert (c.settings.data_dir / "objects" / models[0].object_key).is_file()
    objects = c.settings.data_dir / "objects"
    assert not list(objects.glob("audit-shards/*/*")) and not list(objects.glob("audit-candidates/*"))


def _until(cond, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"never {what}")


def test_a_worker_killed_mid_shard_costs_that_shard_one_retry_and_the_numbers_stay_unsharded(sharded_stack):
    c = sharded_stack
    workers = {w.pid: w for w in (c.worker("a"), c.worker("b"))}
    job = c.post("/edits", json=c.body).json()

    def helper_running_a_shard():
        rows = _shards(c, job["audit_id"])
        coordinator = rows[0].worker if rows else None  # shard 0 is never sent: its taker is the coordinator
        return next((r for r in rows if coordinator and r.status == Status.running and r.worker != coordinator
                     and r.done > 0), None)

    victim = _until(helper_running_a_shard, "saw the second worker run a shard")
    pid = int(victim.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    workers[pid].wait(timeout=30)
    edit = _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
    assert edit["status"] == Status.succeeded, edit
    _once(c, job["id"])
    rows = _shards(c, job["audit_id"])
    assert len(rows) >= 5 and all(r.status == Status.succeeded for r in rows)
    assert {r.index: r.attempt for r in rows} == {r.index: 2 if r.index == victim.index else 1 for r in rows}, \
        "the killed shard alone ran again"
    assert edit["progress"]["done"] == edit["progress"]["total"]
    sharded = c.get(f"/audits/{job['audit_id']}").json()
    # the same edit again, on a worker that runs every audit in one shard
    for w in workers.values():
        if w.poll() is None:
            w.kill()
            w.wait(timeout=30)
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):  # as the sharded run's workers
        one = start_worker(c.settings.model_copy(update={"audit_shard_samples": 10**6}), c.logs / "one.log")
    try:
        again = c.post("/edits", json=c.body).json()
        _wait(c, again["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
        whole = c.get(f"/audits/{again['audit_id']}").json()
    finally:
        one.kill()
        one.wait(timeout=30)
    assert whole["status"] == Status.succeeded and whole["sections"]["inputs"]["shards"] == 1
    assert {k: whole[k] for k in STABLE} == {k: sharded[k] for k in STABLE}


def test_a_cancel_stops_every_shard_on_every_worker(sharded_stack):
    c = sharded_stack
    c.worker("a"), c.worker("b")
    job = c.post("/edits", json={**c.body, "audit": {**SHARDED, "attacks": [{**SHARDED["attacks"][0],
                                                                               "steps": 2000}]}}).json()
    _until(lambda: len({r.worker for r in _shards(c, job["audit_id"]) if r.status == Status.running}) == 2,
           "saw both workers run a shard")
    assert c.post(f"/edits/{job['id']}/cancel").status_code == 200
    _until(lambda: all(r.status not in (Status.queued, Status.running) for r in _shards(c, job["audit_id"])),
           "saw every shard stop")
    done = {r.index: r.done for r in _shards(c, job["audit_id"])}
    time.sleep(3)  # a shard still computing would write its count every half second
    rows = _shards(c, job["audit_id"])
    assert {r.index: r.done for r in rows} == done and {r.status for r in rows} == {Status.canceled}
    assert c.get(f"/edits/{job['id']}").json()["status"] == Status.canceled
    quick = c.post("/edits", json={**c.body, "audit": {"attacks": []}}).json()  # both workers are free again
    assert _wait(c, quick["id"], lambda e: e["status"] not in (Status.queued, Status.running),
                 "finished")["status"] == Status.succeeded
