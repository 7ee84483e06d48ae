"""Webhooks end to end, with real parts: a real HTTP receiver on 127.0.0.1 (http.server on a thread), the API in
process, the real job code finishing an edit, and the worker's delivery loop (editaudit.worker.jobs.webhooks)
running for real. The receiver checks each signature with its own implementation of the Standard Webhooks check.
Waits poll with generous deadlines that only bound a failure; nothing asserts on elapsed time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from editaudit.core import db
from tests.conftest import key_headers, unscoped, wait_until
from tests.integration.test_api_errors import assert_problem

WAIT_S = 60
FAST = {"attacks": [], "max_samples": 64}


def _until(cond, what: str, timeout: float = WAIT_S):
    return wait_until(cond, what, timeout, poll=0.05)


# --- an independent Standard Webhooks verifier (what a receiver runs) ----------------------------------------------

class BadSignature(Exception):
    pass


def verify(secret: str, headers: dict, body: bytes, tolerance_s: int = 300) -> dict:
    """The Standard Webhooks check: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the base64 key after `whsec_`,
    compared in constant time with any `v1,` signature of the space-separated list; a stale timestamp is refused."""
    msg_id, stamp, signatures = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
    if abs(time.time() - int(stamp)) > tolerance_s:
        raise BadSignature("timestamp outside the tolerance")
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.{body.decode()}".encode(), hashlib.sha256)
                                .digest()).decode()
    for sig in signatures.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise BadSignature("no matching v1 signature")


# --- a real receiver ------------------------------------------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1: records every POST (path, lower-cased headers, body) and answers each path with
    its scripted statuses in turn, then 200."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.scripts: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    script = receiver.scripts.get(self.path, [])
                    code = script.pop(0) if script else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[tuple[dict, bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.requests if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def app_settings_extra(receiver) -> dict:
    return {"webhook_allowed_hosts": [f"127.0.0.1:{receiver.port}", "hooks.example.com"], "webhook_backoff_s": 0.2}


@contextmanager
def delivering(settings):
    """The worker's delivery loop, for real, on a thread of this process (as each worker process runs it)."""
    from editaudit.worker.jobs.webhooks import start_deliverer

    stop = start_deliverer(unscoped(db.session_factory(settings.resolved_database_url)), settings, poll_s=0.05)
    try:
        yield
    finally:
        stop.set()


