"""Process-level faults against the production parts (Postgres, Redis, real `celery worker` processes on
loopback): a worker SIGKILLed mid-edit, and a second delivery of a running job to a second worker. Each edit must
finish exactly once: one succeeded status, one edited model row, one audit, no object without a row."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from editaudit.cli.embedded import start_worker
from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.core.migrate import upgrade
from editaudit.core.queue import RUN_EDIT
from editaudit.service.app import create_app
from tests.conftest import SPEC, make_settings, unscoped
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

# long enough that the worker is surely mid-audit when the fault comes (seconds on this machine), short to wait for
SLOW_AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 40, "seed": 0}],
              "max_samples": 200}
WAIT_S = 300  # generous: every wait here ends as soon as its condition holds


@contextmanager
def _stack(tmp_path, database_url, redis_url, digits_model, failures_npz, **extra):
    """An API (in-process) and a function to start workers, on Postgres + Redis; short leases and a fast
    reconciler so that recovery happens within seconds."""
    settings = make_settings(tmp_path, database_url=database_url, broker_url=redis_url, lease_s=3,
                             reconcile_every_s=0.5, requeue_after_s=30, **extra)
    upgrade(settings.resolved_database_url)
    workers = []

    def worker(name: str):
        # one torch thread: the worker shares 2 cores with the API and pytest, and torch's default (a thread per
        # core) then spins its threads against them: SLOW_AUDIT took ~40 s instead of ~4 s on a busy machine, all of
        # it waited for by the tests that let the audit run on after the fault
        with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
            proc = start_worker(settings, tmp_path / f"{name}.log", node=name)
        workers.append(proc)
        return proc

    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        model = c.post("/models", files={"weights": ("m.safetensors", digits_model[0])},
                       data={"spec": json.dumps(SPEC)}).json()
        ds = c.post("/datasets", files={"file": ("f.npz", failures_npz)}).json()
        c.body = {"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"], "edit_set": ds["id"],
                  "test_set": "builtin:digits-test", "audit": SLOW_AUDIT}
        c.settings, c.worker, c.logs = settings, worker, tmp_path
        try:
            yield c
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)


@pytest.fixture()
def stack(tmp_path, postgres_url, redis_url, digits_model, failures_npz):
    with _stack(tmp_path, postgres_url, redis_url, digits_model, failures_npz) as c:
        yield c


@pytest.fixture()
def cuttable_stack(tmp_path, postgres_url, redis_url, digits_model, failures_npz):
    """The same, with the API and the workers reaching Postgres through a proxy the test can cut."""
    proxy = TcpProxy(5432).start()
    with _stack(tmp_path, postgres_url.replace(":5432/", f":{proxy.port}/"), redis_url, digits_model,
                failures_npz) as c:
        c.postgres = proxy
        yield c
    proxy.cut()


def _wait(c, edit_id: str, until, what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        edit = c.get(f"/edits/{edit_id}").json()
        if until(edit):
            return edit
        time.sleep(0.2)
    raise AssertionError(f"edit {edit_id} never {what}: {edit}")


def _mid_audit(edit: dict) -> bool:
    p = edit.get("progress") or {}
    return edit["status"] == Status.running and p.get("stage") not in (None, "loading") and p.get("done", 0) > 0


def _exactly_once(c, edit_id: str) -> db.Edit:
    sessions = unscoped(db.session_factory(c.settings.resolved_database_url))
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        models = s.scalars(select(db.Model).where(db.Model.edit_id == edit_id)).all()
        audits = s.scalar(select(func.count()).select_from(db.Audit).where(db.Audit.edit_id == edit_id))
        family = (db.Model.id == edit.model_id) | (db.Model.parent_model_id == edit.model_id)  # the DB is shared
        all_keys = set(s.scalars(select(db.Model.object_key).where(family)))
        s.expunge(edit)
    assert edit.status == Status.succeeded and len(models) == 1 and audits == 1, (edit.status, models, audits)
    assert edit.edited_model_id == models[0].id and edit.lease_token is None
    stored = {str(p.relative_to(c.settings.data_dir / "objects")) for p in
              (c.settings.data_dir / "objects" / "models").rglob("*") if p.is_file()}
    assert stored == all_keys, "every weights object has its model row, and no row lacks its object"
    return edit


def test_a_worker_killed_mid_edit_is_replaced_and_the_edit_finishes_once(stack):
    c = stack
    first = c.worker("first")
    job = c.post("/edits", json=c.body).json()
    _wait(c, job["id"], _mid_audit, "reached the audit")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    c.worker("second")  # its reconciler finds the lapsed lease and sends the job again
    _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
    edit = _exactly_once(c, job["id"])
    assert edit.attempt == 2, "the second attempt took over the lapsed lease"
    assert c.get(f"/audits/{job['audit_id']}").json()["status"] == Status.succeeded


def test_a_second_delivery_to_a_second_worker_runs_nothing(stack):
    """What a broker's redelivery after its visibility timeout does: the same message, again, while the first
    worker is still working. The second worker finds a live lease and drops it."""
    c = stack
    c.worker("first")
    c.worker("second")
    job = c.post("/edits", json=c.body).json()
    _wait(c, job["id"], _mid_audit, "reached the audit")
    c.app.state.services.enqueue(RUN_EDIT, job["id"])  # the duplicate
    _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
    edit = _exactly_once(c, job["id"])
    assert edit.attempt == 1, "only one attempt ever took the lease"
    logs = "".join((c.logs / f"{n}.log").read_text() for n in ("first", "second"))
    assert logs.count(f"edit {job['id']}: not taken") == 1, "the duplicate was delivered and dropped"


def test_queued_jobs_whose_messages_the_broker_lost_all_complete(stack, redis_url):
    """Redis without persistence restarted: its queue is empty, the rows still say `queued`. The reconciler sends
    them again once they have waited `requeue_after_s`, and each runs once."""
    import redis

    c = stack
    c.settings.requeue_after_s = 2  # the workers read it from the environment below
    jobs = [c.post("/edits", json={**c.body, "audit": {"attacks": []}}).json() for _ in range(3)]
    broker = redis.Redis.from_url(redis_url)
    assert broker.llen(c.settings.queue) == 3
    broker.delete(c.settings.queue)  # the messages are gone, as after a restart without persistence
    c.worker("after-restart")
    for job in jobs:
        _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
        assert _exactly_once(c, job["id"]).attempt == 1


def test_a_database_outage_answers_503_and_leaves_no_stuck_edit(cuttable_stack):
    """Postgres unreachable for ~8 s in the middle of an edit: the API answers 503 problem+json with Retry-After
    (not a 500, not a hang), and afterwards, without a restart, the API answers again and the edit finishes once
    (its attempt died with the connection; the reconciler sends it again when its lease has lapsed)."""
    c = cuttable_stack
    c.worker("worker")
    job = c.post("/edits", json=c.body).json()
    _wait(c, job["id"], _mid_audit, "reached the audit")
    c.postgres.cut()
    outage_ends = time.monotonic() + 8
    answers = []
    while time.monotonic() < outage_ends:
        r = c.get(f"/edits/{job['id']}")
        answers.append(r.status_code)
        if r.status_code == 503:
            assert r.headers["content-type"].startswith("application/problem+json") and r.headers["retry-after"]
        time.sleep(0.5)
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable"), ready.text
    c.postgres.restore()
    assert set(answers) == {503}, answers
    _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
    assert c.get("/readyz").json()["status"] == "ready", "recovered without a restart"
    assert _exactly_once(c, job["id"]).attempt == 2, "the attempt that lost the database ended; a second one finished"
