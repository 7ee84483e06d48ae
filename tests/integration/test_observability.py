"""/metrics (latency by route template, edits by status, audit durations, queue depth) and the request id, read
through the in-process API."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import timedelta
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from editaudit.core import db
from editaudit.core.logs import JsonFormatter
from tests.conftest import unscoped


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
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

    families = scrape(api_client)
    latency = "editaudit_http_request_duration_seconds"
    assert sample(families, latency, latency + "_count", method="GET", route="/audits/{audit_id}", status="404") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="/healthz", status="200") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="unmatched", status="404") == 1
    assert sample(families, latency, latency + "_count", method="GET", route="/audits/{audit_id}", status="422") == 1
    assert "f00dfeed0123" not in api_client.get("/metrics").text  # raw paths never become labels

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
    assert sample(scrape(api_client), duration, duration + "_count", status="succeeded") == 1


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
