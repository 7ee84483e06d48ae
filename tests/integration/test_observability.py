"""/metrics (public: latency by route template, queue depth, worker heartbeat ages; with the operator's token also
edits by status and audit durations), /readyz's worker heartbeats, and the request id, read through the in-process
API; and /readyz while a real worker is busy with a long job (Postgres, Redis, a `celery worker` process)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from editaudit.core import db
from editaudit.core.logs import JsonFormatter
from tests.conftest import unscoped

METRICS_TOKEN = "operator-prometheus-" + "s" * 24
OPERATOR = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture()
def app_settings_extra() -> dict:
    return {"metrics_token": METRICS_TOKEN}


def scrape(client, headers: dict | None = None) -> dict[str, list]:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def sample(families: dict, family: str, name: str, **labels) -> float | None:
    return next((s.value for s in families.get(family, []) if s.name == name and s.labels == labels), None)


def add_finished_edit(client, status: str = "succeeded") -> None:
    """One edit and its audit, finished now: ran for 12 s after waiting 3 s in the queue."""
    now = db.utcnow()
    with unscoped(client.services.sessions)() as s:
        model = db.Model(tenant="default", sha256="0" * 64, arch="editaudit/smallcnn", spec={}, object_key="k",
                         size_bytes=1)
        s.add(model)
        s.flush()
        edit = db.Edit(tenant="default", model_id=model.id, method="finetune_layer", layers=["fc"], hyperparams={},
                       edit_set="d", test_set="builtin:digits-test", status=status,
                       created_at=now - timedelta(seconds=15), started_at=now - timedelta(seconds=12), finished_at=now)
        s.add(edit)
        s.flush()
        s.add(db.Audit(tenant="default", edit_id=edit.id, status=status, config={},
                       created_at=now - timedelta(seconds=15), finished_at=now))
        s.commit()


def test_metrics_label_latency_by_route_template_and_read_job_state(api_client):
    api_client.get("/healthz")
    assert api_client.get("/audits/f00dfeed0123").status_code == 404
    assert api_client.get("/no/such/path/f00dfeed0123").status_code == 404
    assert api_client.get("/audits/f00dfeed0123%00").status_code == 422  # refused by the edge, before routing
    add_finished_edit(api_client)

    public = scrape(api_client)
    for family in ("editaudit_edits", "editaudit_audit_duration_seconds", "editaudit_audit_turnaround_seconds"):
        assert family not in public, f"{family} counts every tenant's jobs: not for an anonymous scrape"
    families = scrape(api_client, OPERATOR)
    latency = "editaudit_http_request_duration_seconds"
    assert sample(families, latency, latency + "_count", method="GET", route="/audits/{audit_id}", status="404") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="/healthz", status="200") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="unmatched", status="404") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="/audits/{audit_id}", status="422") == 1
    assert "f00dfeed0123" not in api_client.get("/metrics", headers=OPERATOR).text  # raw paths never become labels

    assert sample(families, "editaudit_edits", "editaudit_edits", status="succeeded") == 1
    assert sample(families, "editaudit_edits", "editaudit_edits", status="queued") == 0
    assert sample(families, "editaudit_queue_depth", "editaudit_queue_depth") == 0
    for source in ("database", "broker"):
        assert sample(families, "editaudit_metrics_source_up", "editaudit_metrics_source_up", source=source) == 1
    duration = "editaudit_audit_duration_seconds"
    assert sample(families, duration, duration + "_count", status="succeeded") == 1
    assert sample(families, duration, duration + "_sum", status="succeeded") == 12
    assert sample(families, duration, duration + "_bucket", status="succeeded", le="15.0") == 1
    assert sample(families, duration, duration + "_bucket", status="succeeded", le="5.0") == 0
    turnaround = "editaudit_audit_turnaround_seconds"
    assert sample(families, turnaround, turnaround + "_sum", status="succeeded") == 15

    # each finished audit is observed once, however often Prometheus scrapes
    assert sample(scrape(api_client, OPERATOR), duration, duration + "_count", status="succeeded") == 1


def test_metrics_show_no_tenant_figures_without_the_operator_token(api_client):
    """Public: what the service does (latency, queue, workers), nothing about whose jobs; a tenant's API key is not
    the operator's token (401), nor is a wrong one."""
    add_finished_edit(api_client)
    public = api_client.get("/metrics").text
    assert "editaudit_edits" not in public and "editaudit_audit_" not in public and "editaudit_queue_depth" in public
    for credential in ("Bearer wrong", f"Bearer {METRICS_TOKEN}x", "Basic abc"):
        r = api_client.get("/metrics", headers={"Authorization": credential})
        assert r.status_code == 401 and r.json()["errors"][0]["field"] == "Authorization", r.text
    assert 'editaudit_edits{status="succeeded"} 1.0' in api_client.get("/metrics", headers=OPERATOR).text