def deliveries(c, hook_id: str, headers: dict | None = None) -> list[dict]:
    r = c.get(f"/webhooks/{hook_id}/deliveries", headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def settled(c, hook_id: str, n: int, headers: dict | None = None) -> list[dict]:
    """The webhook's deliveries once there are `n` and all have ended (succeeded or failed)."""
    def done():
        items = deliveries(c, hook_id, headers)
        return items if len(items) == n and all(d["status"] in ("succeeded", "failed") for d in items) else None
    return _until(done, f"{n} deliveries of {hook_id} ended")


def register(c, url: str, events=("*",), headers: dict | None = None) -> dict:
    r = c.post("/webhooks", json={"url": url, "events": list(events), "description": "ci"}, headers=headers or {})
    assert r.status_code == 201, r.text
    return r.json()


# --- the tests ------------------------------------------------------------------------------------------------------

def test_a_delivery_is_signed_as_standard_webhooks_do_it(api_client, receiver):
    c = api_client
    hook = register(c, receiver.url("/hook"))
    assert hook["secret"].startswith("whsec_") and c.get(f"/webhooks/{hook['id']}").json().get("secret") is None
    assert "secret" not in c.get("/webhooks").json()["items"][0]
    queued = c.post(f"/webhooks/{hook['id']}/test")
    assert queued.status_code == 202 and queued.json()["status"] == "pending"
    with delivering(c.settings):
        [delivery] = settled(c, hook["id"], 1)
    [(headers, body)] = receiver.at("/hook")
    event = verify(hook["secret"], headers, body)
    assert event["type"] == "ping" and event["data"] == {"webhook_id": hook["id"]}
    assert headers["webhook-id"] == delivery["id"] == queued.json()["id"]
    assert headers["content-type"] == "application/json"
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    assert delivery["delivered_at"] and delivery["payload"] == event
    # what a receiver must refuse: a tampered body, another secret, a replayed old timestamp
    with pytest.raises(BadSignature):
        verify(hook["secret"], headers, body.replace(b"ping", b"pong"))
    with pytest.raises(BadSignature):
        verify("whsec_" + base64.b64encode(b"k" * 32).decode(), headers, body)
    with pytest.raises(BadSignature):
        verify(hook["secret"], {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}, body)


def test_a_receiver_error_is_retried_and_every_attempt_recorded(api_client, receiver):
    c = api_client
    hook = register(c, receiver.url("/flaky"))
    receiver.scripts["/flaky"] = [500]
    c.post(f"/webhooks/{hook['id']}/test")
    with delivering(c.settings):
        [delivery] = settled(c, hook["id"], 1)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    assert [a["status_code"] for a in delivery["history"]] == [500, 200]
    assert "HTTP 500" in delivery["history"][0]["error"] and delivery["last_error"] is None
    sent = receiver.at("/flaky")
    assert len(sent) == 2
    assert {h["webhook-id"] for h, _ in sent} == {delivery["id"]}  # one message id across retries
    for headers, body in sent:
        verify(hook["secret"], headers, body)


def test_delivery_gives_up_after_max_attempts(api_client, receiver):
    c = api_client
    settings = c.settings.model_copy(update={"webhook_max_attempts": 3})
    hook = register(c, receiver.url("/down"))
    receiver.scripts["/down"] = [503] * 10
    c.post(f"/webhooks/{hook['id']}/test")
    with delivering(settings):
        [delivery] = settled(c, hook["id"], 1)
    assert delivery["status"] == "failed" and delivery["attempts"] == 3 and delivery["last_status_code"] == 503
    assert len(receiver.at("/down")) == 3


def test_hosts_outside_the_allow_list_are_refused(api_client, receiver, tmp_path):
    c = api_client
    for url, reason in (("https://evil.example.org/x", "not in the operator's allow-list"),
                        ("http://169.254.169.254/latest/meta-data", "not in the operator's allow-list"),
                        (f"http://127.0.0.1:{receiver.port + 1}/x", "not in the operator's allow-list"),
                        ("ftp://hooks.example.com/x", "http or https"),
                        ("https://me:pw@hooks.example.com/x", "credentials")):
        body = assert_problem(c.post("/webhooks", json={"url": url}), 422, "url")
        assert reason in body["detail"], body
    assert c.get("/webhooks").json()["items"] == []
    # allowed when registered; the operator then removes the host: the delivery is refused, never sent
    hook = register(c, receiver.url("/removed"))
    c.post(f"/webhooks/{hook['id']}/test")
    shrunk = c.settings.model_copy(update={"webhook_allowed_hosts": ["hooks.example.com"]})
    with delivering(shrunk):
        [delivery] = settled(c, hook["id"], 1)
    assert delivery["status"] == "failed" and delivery["attempts"] == 1 and delivery["last_status_code"] is None
    assert "refused, not sent" in delivery["last_error"] and "allow-list" in delivery["last_error"]
    assert receiver.at("/removed") == []


def test_without_an_allow_list_webhooks_are_off(tmp_path):
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        body = assert_problem(c.post("/webhooks", json={"url": "https://hooks.example.com/x"}), 422, "url")
        assert "allows no webhook hosts" in body["detail"]


def test_webhooks_need_the_admin_scope_and_validate_events(api_client, receiver):
    c = api_client
    reader = key_headers(c.settings, "default", ["audits:read", "gate:read", "edits:write"], name="reader")
    admin = key_headers(c.settings, "default", name="admin")
    assert_problem(c.post("/webhooks", json={"url": receiver.url("/x")}, headers=reader), 403)
    assert_problem(c.get("/webhooks", headers=reader), 403)
    assert_problem(c.post("/webhooks", json={"url": receiver.url("/x"), "events": ["edit.exploded"]},
                          headers=admin), 422, "events.0")
    hook = register(c, receiver.url("/x"), ["edit.failed", "edit.failed", "gate.evaluated"], headers=admin)
    assert hook["events"] == ["edit.failed", "gate.evaluated"]
    assert_problem(c.delete(f"/webhooks/{hook['id']}", headers=reader), 403)
    assert c.delete(f"/webhooks/{hook['id']}", headers=admin).status_code == 204
    assert_problem(c.get(f"/webhooks/{hook['id']}", headers=admin), 404, "webhook_id")
    assert_problem(c.delete(f"/webhooks/{hook['id']}", headers=admin), 404, "webhook_id")


def test_a_retried_create_returns_the_same_webhook(api_client, receiver):
    c = api_client
    key = {"Idempotency-Key": "ci-hook-1"}
    first = c.post("/webhooks", json={"url": receiver.url("/i")}, headers=key)
    again = c.post("/webhooks", json={"url": receiver.url("/i")}, headers=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(c.get("/webhooks").json()["items"]) == 1


def test_edit_events_reach_their_tenant_once_and_no_other(edit_factory, receiver):
    """An edit that finishes emits edit.succeeded and audit.completed once, however often its finish path runs
    (a redelivered job, the event write repeated); the gate emits gate.evaluated; tenant B, with a webhook of its
    own, gets none of A's events and cannot see or delete A's webhook."""
    from editaudit.core import webhooks
    from editaudit.worker.jobs import run_edit_job

    c = edit_factory.client
    a, b = key_headers(c.settings, "default", name="alice"), key_headers(c.settings, "team-b", name="bob")
    c.headers.update(a)
    mine = register(c, receiver.url("/a"))
    only_failures = register(c, receiver.url("/a-failed"), ["edit.failed"])
    theirs = register(c, receiver.url("/b"), headers=b)
    job = edit_factory.submit(audit=FAST)
    assert c.get(f"/edits/{job['id']}").json()["status"] == "succeeded"
    run_edit_job(c.settings, job["id"])  # a redelivered message: the finished edit is left alone
    sessions = unscoped(db.session_factory(c.settings.resolved_database_url))
    with sessions() as s:  # the finish path's event write, run again
        webhooks.edit_finished(s, s.get(db.Edit, job["id"]))
        s.commit()
    gate = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"})
    assert gate.status_code == 200
    promoted = c.post(f"/edits/{job['id']}/promote", json={"alias": "production", "policy": "default",
                                                           "override_reason": "webhook test: ship it regardless"})
    assert promoted.status_code == 200, promoted.text
    # B cannot see, test or delete A's webhook, nor read its deliveries
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/deliveries"), ("POST", "/test")):
        assert_problem(c.request(method, f"/webhooks/{mine['id']}{path}", headers=b), 404, "webhook_id")
    assert [h["id"] for h in c.get("/webhooks", headers=b).json()["items"]] == [theirs["id"]]
    with delivering(c.settings):
        done = settled(c, mine["id"], 4)
    assert sorted(d["event"] for d in done) == ["audit.completed", "edit.succeeded", "gate.evaluated",
                                                "gate.evaluated"]
    assert all(d["status"] == "succeeded" for d in done)
    received = [verify(mine["secret"], h, body) for h, body in receiver.at("/a")]
    assert sorted(e["type"] for e in received) == sorted(d["event"] for d in done)
    gates = [e["data"] for e in received if e["type"] == "gate.evaluated"]
    assert [g.get("promotion") for g in gates if g.get("promotion")] == [
        {"alias": "production", "outcome": promoted.json()["outcome"]}]
    events = {e["type"]: e for e in received if "promotion" not in e["data"]}
    data = events["edit.succeeded"]["data"]
    assert data["edit_id"] == job["id"] and data["audit_id"] == job["audit_id"] and data["status"] == "succeeded"
    assert data["edited_model_id"] == c.get(f"/edits/{job['id']}").json()["edited_model_id"]
    assert "metrics" not in json.dumps(events)  # ids and verdicts only
    assert events["gate.evaluated"]["data"]["verdict"] == gate.json()["verdict"]
    assert events["gate.evaluated"]["data"]["policy"] == {"name": "default", "version": "builtin"}
    assert deliveries(c, only_failures["id"]) == [] and receiver.at("/a-failed") == []
    assert deliveries(c, theirs["id"], headers=b) == [] and receiver.at("/b") == []
    with sessions() as s:
        assert len(s.scalars(select(db.WebhookDelivery).filter_by(event="edit.succeeded")).all()) == 1


def test_a_failed_and_a_canceled_edit_emit_their_events(edit_factory, receiver):
    from editaudit.worker.jobs import run_edit_job

    c = edit_factory.client
    hook = register(c, receiver.url("/ends"), ["edit.failed", "edit.canceled"])
    queued = edit_factory.submit(run=False, audit=FAST)
    assert c.post(f"/edits/{queued['id']}/cancel").status_code == 200
    assert c.post(f"/edits/{queued['id']}/cancel").status_code == 409  # already ended: no second event
    broken = edit_factory.submit(run=False, audit=FAST)
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:  # its checkpoint is gone: the job fails
        c.services.store.delete(s.get(db.Model, edit_factory.model["id"]).object_key)
    run_edit_job(c.settings, broken["id"])
    assert c.get(f"/edits/{broken['id']}").json()["status"] == "failed"
    with delivering(c.settings):
        done = {d["event"]: d for d in settled(c, hook["id"], 2)}
    assert set(done) == {"edit.canceled", "edit.failed"}
    assert done["edit.canceled"]["payload"]["data"]["edit_id"] == queued["id"]
    assert done["edit.failed"]["payload"]["data"]["edit_id"] == broken["id"]
    assert {e["type"] for e in (verify(hook["secret"], h, b) for h, b in receiver.at("/ends"))} == set(done)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def database_url(request, tmp_path):
    from editaudit.core.migrate import upgrade
    from tests.conftest import postgres_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
        upgrade(url)
        yield url
    else:
        with postgres_database() as url:
            upgrade(url)
            yield url


def test_the_outbox_writes_an_event_once_and_a_delivery_is_claimed_once(database_url):
    """Two writers of one edit's end (concurrent transactions) leave one row; two senders claim it once; a lease
    that lapsed (its sender died) is taken over, counting the attempt."""
    from datetime import timedelta

    from editaudit.core import webhooks
    from editaudit.worker.jobs.webhooks import LEASE_S, claim

    sessions = unscoped(db.session_factory(database_url))
    with sessions() as s:
        hook = db.Webhook(tenant="t", url="http://hooks.example.com/", events=["*"], secret=webhooks.new_secret())
        s.add(hook)
        s.commit()
    data = {"edit_id": "e1"}
    written: list[list[str]] = []
    with sessions() as first:
        written.append(webhooks.emit(first, "t", "edit.succeeded", data, dedupe_key="edit:e1"))
        second = threading.Thread(target=lambda: _emit_and_commit(sessions, written, data))
        second.start()  # blocks on the first's uncommitted row (Postgres) or the database lock (SQLite)
        second.join(0.5)
        first.commit()
    second.join(WAIT_S)
    assert not second.is_alive() and len(written[0]) == 1 and written[1] == []
    with sessions() as s:
        assert webhooks.emit(s, "other-tenant", "edit.succeeded", data) == []  # no webhook of theirs
        assert s.query(db.WebhookDelivery).count() == 1
    now = db.utcnow()
    with sessions() as s1, sessions() as s2:
        tokens = [claim(s1, written[0][0], now, 8), claim(s2, written[0][0], now, 8)]
    assert sum(t is not None for t in tokens) == 1
    with sessions() as s:
        later = now + timedelta(seconds=LEASE_S + 1)
        assert claim(s, written[0][0], later, 8) is not None  # the first sender's lease lapsed
        assert s.get(db.WebhookDelivery, written[0][0]).attempts == 2
        assert claim(s, written[0][0], later + timedelta(seconds=LEASE_S + 1), 2) is None  # out of attempts
        s.expire_all()
        row = s.get(db.WebhookDelivery, written[0][0])
        assert row.status == "failed" and "gave up after 2 attempts" in row.last_error


def _emit_and_commit(sessions, written, data):
    from editaudit.core import webhooks

    with sessions() as s:
        written.append(webhooks.emit(s, "t", "edit.succeeded", data, dedupe_key="edit:e1"))
        s.commit()


@pytest.mark.slow
def test_the_embedded_worker_delivers(tmp_path, receiver):
    """`editaudit serve` runs the worker code, so it delivers too: a ping through a real worker process."""
    import httpx

    from editaudit.cli.embedded import EmbeddedServer
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, webhook_allowed_hosts=[f"127.0.0.1:{receiver.port}"], webhook_backoff_s=0.2)
    with EmbeddedServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        hook = http.post("/webhooks", json={"url": receiver.url("/embedded")}).json()
        http.post(f"/webhooks/{hook['id']}/test")
        [(headers, body)] = _until(lambda: receiver.at("/embedded"), "the embedded worker sent the ping", 180)
        assert verify(hook["secret"], headers, body)["type"] == "ping"
