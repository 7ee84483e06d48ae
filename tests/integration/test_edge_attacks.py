"""The edge under the attacks an independent review found, over real HTTP (uvicorn on loopback) with keys
required: clients trickling bodies cannot take the server's capacity, a refused upload's connection is closed
rather than drained, and no content type smuggles a NUL or a lone surrogate past the edge."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from editaudit.core.migrate import upgrade
from editaudit.service.app import create_app
from tests.conftest import key_headers, make_settings, serve_over_http

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