def test_worker_heartbeats_are_in_metrics_and_readyz_which_stays_ready_without_workers(api_client):
    """No worker at all: ready (the API serves; jobs wait in the queue), with a warning. A worker that beat: its
    age, in /readyz's body and as a gauge; one silent past worker_stale_s: stale, and the warning is back."""
    from editaudit.worker.jobs.reconcile import beat

    api_client.api.state.ready_checks = (float("-inf"), None)  # nothing cached from an earlier probe
    r = api_client.get("/readyz")
    assert r.status_code == 200 and r.json()["workers"] == {}, r.text
    assert "no worker has beaten" in r.json()["warnings"][0]
    sessions = api_client.services.sessions
    now = db.utcnow()
    beat(sessions, "celery@busy-1", now - timedelta(minutes=5), now=now - timedelta(seconds=3))
    beat(sessions, "celery@gone-2", now - timedelta(hours=1), now=now - timedelta(seconds=600))
    api_client.api.state.ready_checks = (float("-inf"), None)
    ready = api_client.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["checks"]) == {"database", "migrations", "broker", "store"}
    assert ready["workers"]["celery@busy-1"]["fresh"] and 3 <= ready["workers"]["celery@busy-1"]["age_s"] < 60
    assert not ready["workers"]["celery@gone-2"]["fresh"] and ready["warnings"] == []
    families = scrape(api_client)
    age = "editaudit_worker_heartbeat_age_seconds"
    assert 3 <= sample(families, age, age, worker="celery@busy-1") < 60
    assert sample(families, age, age, worker="celery@gone-2") >= 600
    beat(sessions, "celery@busy-1", now, now=now - timedelta(seconds=500))  # it too falls silent
    api_client.api.state.ready_checks = (float("-inf"), None)
    r = api_client.get("/readyz")
    assert r.status_code == 200 and "no worker has beaten in the last 120 s" in r.json()["warnings"][0], r.text


def test_metrics_is_public_and_documented_as_text(api_client):
    op = api_client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert op["operationId"] == "get_metrics" and op["tags"] == ["health"]
    assert "text/plain" in op["responses"]["200"]["content"]


def test_request_id_is_echoed_and_carried_by_the_log_line(api_client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("editaudit.access")
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        r = api_client.get("/audits/f00dfeed0123", headers={"X-Request-ID": "ci-run.42_a-b"})
        generated = api_client.get("/healthz", headers={"X-Request-ID": "no spaces or quotes \" allowed"})
        too_long = api_client.get("/healthz", headers={"X-Request-ID": "a" * 129})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert r.headers["X-Request-ID"] == "ci-run.42_a-b"
    for response in (generated, too_long):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first = next(line for line in lines if line["request_id"] == "ci-run.42_a-b")
    assert first["route"] == "/audits/{audit_id}" and first["path"] == "/audits/f00dfeed0123"
    assert first["status"] == 404 and first["level"] == "INFO" and first["logger"] == "editaudit.access"
    assert {line["request_id"] for line in lines[1:]} == {generated.headers["X-Request-ID"],
                                                          too_long.headers["X-Request-ID"]}



def test_admission_queues_requests_past_the_limit_and_answers_503_once_they_waited_too_long():
    """One slot: a second request waits db_pool_timeout_s and gets a 503, whatever its content type says; a request
    whose body is still arriving holds no slot (one admitted later finishes first) and takes one once it is in."""
    import anyio
    from starlette.responses import PlainTextResponse

    from editaudit.service.admission import Admission

    class App:  # what the middleware reads from scope["app"] (weakly referenced: a class, not a namespace)
        settings = SimpleNamespace(api_threads=1, db_pool_timeout_s=0.05)
        state = SimpleNamespace(services=SimpleNamespace(settings=settings))

    fake, entered, finished, statuses, events = App(), [], [], {}, {}

    async def inner(scope, receive, send):
        entered.append(scope["path"])
        if scope["path"] == "/slow":
            await events["release"].wait()
        if scope["path"] == "/trickle":
            await receive()
        await PlainTextResponse("ok")(scope, receive, send)
        finished.append(scope["path"])

    async def call(path: str, headers=((b"content-type", b"application/json"),)) -> None:
        sent = []

        async def receive():
            if path == "/trickle":
                await events["body"].wait()
            return {"type": "http.request", "body": b"0123456789", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "app": fake, "path": path, "method": "POST", "headers": list(headers)}
        await Admission(inner)(scope, receive, send)
        statuses[path] = sent[0]["status"]

    async def main():
        events["release"], events["body"] = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "/slow")  # takes the only slot
            while "/slow" not in entered:
                await anyio.sleep(0)
            await call("/refused")  # waits db_pool_timeout_s for it, then 503
            await call("/multipart", [(b"content-type", b"multipart/form-data; boundary=x")])  # no way around it
            App.settings.db_pool_timeout_s = 60
            tg.start_soon(call, "/trickle", [(b"content-length", b"10")])  # its body is not in: no slot yet
            while "/trickle" not in entered:
                await anyio.sleep(0)
            tg.start_soon(call, "/queued")  # waits for the slot, and gets it once /slow is done
            events["release"].set()
            while "/queued" not in finished:
                await anyio.sleep(0)
            events["body"].set()

    anyio.run(main)
    assert statuses == {"/slow": 200, "/refused": 503, "/multipart": 503, "/trickle": 200, "/queued": 200}
    assert finished == ["/slow", "/queued", "/trickle"]


