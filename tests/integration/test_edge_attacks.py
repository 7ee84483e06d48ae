"""The edge under the attacks an independent review found, over real HTTP (uvicorn on loopback) with keys
required: clients trickling bodies cannot take the server's capacity, a refused upload's connection is closed
rather than drained, and no content type smuggles a NUL or a lone surrogate past the edge. And the door's other
refusals: two Authorization headers, non-finite numbers, out-of-range seeds, timestamps that are not ISO 8601 with a
timezone; a 405 says what is allowed."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from editaudit.core.migrate import upgrade
from editaudit.service.app import create_app
from tests.conftest import SPEC, key_headers, make_settings, serve_over_http

WAIT_S = 60  # generous: every wait below ends as soon as its condition holds


@pytest.fixture()
def server(tmp_path):
    settings = make_settings(tmp_path, api_threads=2, db_pool_timeout_s=1,
                             body_timeout_s=2, max_upload_mb=4)
    upgrade(settings.resolved_database_url)
    headers = key_headers(settings, "team-a")
    with serve_over_http(create_app(settings)) as url:
        yield url, headers


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(WAIT_S)
    return s


def test_trickled_bodies_hold_no_capacity_and_time_out(server):
    url, headers = server
    token = headers["Authorization"]
    stalled = []
    for path in ("/healthz", "/gate", "/gate", "/policies", "/edits"):  # more than api_threads
        s = _connect(url)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\n"
                  "Content-Length: 1000\r\n\r\n{".encode())
        stalled.append(s)
    r = httpx.get(f"{url}/models", headers=headers, timeout=WAIT_S)
    assert r.status_code == 200, r.text  # answered while five clients sit on half-sent bodies
    reply = stalled[1].recv(4096)
    assert reply.startswith(b"HTTP/1.1 408") and b"connection: close" in reply.lower()
    for s in stalled:
        s.close()


def test_a_refused_upload_is_cut_off_not_drained(server):
    url, _ = server
    s = _connect(url)
    s.sendall(b"POST /datasets HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=a\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 401")
    sent, chunk = 0, b"100000\r\n" + b"a" * (1 << 20) + b"\r\n"
    with pytest.raises(OSError):  # reset or broken pipe: the server stopped reading
        for _ in range(512):
            s.sendall(chunk)
            sent += 1
            time.sleep(0.01)
    assert sent < 512
    s.close()


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON", "application/x+json",
                                          "text/plain"])
def test_no_content_type_smuggles_a_nul_or_a_lone_surrogate(server, content_type):
    url, headers = server
    for body, why in ((b'{"edit_id": "a\\u0000b", "policy": "default"}', "NUL"),
                      (b'{"edit_id": "\\ud800", "policy": "default"}', "lone surrogate")):
        r = httpx.post(f"{url}/gate", content=body, headers={**headers, "Content-Type": content_type},
                       timeout=WAIT_S)
        assert r.status_code == 422, (content_type, why, r.text)
        assert why in r.json()["detail"]
    ok = httpx.post(f"{url}/gate", content=b'{"edit_id": "\\ud83d\\ude00", "policy": "default"}',
                    headers={**headers, "Content-Type": content_type}, timeout=WAIT_S)
    assert ok.status_code in (404, 415, 422) and "surrogate" not in ok.text  # a valid pair is a character


def test_extreme_timestamps_are_422_not_500(server):
    url, headers = server
    for value in ("9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"):
        r = httpx.get(f"{url}/edits", params={"created_after": value}, headers=headers, timeout=WAIT_S)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text


def test_a_chunked_upload_past_the_limit_is_a_413_from_the_edge(server):
    """No Content-Length to refuse up front: the body is counted as it streams and the app's own answer to the
    cut-off read is replaced by the 413."""
    url, headers = server
    s = _connect(url)
    s.sendall(f"POST /datasets HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n"
              "Content-Type: multipart/form-data; boundary=a\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    part = b"--a\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.npz\"\r\n\r\n"
    s.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    reply, chunk = b"", b"100000\r\n" + b"a" * (1 << 20) + b"\r\n"
    try:
        for _ in range(16):  # the limit is 4 MiB (+1 for the form's other parts)
            s.sendall(chunk)
    except OSError:
        pass
    while b"\r\n\r\n" not in reply:
        data = s.recv(4096)
        if not data:
            break
        reply += data
    assert reply.startswith(b"HTTP/1.1 413") and b"problem+json" in reply, reply[:300]
    s.close()


def _problem(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json"), r.text
    body = r.json()
    if field is not None:
        assert any(e["field"] == field for e in body.get("errors", [])), body
    return body


def test_two_authorization_headers_are_refused(server):
    """Which one would count is up to whoever reads them (a proxy may check the first, the app the last): none
    does. Refused on every path, whether the keys agree or not."""
    url, headers = server
    good = headers["Authorization"]
    for pair in ((good, good), (good, "Bearer ea_not-a-key"), ("Bearer ea_not-a-key", good)):
        for path in ("/models", "/healthz", "/metrics"):
            r = httpx.get(f"{url}{path}", headers=[("Authorization", pair[0]), ("Authorization", pair[1])],
                          timeout=WAIT_S)
            assert "more than one Authorization" in _problem(r, 400, "Authorization")["detail"]
    assert httpx.get(f"{url}/models", headers=headers, timeout=WAIT_S).status_code == 200


def test_a_405_says_what_the_path_allows(server):
    url, headers = server
    for method, path, allowed in (("DELETE", "/models", "GET, POST"), ("PUT", "/healthz", "GET"),
                                  ("PATCH", "/policies", "GET, POST"), ("POST", "/metrics", "GET")):
        r = httpx.request(method, f"{url}{path}", headers=headers, timeout=WAIT_S)
        _problem(r, 405)
        assert r.headers["allow"] == allowed, (method, path, r.headers.get("allow"))


@pytest.mark.parametrize("path", ["/models", "/datasets", "/edits", "/audits", "/webhooks"])
def test_timestamps_are_iso_8601_with_a_timezone_only(server, path):
    """`0.5` was read as Unix time (1970), a zone-less time as local: each a silent wrong filter."""
    url, headers = server
    for value in ("0.5", "1700000000", "2026-01-31T12:00:00", "2026-01-31", "yesterday", ""):
        r = httpx.get(f"{url}{path}", params={"created_after": value}, headers=headers, timeout=WAIT_S)
        _problem(r, 422, "created_after")
    for value in ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00+02:00", "2026-01-31T12:00:00.123456-05:30"):
        r = httpx.get(f"{url}{path}", params={"created_after": value}, headers=headers, timeout=WAIT_S)
        assert r.status_code == 200, (value, r.text)


POLICY = {"version": 1, "rules": [{"metric": "test.accuracy", "max_drop": 0.01}]}


def _nonfinite_bodies() -> list[tuple[str, bytes, str]]:
    """(path, raw JSON body, the field its non-finite number is at): what Python's json.dumps writes by default."""
    policy = json.dumps({"name": "p", "policy": POLICY})
    return [("/policies", policy.replace("0.01", literal).encode(), "policy.rules.0.max_drop")
            for literal in ("NaN", "Infinity", "-Infinity", "1e999")] + [
        ("/gate", b'{"edit_id": "x", "policy": {"version": 1, "rules": [{"metric": "test.accuracy", "min": NaN}]}}',
         "policy.rules.0.min"),
        ("/edits", b'{"model_id": "x", "method": "finetune_layer", "edit_set": "d", "test_set": "t", "audit": '
                   b'{"attacks": [{"name": "pgd", "eps": Infinity}]}}', "audit.attacks.0.eps")]


