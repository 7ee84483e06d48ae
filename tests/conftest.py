"""Shared fixtures: a digits model trained in seconds, real Postgres/Redis (fail in CI, skip elsewhere when down),
an S3 server over HTTP (moto), and a running stack (API + real Celery worker process) for a given configuration."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

PG_ADMIN = os.environ.get("EDITAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("EDITAUDIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
SPEC = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8]}
T = TypeVar("T")


def wait_until(cond: Callable[[], T], what: str, timeout: float, poll: float = 0.2) -> T:
    """The first truthy value of `cond()`, polled every `poll` seconds; AssertionError naming `what` after
    `timeout` seconds (a wait that ends as soon as its condition holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"never: {what}")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """In CI a missing service is a failure, never a skip; on a laptop it is a skip with the command to fix it."""
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI=true: services are required)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def digits_model():
    """(safetensors bytes, spec, trained nn.Module): editaudit/smallcnn on builtin:digits-train, 4 epochs (the demo
    model)."""
    import safetensors.torch
    import torch

    from editaudit.worker.ml.archs import build_inner
    from editaudit.worker.ml.data import digits_arrays
    from editaudit.worker.ml.train import train_classifier

    tr = digits_arrays("train")
    torch.manual_seed(0)  # weight init must not depend on what other tests drew from the global RNG
    net = build_inner(SPEC["arch"], 10, SPEC["input_shape"])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=4, seed=0)
    weights = safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})
    return weights, dict(SPEC), net


@pytest.fixture(scope="session")
def digits_wrapped(digits_model):
    """The digits model as the worker runs it (normalising wrapper, eval mode). Copy it before mutating."""
    from editaudit.worker.ml.archs import create_model

    _, spec, net = digits_model
    m = create_model(spec)
    m.net.load_state_dict(net.state_dict())
    return m.eval()


@pytest.fixture(scope="session")
def digits_texture(digits_wrapped):
    """The digits texture scenario for the fixture model (DatasetArrays): "edit" = 8 textured digits of one class
    with x_orig and mask, "generalization" = every textured test digit, "test" = the clean test split."""
    import torch

    from editaudit.worker.ml.data import digits_arrays
    from editaudit.worker.ml.scenarios import texture_scenario

    def predict(x):
        with torch.no_grad():
            return digits_wrapped(torch.from_numpy(x)).argmax(1).numpy()

    return texture_scenario(digits_arrays("train"), digits_arrays("test"), predict, k=8, seed=0)


@pytest.fixture(scope="session")
def failures_npz(digits_model):
    """Training digits the model still gets wrong (16 at most), as an npz edit set (target = true label)."""
    import torch

    from editaudit.contracts.formats import DatasetArrays, dataset_to_npz
    from editaudit.worker.ml.data import digits_arrays

    _, _, net = digits_model
    tr = digits_arrays("train")
    with torch.no_grad():
        wrong = (net(torch.from_numpy(tr.x)).argmax(1) != torch.from_numpy(tr.y)).nonzero().flatten()[:16].numpy()
    assert len(wrong) >= 3, "the fixture model should make a few mistakes to edit"
    return dataset_to_npz(DatasetArrays(x=tr.x[wrong], y=tr.y[wrong]))


@contextmanager
def postgres_database():
    """A fresh database on the machine's Postgres (its URL), dropped afterwards."""
    require_service("Postgres", "127.0.0.1", 5432)
    import psycopg

    name = f"editaudit_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from editaudit.core.db import engine_for

        engine_for(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url():
    """A database shared by the session's tests (each counts only its own rows). A test that creates API keys
    needs its own (`postgres_database`): once a key exists, anonymous requests are refused."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over real HTTP on 127.0.0.1, with a bucket; yields (endpoint_url, bucket)."""
    import boto3
    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="editaudit-test")
    yield endpoint, "editaudit-test"
    server.stop()


def make_settings(tmp: Path, **urls):
    from editaudit.core.settings import Settings

    urls.setdefault("key_cache_s", 0)  # a key created or revoked in a test counts at once
    return Settings(data_dir=tmp, queue=f"editaudit-test-{uuid.uuid4().hex[:8]}", device="cpu", **urls)


def unscoped(factory):
    """Sessions over `factory` (a sessionmaker: `client.services.sessions`, `db.session_factory(url)`) that see
    every tenant, as a worker's do: what tests use to set up and inspect rows behind the API's back."""
    from editaudit.core import db

    return db.unscoped_sessions(factory, "a test sets up and inspects rows of any tenant")


def key_headers(settings, tenant: str, scopes=("admin",), name: str | None = None) -> dict:
    """A new API key of `tenant` (created in the settings' database, as `editaudit keys create` does), as request
    headers. Once any key exists, requests without one are refused."""
    from editaudit.core import db, keys

    with unscoped(db.session_factory(settings.resolved_database_url))() as s:
        _, token = keys.create_key(s, tenant, name or f"{tenant}-key", list(scopes))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def app_settings_extra() -> dict:
    """Extra settings for `api_client` (a test module overrides this fixture, e.g. to load plugins)."""
    return {}


@pytest.fixture()
def api_client(tmp_path, app_settings_extra):
    """In-process API (TestClient) on SQLite + a local store; no worker: for validation and error-path tests."""
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app

    settings = make_settings(tmp_path, **app_settings_extra)
    upgrade(settings.resolved_database_url)
    app = create_app(settings, allow_anonymous=True)  # as `editaudit serve` on loopback, until a key exists
    with TestClient(app) as c:
        c.settings = settings
        c.services, c.api = app.state.services, app
        yield c


@contextmanager
def serve_over_http(app):
    """The app served by uvicorn on a thread on a free loopback port; yields its URL."""
    import threading
    import time

    import uvicorn

    from editaudit.cli.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture()
def http_url(api_client):
    """The api_client's app served over real HTTP, for the CLI."""
    with serve_over_http(api_client.app) as url:
        yield url


@pytest.fixture()
def edit_factory(api_client, digits_model, failures_npz):
    """Uploads the digits model and its failures; `submit(run=True, **body)` posts an edit and, unless run=False,
    runs it through the real job code (the Celery task's body) in this process."""
    import json
    from types import SimpleNamespace

    from editaudit.worker.jobs import run_edit_job

    c = api_client
    model = c.post("/models", files={"weights": ("m.safetensors", digits_model[0])},
                   data={"spec": json.dumps(SPEC)}).json()
    ds = c.post("/datasets", files={"file": ("f.npz", failures_npz)}).json()

    def submit(run: bool = True, **body) -> dict:
        job = c.post("/edits", json={"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"],
                                     "edit_set": ds["id"], "test_set": "builtin:digits-test", **body})
        assert job.status_code == 202, job.text
        job = job.json()
        if run:
            run_edit_job(c.settings, job["id"])
        return job

    c.submit, c.model = submit, model
    return SimpleNamespace(client=c, submit=submit, model=model, dataset=ds, dataset_bytes=failures_npz)
