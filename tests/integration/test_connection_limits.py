"""Connection-level limits (editaudit.service.server, issue 22) over real sockets on loopback, no mocks: a connection
that sends no request head is closed, one address cannot hold more than its share, idle connections cannot take the
health probe's place, a trickling upload is cut off with a 408, and failed accepts are logged per burst.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client socket bound to 127.0.0.2 is a second client
address (127.0.0.1 is exempt from the per-address cap by default: the health probe's). Every wait below is bounded
by WAIT_S and ends as soon as its condition holds; nothing asserts how long anything took."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx

from editaudit.core.migrate import upgrade
from editaudit.service.app import create_app
from editaudit.service.server import make_server
from tests.conftest import key_headers, make_settings

WAIT_S = 60
TOKEN = "connection-limits-test-token-0123456789"


@contextmanager
def served(tmp_path, **overrides):
    """The app behind make_server (what both run modes use) on a thread; yields (url, server, key headers)."""
    from editaudit.cli.embedded import free_port

    settings = make_settings(tmp_path, **overrides)
    upgrade(settings.resolved_database_url)
    headers = key_headers(settings, "team-a")
    port = free_port()
    server = make_server(create_app(settings), settings, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", server, headers
    finally:
        server.should_exit = True
        thread.join(30)


def connect(url: str, source: str | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(WAIT_S)
    s.connect((host, int(port)))
    return s


def closed_by_server(s: socket.socket) -> bool:
    """Waits (at most WAIT_S) for the server to close or reset the connection without answering."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def raw_get(s: socket.socket, path: str = "/healthz", headers: dict | None = None) -> bytes:
    """One request over an open socket; the status line of the answer (b"" when the connection was dropped)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
    except OSError:
        return b""
    return _reply(s).split(b"\r\n", 1)[0]


def get_from(source: str, url: str, headers: dict | None = None) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=WAIT_S) as client:
        return client.get(url, headers=headers)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_production_entry_closes_a_connection_that_sends_no_request_head(tmp_path):
    """`python -m editaudit.service.server` (the production command): a silent connection and one trickling its
    head are both closed after the header timeout, while /healthz and an authenticated GET answer meanwhile."""
    from editaudit.cli.embedded import free_port
    from editaudit.core.settings import Settings

    upgrade(Settings(data_dir=tmp_path).resolved_database_url)
    port = free_port()
    env = {**os.environ, "EDITAUDIT_DATA_DIR": str(tmp_path), "EDITAUDIT_API_TOKEN": TOKEN,
           "EDITAUDIT_HEADER_TIMEOUT_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "editaudit.service.server", "--host", "127.0.0.1", "--port",
                             str(port), "--log-level", "warning"], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, "the production entry did not answer /healthz")
        silent = connect(url)
        trickle = connect(url)
        trickle.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert httpx.get(url + "/healthz", timeout=WAIT_S).status_code == 200
        assert httpx.get(url + "/models", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=WAIT_S).status_code == 200
        assert closed_by_server(silent), "a connection that sent nothing was still open after WAIT_S"
        deadline, closed = time.monotonic() + WAIT_S, False
        while not closed and time.monotonic() < deadline:  # a header line every 0.2 s does not extend the timeout
            try:
                trickle.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([trickle], [], [], 0.2)
            closed = bool(readable) and closed_by_server(trickle)
        assert closed, "a connection trickling its request head was still open after WAIT_S"
        silent.close()
        trickle.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_one_address_cannot_hold_more_than_its_share(tmp_path):
    with served(tmp_path, max_connections_per_ip=3) as (url, server, headers):
        held = [connect(url, "127.0.0.2") for _ in range(3)]
        wait_for(lambda: server.guard.by_ip.get("127.0.0.2") == 3, "the server did not count three connections")
        extra = connect(url, "127.0.0.2")
        assert closed_by_server(extra), "a fourth connection from 127.0.0.2 was kept"
        assert get_from("127.0.0.3", url + "/healthz").status_code == 200  # another address is unaffected
        assert get_from("127.0.0.3", url + "/models", headers).status_code == 200
        probes = [connect(url) for _ in range(5)]  # 127.0.0.1, the probe's address, is exempt
        assert httpx.get(url + "/healthz", timeout=WAIT_S).status_code == 200
        assert raw_get(held[0]) == b"HTTP/1.1 200 OK"  # the three it holds still work
        held[0].close()

        def a_place_is_free() -> bool:
            with connect(url, "127.0.0.2") as s:
                return raw_get(s) == b"HTTP/1.1 200 OK"

        wait_for(a_place_is_free, "127.0.0.2 could not connect again after closing one of its connections")
        assert server.guard.counts.get("refused_per_ip", 0) >= 1
        for s in (*held[1:], extra, *probes):
            s.close()


def test_idle_connections_at_the_total_cap_make_room_for_healthz(tmp_path):
    """40 connections that send nothing against a cap of 16: the oldest idle ones are closed as new ones arrive,
    so /healthz (and any client that sends its request) still gets in, from a capped address too."""
    with served(tmp_path, max_connections=16, max_connections_per_ip=0) as (url, server, headers):
        idle = [connect(url, f"127.0.1.{1 + i % 8}") for i in range(40)]
        wait_for(lambda: server.guard.counts.get("admitted", 0) >= 40, "the server did not see 40 connections")
        assert server.guard.open <= 16
        assert httpx.get(url + "/healthz", timeout=WAIT_S).status_code == 200
        assert get_from("127.0.0.9", url + "/healthz").status_code == 200
        assert get_from("127.0.0.9", url + "/models", headers).status_code == 200
        assert closed_by_server(idle[0]), "the oldest idle connection was not the one closed"
        assert server.guard.counts["evicted"] >= 24
        for s in idle:
            s.close()


def test_with_every_connection_inside_a_request_the_probe_still_gets_in(tmp_path):
    """16 connections each inside a request (a JSON body announced and never sent) fill the cap: nothing can be
    evicted, so a new connection is refused, except from an exempt address, which has the headroom."""
    with served(tmp_path, max_connections=16, max_connections_per_ip=0, connection_headroom=4,
                body_timeout_s=WAIT_S) as (url, server, _):
        stalled = []
        for _ in range(16):
            s = connect(url, "127.0.0.2")
            s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")
            stalled.append(s)
        wait_for(lambda: len(server.guard.busy) == 16, "16 connections were not all inside a request")
        refused = connect(url, "127.0.0.3")
        assert closed_by_server(refused), "a connection over the cap was kept with nothing to evict"
        assert httpx.get(url + "/healthz", timeout=WAIT_S).status_code == 200  # 127.0.0.1: the headroom
        assert server.guard.counts["refused_cap"] >= 1
        for s in (*stalled, refused):
            s.close()


def _upload_head(headers: dict, length: int) -> tuple[bytes, bytes]:
    head = (f"POST /datasets HTTP/1.1\r\nHost: x\r\nAuthorization: {headers['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n").encode()
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="f.npz"\r\n\r\n'
    return head, part


def _reply(s: socket.socket) -> bytes:
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            data = s.recv(4096)
            if not data:
                break
            reply += data
    except OSError:
        pass
    return reply


def test_a_trickling_upload_is_cut_off_with_a_408(tmp_path):
    with served(tmp_path, body_timeout_s=1, body_min_bytes=64 * 1024) as (url, server, headers):
        head, part = _upload_head(headers, 10 * 1024 * 1024)
        s = connect(url)
        s.sendall(head + part)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:  # 100 bytes every 0.1 s: ~1 kB/s against 64 kB per second
            readable, _, _ = select.select([s], [], [], 0.1)
            if readable:
                break
            try:
                s.sendall(b"a" * 100)
            except OSError:
                break
        reply = _reply(s)
        assert reply.startswith(b"HTTP/1.1 408") and b"problem+json" in reply, reply[:300]
        assert b"connection: close" in reply.lower()
        s.close()
        assert httpx.get(url + "/healthz", timeout=WAIT_S).status_code == 200


def test_an_upload_at_the_minimum_rate_or_faster_is_not_cut(tmp_path):
    """Across several windows, each bringing more than the minimum: the upload reaches the app (which refuses the
    junk it holds: not a 408)."""
    with served(tmp_path, body_timeout_s=1, body_min_bytes=16 * 1024) as (url, server, headers):
        body, tail = b"a" * (1024 * 1024), b"\r\n--b--\r\n"
        _, part = _upload_head(headers, 0)
        head, _ = _upload_head(headers, len(part) + len(body) + len(tail))
        s = connect(url)
        s.sendall(head + part)
        for i in range(0, len(body), 32 * 1024):  # 32 kB every 0.05 s: ~640 kB/s, ~1.6 s in all
            s.sendall(body[i:i + 32 * 1024])
            time.sleep(0.05)
        s.sendall(tail)
        reply = _reply(s)
        assert reply.startswith(b"HTTP/1.1 4") and not reply.startswith(b"HTTP/1.1 408"), reply[:300]
        s.close()


EMFILE_SERVER = r"""
import json, os, sys, threading, time
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))  # soft and hard: the server cannot raise it back
from editaudit.core.migrate import upgrade
from editaudit.core.settings import Settings
from editaudit.service.app import create_app
from editaudit.service.server import make_server