def test_non_finite_numbers_are_refused_at_the_door(server):
    """NaN, Infinity and 1e999 parse as floats in Python: SQLite stored them, Postgres refused them (a 500). The
    edge refuses them in every body, naming the field, before any route or database sees them."""
    url, headers = server
    for path, body, field in _nonfinite_bodies():
        r = httpx.post(f"{url}{path}", content=body, headers={**headers, "Content-Type": "application/json"},
                       timeout=WAIT_S)
        assert "numbers must be finite" in _problem(r, 422, field)["detail"], (path, body)
    _problem(httpx.get(f"{url}/policies/p", headers=headers, timeout=WAIT_S), 404)
    ok = httpx.post(f"{url}/policies", json={"name": "p", "policy": POLICY}, headers=headers, timeout=WAIT_S)
    assert ok.status_code == 201, ok.text


def test_non_finite_numbers_are_refused_in_the_postgres_mode_too(tmp_path, postgres_url):
    from fastapi.testclient import TestClient

    settings = make_settings(tmp_path, database_url=postgres_url)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        for path, body, field in _nonfinite_bodies():
            _problem(c.post(path, content=body, headers={"Content-Type": "application/json"}), 422, field)


SEED_MAX = 2**31 - 1


def test_out_of_range_seeds_are_refused_at_the_door(server, digits_model, failures_npz):
    """Every seed (the edit's, the audit's, an attack's) is 0 .. 2**31-1, what every generator the job hands it to
    takes: 2**70 was accepted and the job failed later."""
    url, headers = server
    c = httpx.Client(base_url=url, headers=headers, timeout=WAIT_S)
    model = c.post("/models", files={"weights": ("m.safetensors", digits_model[0])},
                   data={"spec": json.dumps(SPEC)}).json()
    ds = c.post("/datasets", files={"file": ("f.npz", failures_npz)}).json()
    body = {"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"], "edit_set": ds["id"],
            "test_set": "builtin:digits-test", "audit": {"attacks": [{"name": "fgsm", "eps": 0.03}], "max_samples": 8}}
    for seed in (2**70, SEED_MAX + 1, -1):
        _problem(c.post("/edits", json={**body, "hyperparams": {"seed": seed}}), 422, "hyperparams.seed")
        _problem(c.post("/edits", json={**body, "audit": {**body["audit"], "seed": seed}}), 422, "audit.seed")
        r = c.post("/edits", json={**body, "audit": {**body["audit"], "attacks": [{"name": "fgsm", "seed": seed}]}})
        assert any(e["field"].startswith("audit.attacks.0") and e["field"].endswith("seed")
                   for e in _problem(r, 422)["errors"]), r.text
        _problem(c.post("/audit-profiles", json={"name": "p", "audit": {"seed": seed}}), 422)
    assert c.get("/edits").json()["items"] == [], "nothing was created"
    ok = c.post("/edits", json={**body, "hyperparams": {"seed": SEED_MAX},
                                "audit": {**body["audit"], "seed": SEED_MAX}})
    assert ok.status_code == 202, ok.text
