"""The embedded default: the API plus a local Celery worker process, SQLite and a directory store in one data dir.

It runs exactly the production task code; only the URLs differ (see Settings).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from editaudit.core import db
from editaudit.core.keys import credentials_exist
from editaudit.core.migrate import upgrade
from editaudit.core.settings import Settings
from editaudit.service.app import create_app
from editaudit.service.server import make_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(settings: Settings, log_path: Path | None = None, node: str = "") -> subprocess.Popen:
    """A real `celery worker` process (solo pool: one job at a time, as on a GPU) with this settings' env; `node`
    tells several workers of one process apart (their Celery node names)."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():  # the worker sees exactly this process's settings
        if value is not None:
            env[f"EDITAUDIT_{name.upper()}"] = str(value.resolve()) if name == "data_dir" else \
                json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    cmd = [sys.executable, "-m", "celery", "-A", "editaudit.worker.celery_app", "worker", "--pool=solo",
           "--concurrency=1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
           "-n", f"embedded-{os.getpid()}{'-' + node if node else ''}@%h"]
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - the worker owns the handle
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def worker_installed() -> bool:
    """Whether this environment can run the worker (the `worker` extra: torch and the ML stack)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision", "art"))


class EmbeddedServer:
    """Context manager: migrate, start the worker and serve the API on a background thread. A supervisor thread
    restarts the worker when it dies (reported by /healthz); leaving the context, or failing to start, stops both.

    Without the `worker` extra (`local_worker` None: detected) only the API runs; jobs wait in the data directory's
    queue for a worker started elsewhere on the same directory (`EDITAUDIT_DATA_DIR=DIR celery -A
    editaudit.worker.celery_app worker --pool=solo`)."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int | None = None, quiet: bool = True,
                 supervise_every_s: float = 1.0, local_worker: bool | None = None):
        self.settings, self.host, self.port = settings, host, port or free_port()
        self.quiet, self.supervise_every_s = quiet, supervise_every_s
        self.local_worker = worker_installed() if local_worker is None else local_worker
        self.worker: subprocess.Popen | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self.supervisor: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> EmbeddedServer:
        if not port_is_free(self.host, self.port):  # before anything starts, so nothing is left behind
            raise RuntimeError(f"{self.host}:{self.port} is already in use; pick another --port")
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.resolved_database_url)
        anonymous = self._anonymous_allowed()
        app = create_app(self.settings, allow_anonymous=anonymous)
        if self.local_worker:
            self.worker = self._start_worker()
            app.state.worker_health = lambda: {"alive": self.worker is not None and self.worker.poll() is None,
                                               "restarts": self.restarts}
        else:
            print("editaudit: no local worker (the `worker` extra is not installed here): jobs wait in "
                  f"{self.settings.broker_folder} for a worker started on the same data directory", flush=True)
        # the production server's connection limits (header timeout, caps, bounded log): editaudit.service.server
        self.server = make_server(app, self.settings, self.host, self.port,
                                  log_level="warning" if self.quiet else "info")
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.05)
        self.supervisor = threading.Thread(target=self._supervise, name="editaudit-supervisor", daemon=True)
        self.supervisor.start()

    def _anonymous_allowed(self) -> bool:
        """Without any key, only a loopback bind may serve (anonymous, as tenant `default`); any other bind
        refuses to start. Once a key exists (or EDITAUDIT_API_TOKEN is set) every request needs one."""
        with db.unscoped_session(db.session_factory(self.settings.resolved_database_url),
                                 "start-up: does any tenant have a key") as s:
            if credentials_exist(s, self.settings.api_token):
                return False
        if not is_loopback(self.host):
            raise RuntimeError(f"refusing to serve on {self.host} without API keys: anyone who can reach it could "
                               "read and change every model; create one with `editaudit keys create --tenant NAME "
                               "--scope admin` or bind 127.0.0.1")
        print(f"editaudit: no API keys yet: anyone on this machine may call {self.url} as tenant 'default' "
              "(loopback only; `editaudit keys create` to require keys)", flush=True)
        return True

    def _start_worker(self) -> subprocess.Popen:
        return start_worker(self.settings, self.settings.data_dir / "worker.log" if self.quiet else None)

    def _supervise(self) -> None:
        """Restart the worker when it exits (killed, out of memory); its jobs are picked up again through their
        leases and the reconciler."""
        while not self._stopping.wait(self.supervise_every_s):
            if self.worker is not None and self.worker.poll() is not None and not self._stopping.is_set():
                print(f"editaudit: the local worker exited ({self.worker.returncode}); restarting it", flush=True)
                self.restarts += 1
                self.worker = self._start_worker()

    def stop(self) -> None:
        """Ask the API to stop (from a signal handler): `__exit__` then stops the worker."""
        if self.server:
            self.server.should_exit = True

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        if self.supervisor is not None:  # no restart can race the shutdown below
            self.supervisor.join(timeout=10)
        if self.server and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