settings = Settings(data_dir=sys.argv[1])
settings.data_dir.mkdir(parents=True, exist_ok=True)
upgrade(settings.resolved_database_url)
server = make_server(create_app(settings, allow_anonymous=True), settings, "127.0.0.1", int(sys.argv[2]),
                     log_level="warning")
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
hog = []  # every descriptor left: what a leak elsewhere in the process would do
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print("full", flush=True)
sys.stdin.readline()  # the test's connections are made
time.sleep(3)
print(json.dumps(server.guard.counts), flush=True)
os._exit(0)
"""


def test_failed_accepts_are_logged_per_burst_not_per_attempt(tmp_path):
    """A server process out of file descriptors (RLIMIT_NOFILE lowered, the rest taken): 300 connections make
    accept() fail again and again, and asyncio's own handler would log a traceback each time; the log holds a line
    or two."""
    from editaudit.cli.embedded import free_port

    script = tmp_path / "emfile_server.py"
    script.write_text(EMFILE_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "data"), str(port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conns = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "full"
        for _ in range(300):
            s = socket.socket()
            s.settimeout(WAIT_S)
            s.connect(("127.0.0.1", port))  # the kernel completes it; the server cannot accept it
            conns.append(s)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        counts = json.loads(proc.stdout.readline())
        _, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        for s in conns:
            s.close()
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    accept_lines = [line for line in lines if "accept() failed" in line]
    assert counts.get("accept_failed", 0) >= 16, counts  # asyncio retries every second, 16 accepts at a time
    assert 1 <= len(accept_lines) <= 3, accept_lines
    assert "Traceback" not in stderr and len(lines) <= 20, stderr[-3000:]