def test_the_reconciler_thread_beats_into_the_database_and_forgets_long_silent_workers(tmp_path):
    from editaudit.core.migrate import upgrade
    from editaudit.worker.jobs.reconcile import HEARTBEAT_FORGET_S, start_reconciler
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, reconcile_every_s=0.2)
    upgrade(settings.resolved_database_url)
    sessions = unscoped(db.session_factory(settings.resolved_database_url))
    with sessions() as s:
        long_ago = db.utcnow() - timedelta(seconds=HEARTBEAT_FORGET_S + 60)
        s.add(db.WorkerHeartbeat(name="celery@scaled-away", beat_at=long_ago, started_at=long_ago))
        s.commit()
    stop = start_reconciler(sessions, lambda _id: None, settings, name="celery@test")
    try:
        beats = []
        for _ in range(200):
            with sessions() as s:
                row = s.get(db.WorkerHeartbeat, "celery@test")
                beats.append(row.beat_at if row else None)
            if len({b for b in beats if b}) >= 2:
                break
            time.sleep(0.05)
        assert len({b for b in beats if b}) >= 2, "beats every pass"
        with sessions() as s:
            assert set(db.heartbeat_ages(s)) == {"celery@test"}, "the long-silent worker was forgotten"
    finally:
        stop.set()


@pytest.mark.slow
def test_readyz_stays_ready_while_the_only_worker_runs_a_long_job(tmp_path, postgres_url, redis_url, digits_model,
                                                                   failures_npz):
    """The production path: one solo-pool `celery worker`, busy with a long PGD audit, often answers no ping;
    /readyz used to ping and so answered 503 during every job. Now it is 200 throughout, with the worker's
    heartbeat (its reconciler thread beats while the job thread works) in its body and in /metrics."""
    from tests.integration.test_faults import _mid_audit, _stack, _wait

    long_audit = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 3000}]}
    with _stack(tmp_path, postgres_url, redis_url, digits_model, failures_npz, metrics_token=METRICS_TOKEN) as c:
        c.worker("solo")
        job = c.post("/edits", json={**c.body, "audit": long_audit}).json()
        _wait(c, job["id"], _mid_audit, "reached the audit")
        answers = []
        for _ in range(16):  # 8 s: past the readiness cache (2 s) several times
            r = c.get("/readyz")
            answers.append((r.status_code, r.json()))
            time.sleep(0.5)
        assert c.get(f"/edits/{job['id']}").json()["status"] == "running", "the job ran all along"
        families = scrape(c)
    assert [code for code, _ in answers] == [200] * len(answers), answers
    body = answers[-1][1]
    assert body["status"] == "ready" and body["warnings"] == [], body
    # the shared test database also holds the beats of earlier tests' workers: this test's is named by its node
    name, beat = next((n, b) for n, b in body["workers"].items() if n.startswith(f"embedded-{os.getpid()}-solo@"))
    assert beat["fresh"] and beat["age_s"] < 60, body
    age = "editaudit_worker_heartbeat_age_seconds"
    assert sample(families, age, age, worker=name) < 60
