"""The embedded default keeps its worker alive and leaves nothing behind: a killed worker is restarted (and
/healthz says so), `editaudit serve` stops the API and the worker on SIGTERM, and a busy port starts nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from editaudit.cli.embedded import EmbeddedServer, free_port
from tests.conftest import make_settings, wait_until

pytestmark = pytest.mark.slow
WAIT_S = 120


def _until(cond, what: str):
    return wait_until(cond, what, WAIT_S)


def _workers_of(serve_pid: int) -> list[int]:
    """Worker processes started by that server (their node name carries its pid)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and f"embedded-{serve_pid}@".encode() in cmd:
            found.append(int(proc.name))
    return found


def _health(url: str) -> dict | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return None


def test_a_killed_worker_is_restarted_and_healthz_reports_it(tmp_path):
    with EmbeddedServer(make_settings(tmp_path), supervise_every_s=0.2) as server:
        assert _until(lambda: _health(server.url), "healthz")["worker"] == {"alive": True, "restarts": 0}
        first = server.worker.pid
        os.kill(first, signal.SIGKILL)
        health = _until(lambda: (h := _health(server.url)) and h["worker"]["restarts"] == 1 and h, "restarted")
        assert health["worker"]["alive"] and server.worker.pid != first


def test_serve_stops_api_and_worker_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "editaudit.cli.main", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: _health(f"http://127.0.0.1:{port}"), "serving")
        assert _until(lambda: _workers_of(proc.pid), "a worker")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0
        assert _until(lambda: not _workers_of(proc.pid), "the worker gone") is True
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_busy_port_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "serve", "--port", str(port),
                               "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=WAIT_S)
        assert proc.returncode != 0 and "already in use" in proc.stderr, proc.stderr
        with pytest.raises(RuntimeError, match="already in use"):
            EmbeddedServer(make_settings(tmp_path), port=port).__enter__()
    assert not (tmp_path / "worker.log").exists(), "no worker was started"


def test_readyz_checks_every_dependency(tmp_path):
    from alembic import command
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import alembic_config
    from editaudit.service.app import create_app

    settings = make_settings(tmp_path)
    with EmbeddedServer(settings) as server:
        ready = _until(lambda: (r := httpx.get(f"{server.url}/readyz", timeout=10)).status_code == 200 and
                       r.json()["workers"] and r.json(), "ready, with the local worker's heartbeat")
        assert ready["checks"] == dict.fromkeys(["database", "migrations", "broker", "store"], "ok")
        assert ready["warnings"] == [] and all(w["fresh"] for w in ready["workers"].values()), ready
    command.downgrade(alembic_config(settings.resolved_database_url), "0005")  # older database, newer code, no worker
    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"]
        checks = r.json()["checks"]
        assert "run migrate" in checks["migrations"] and checks["store"] == "ok" and "worker" not in checks
        assert r.json()["warnings"], "no heartbeat to read: a warning, never the reason for the 503"
