"""Exactly-once jobs, attacked in-process with the real job code (SQLite here; the process-level faults against
Postgres, Redis and real workers are in test_faults.py): a duplicate delivery of a leased job is dropped, an attempt
whose lease lapsed can neither overwrite nor duplicate nor orphan an object, a lost lease stops an attempt at its
next batch, and the reconciler sends lapsed and lost jobs again and gives up after `max_attempts`."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from editaudit.contracts.audit_result import AuditResult
from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.core.storage import content_key, sha256
from editaudit.worker.jobs import run_edit_job
from editaudit.worker.jobs.lease import Lease, LeaseLost, take
from editaudit.worker.jobs.persist import store_success
from editaudit.worker.jobs.progress import ProgressWriter
from editaudit.worker.jobs.reconcile import reconcile
from tests.conftest import unscoped

FAST = {"audit": {"attacks": []}}


def _edit(c, edit_id) -> db.Edit:
    with unscoped(c.services.sessions)() as s:
        edit = s.get(db.Edit, edit_id)
        s.expunge(edit)
        return edit


def _lapse(c, edit_id) -> None:
    with unscoped(c.services.sessions)() as s:
        s.get(db.Edit, edit_id).lease_expires_at = db.utcnow() - timedelta(seconds=1)
        s.commit()


def _models_of(c, edit_id) -> int:
    with unscoped(c.services.sessions)() as s:
        return s.scalar(select(func.count()).select_from(db.Model).where(db.Model.edit_id == edit_id))


def test_a_second_delivery_while_a_live_attempt_holds_the_lease_is_dropped(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, **FAST)
    with unscoped(c.services.sessions)() as s:
        token = take(s, job["id"], lease_s=60, max_attempts=3)
    assert token
    run_edit_job(c.settings, job["id"])  # the duplicate message
    edit = _edit(c, job["id"])
    assert (edit.status, edit.attempt, edit.lease_token, _models_of(c, job["id"])) == (Status.running, 1, token, 0)


def test_an_attempt_whose_lease_lapsed_cannot_overwrite_duplicate_or_orphan(edit_factory):
    """Attempt A stalls past its lease; attempt B takes over and finishes. A's late result writes nothing: one
    model row, the edit's result unchanged, and A's (different) weights object removed again."""
    c = edit_factory.client
    job = edit_factory.submit(run=False, **FAST)
    with unscoped(c.services.sessions)() as s:
        stale = take(s, job["id"], lease_s=60, max_attempts=3)
    _lapse(c, job["id"])
    run_edit_job(c.settings, job["id"])  # attempt B
    done = _edit(c, job["id"])
    assert (done.status, done.attempt, _models_of(c, job["id"])) == (Status.succeeded, 2, 1)
    store = c.services.store
    late = {("models", b"late weights of attempt A"), ("deltas", b"late delta of attempt A")}
    with pytest.raises(LeaseLost):
        store_success(unscoped(c.services.sessions), store, job["id"], job["audit_id"], edit_factory.model["spec"],
                      b"late weights of attempt A", b"late delta of attempt A", [], {}, AuditResult(), stale)
    after = _edit(c, job["id"])
    assert (after.status, after.edited_model_id, after.finished_at) == (Status.succeeded, done.edited_model_id,
                                                                       done.finished_at)
    assert _models_of(c, job["id"]) == 1
    assert not any(store.exists(content_key(kind, sha256(data), ".safetensors")) for kind, data in late), \
        "A's objects were dropped"


def test_a_lost_lease_stops_the_attempt_at_its_next_batch(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, **FAST)
    with unscoped(c.services.sessions)() as s:
        token = take(s, job["id"], lease_s=60, max_attempts=3)
    lease = Lease(unscoped(c.services.sessions), job["id"], token, 60)
    progress = ProgressWriter(unscoped(c.services.sessions), job["id"], every=0, lease=lease)
    progress("editing", 1, 10)
    _lapse(c, job["id"])
    with unscoped(c.services.sessions)() as s:
        assert take(s, job["id"], lease_s=60, max_attempts=3)  # another attempt takes over
    with pytest.raises(LeaseLost):
        progress("editing", 2, 10)
    assert not lease.renew() and lease.lost


def test_the_reconciler_sends_lapsed_and_lost_jobs_again_and_gives_up(edit_factory):
    c = edit_factory.client
    settings = c.settings.model_copy(update={"max_attempts": 2, "requeue_after_s": 60})
    lapsed_job, lost_job, fresh_job = (edit_factory.submit(run=False, **FAST) for _ in range(3))
    with unscoped(c.services.sessions)() as s:
        take(s, lapsed_job["id"], lease_s=60, max_attempts=2)
        s.get(db.Edit, lost_job["id"]).created_at = db.utcnow() - timedelta(seconds=600)  # its message is gone
        s.commit()
    _lapse(c, lapsed_job["id"])
    sent = []
    waiting = reconcile(unscoped(c.services.sessions), sent.append, settings, queue_depth=lambda: 5)
    assert waiting["resent"] == [], "messages wait in the queue: the queued job is behind them, not lost"
    with unscoped(c.services.sessions)() as s:  # that pass sent the lapsed job; undo it to see both in one pass below
        edit = s.get(db.Edit, lapsed_job["id"])
        edit.status, edit.lease_expires_at = Status.running, db.utcnow() - timedelta(seconds=1)
        s.commit()
    sent.clear()
    report = reconcile(unscoped(c.services.sessions), sent.append, settings)
    assert report == {"requeued": [lapsed_job["id"]], "resent": [lost_job["id"]], "failed": []}
    assert sorted(sent) == sorted([lapsed_job["id"], lost_job["id"]])
    assert _edit(c, lapsed_job["id"]).status == Status.queued and _edit(c, fresh_job["id"]).status == Status.queued
    assert reconcile(unscoped(c.services.sessions), sent.append, settings) == {"requeued": [], "resent": [],
                                                                              "failed": []}
    # the second attempt dies too: with max_attempts = 2 the job ends failed, saying why
    with unscoped(c.services.sessions)() as s:
        assert take(s, lapsed_job["id"], lease_s=60, max_attempts=2)
    _lapse(c, lapsed_job["id"])
    assert reconcile(unscoped(c.services.sessions), sent.append, settings)["failed"] == [lapsed_job["id"]]
    edit = _edit(c, lapsed_job["id"])
    assert edit.status == Status.failed and "gave up after 2 attempts" in edit.error
    assert c.get(f"/audits/{lapsed_job['audit_id']}").json()["status"] == Status.failed
    run_edit_job(settings, lapsed_job["id"])  # a message still in flight changes nothing
    assert _edit(c, lapsed_job["id"]).status == Status.failed


def test_an_attempt_past_its_time_limit_fails_with_the_reason_and_stores_nothing(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, audit={"attacks": [{"name": "pgd", "eps": 0.05, "steps": 20}]})
    run_edit_job(c.settings.model_copy(update={"job_time_limit_s": 0.05}), job["id"])
    edit = _edit(c, job["id"])
    assert edit.status == Status.failed and "time limit" in edit.error and _models_of(c, job["id"]) == 0


def test_the_time_limit_must_stay_below_the_brokers_visibility_timeout():
    from pydantic import ValidationError

    from editaudit.core.settings import Settings

    with pytest.raises(ValidationError, match="below visibility_timeout_s"):
        Settings(job_time_limit_s=7200, visibility_timeout_s=3600)


def test_a_stale_attempt_can_neither_re_plan_nor_drop_the_live_attempts_audit_shards(edit_factory):
    """Attempt A lost the edit to attempt B while B's shards run: A can neither replace B's shard rows nor delete
    B's shard outcomes on its way out; B's own clean-up removes them."""
    import torch

    from editaudit.contracts.audit import AuditConfig
    from editaudit.worker.jobs.shards import drop_outcomes, plan_rows
    from editaudit.worker.ml.data import TensorDataset

    c = edit_factory.client
    job = edit_factory.submit(run=False, **FAST)
    sessions, store = unscoped(c.services.sessions), c.services.store
    with sessions() as s:
        stale = take(s, job["id"], lease_s=60, max_attempts=3)
    _lapse(c, job["id"])
    with sessions() as s:
        live = take(s, job["id"], lease_s=60, max_attempts=3)
    cfg = AuditConfig(batch_size=4)
    splits = {"test": TensorDataset(torch.zeros(8, 1, 8, 8), torch.zeros(8, dtype=torch.int64))}
    plan = [{"test": (0, 1)}, {"test": (1, 2)}]
    common = {"config": cfg.model_dump(mode="json"), "candidate_key": "x", "device": "cpu"}
    rows = plan_rows(sessions, store, job["audit_id"], job["id"], "default", live, plan, common, cfg, splits, True)
    store.put("audit-shards/b.safetensors", b"B's outcome")
    with sessions() as s:
        s.get(db.AuditShard, rows[0]["id"]).result_key = "audit-shards/b.safetensors"
        s.commit()
    with pytest.raises(LeaseLost):
        plan_rows(sessions, store, job["audit_id"], job["id"], "default", stale, plan, common, cfg, splits, True)
    drop_outcomes(sessions, store, job["audit_id"], stale)
    assert store.exists("audit-shards/b.safetensors")
    with sessions() as s:
        assert {r.coordinator for r in s.query(db.AuditShard).filter_by(audit_id=job["audit_id"])} == {live}
    drop_outcomes(sessions, store, job["audit_id"], live)
    assert not store.exists("audit-shards/b.safetensors")
