"""A study on real workers (Postgres, Redis, `celery worker` processes on loopback): its runs are spread over two
workers; a worker SIGKILLed in the middle of a run costs that run one more attempt and nothing else: runs that had
finished are not redone, and the study finishes with every run succeeded."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from editaudit.contracts.statuses import Status
from editaudit.core import db
from tests.conftest import postgres_database, unscoped
from tests.integration.test_faults import SLOW_AUDIT, _stack
from tests.integration.test_sharded_workers import _until

pytestmark = pytest.mark.slow


@pytest.fixture()
def stack(tmp_path, redis_url, digits_model, failures_npz):
    """A database of its own: other tests' unfinished edits in the shared one would be taken up by these workers."""
    with postgres_database() as url, _stack(tmp_path, url, redis_url, digits_model, failures_npz) as c:
        yield c


def _runs(c, study_id: str) -> list[db.Edit]:
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        rows = s.scalars(select(db.Edit).filter_by(study_id=study_id).order_by(db.Edit.study_index)).all()
        for r in rows:
            s.expunge(r)
        return list(rows)


def test_runs_spread_over_two_workers_and_a_killed_worker_costs_one_run_one_retry(stack):
    c = stack
    workers = {p.pid: p for p in (c.worker("a"), c.worker("b"))}
    body = {k: c.body[k] for k in ("model_id", "edit_set", "test_set")}
    job = c.post("/studies", json={**body, "audit": SLOW_AUDIT, "grid": {
        "methods": ["finetune_layer"], "layers": ["fc"], "seeds": [0, 1, 2, 3, 4, 5], "interpolate": False}})
    assert job.status_code == 202, job.text
    study_id = job.json()["id"]

    def one_done_and_one_mid_run():
        rows = _runs(c, study_id)
        done = [r for r in rows if r.status == Status.succeeded]
        running = [r for r in rows if r.status == Status.running and (r.progress or {}).get("done", 0) > 0
                   and r.worker]
        return (done, running[0]) if done and running else None

    done_before, victim = _until(one_done_and_one_mid_run, "saw a run finish while another was mid-run")
    finished_at = {r.id: r.finished_at for r in done_before}
    pid = int(victim.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    workers[pid].wait(timeout=30)
    c.worker("c")  # the study resumes on whatever workers are left and come

    study = _until(lambda: (s := c.get(f"/studies/{study_id}").json())["status"] != "running" and s,
                   "saw the study finish")
    assert study["status"] == "succeeded" and study["counts"] == {"succeeded": 6}, study["counts"]
    rows = _runs(c, study_id)
    attempts = {r.id: r.attempt for r in rows}
    assert attempts[victim.id] == 2, "the killed run ran again"
    assert all(n == 1 for i, n in attempts.items() if i != victim.id), f"no other run was redone: {attempts}"
    assert all(r.finished_at == finished_at[r.id] for r in rows if r.id in finished_at), "finished runs untouched"
    assert len({r.worker.rsplit(":", 1)[1] for r in rows}) >= 2, "the runs were spread over the workers"
    assert len(study["summary"]["runs"]) == 6
