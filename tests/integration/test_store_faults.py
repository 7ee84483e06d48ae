"""The object store's transient faults, injected by cutting a proxy in front of moto's S3 server: a short outage
is retried and the write lands; a lasting one raises after the retries, and a job that cannot store its result
ends `failed` with the reason, leaving no model row and no object behind. Over the API (real HTTP): with the store
down (S3 cut off, a directory store that cannot be read) every route that touches it answers 503 problem+json with
Retry-After, a missing object too, and a download whose store fails mid-object breaks off where the client sees
it (the typed client and the CLI raise; nothing lands at the destination)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from editaudit.core.storage import S3Store, StoreUnavailable, content_key
from tests.conftest import SPEC, make_settings, serve_over_http, unscoped
from tests.tools.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture()
def s3_proxy(s3_server):
    endpoint, bucket = s3_server
    proxy = TcpProxy(int(endpoint.rsplit(":", 1)[1])).start()
    yield proxy, f"http://127.0.0.1:{proxy.port}", bucket
    proxy.cut()


def _counting(store: S3Store) -> list:
    sent = []
    store.client.meta.events.register("before-send.s3.HeadObject", lambda **kw: sent.append(1))
    return sent


def test_a_short_outage_is_retried_and_the_write_lands(s3_proxy):
    proxy, endpoint, bucket = s3_proxy
    store = S3Store(bucket, "short", endpoint_url=endpoint)
    store.exists("warm-up")  # a pooled connection exists before the cut
    sent = _counting(store)
    proxy.cut()
    threading.Timer(0.3, proxy.restore).start()  # after the first (immediate) attempt; retries back off for longer
    assert store.put("k", b"payload") and store.get("k") == b"payload"
    assert len(sent) >= 2, "the existence check was refused at least once, retried, then answered"


def test_a_lasting_outage_raises_after_the_retries(s3_proxy):
    proxy, endpoint, bucket = s3_proxy
    store = S3Store(bucket, "lasting", endpoint_url=endpoint, attempts=3)
    proxy.cut()
    with pytest.raises(Exception) as err:
        store.put("k", b"payload")
    assert "connect" in str(err.value).lower(), err.value
    proxy.restore()
    assert not store.exists("k"), "nothing half-written"


def test_a_job_that_cannot_store_its_result_fails_cleanly(tmp_path, postgres_url, redis_url, s3_proxy, digits_model,
                                                          failures_npz):
    from sqlalchemy import func, select

    from editaudit.contracts.statuses import Status
    from editaudit.core import db
    from tests.integration.test_faults import _mid_audit, _stack, _wait

    proxy, endpoint, bucket = s3_proxy
    with _stack(tmp_path, postgres_url, redis_url, digits_model, failures_npz, store_url=f"s3://{bucket}/job",
                s3_endpoint_url=endpoint) as c:
        c.worker("worker")
        job = c.post("/edits", json=c.body).json()
        _wait(c, job["id"], _mid_audit, "reached the audit")
        proxy.cut()  # and it stays down
        edit = _wait(c, job["id"], lambda e: e["status"] not in (Status.queued, Status.running), "finished")
        # the audit's shard outcomes go through the store too, so the job may fail there or at its final write
        assert edit["status"] == Status.failed and "object store" in edit["error"], edit
        sessions = unscoped(db.session_factory(c.settings.resolved_database_url))
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(db.Model).where(db.Model.edit_id == job["id"])) == 0
            assert s.get(db.Edit, job["id"]).lease_token is None
        proxy.restore()
        store = S3Store(bucket, "job", endpoint_url=endpoint)
        listed = store.client.list_objects_v2(Bucket=bucket, Prefix="job/models/").get("Contents", [])
        assert len(listed) == 1, "only the uploaded model's weights: the edit stored nothing"


# --- over the API ---------------------------------------------------------------------------------------------------

STORE_ROUTES = ("upload_model", "upload_dataset", "download_model_weights", "download_edit_weights",
                "download_edit_delta")


@contextmanager
def api_over_http(tmp_path, **store):
    """The API (SQLite) over HTTP with the given store settings, a model, a dataset and a succeeded edit (its
    weights and delta in the store) made while the store is up."""
    from editaudit.core import db
    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.integration.test_concurrent_writers import dataset_bytes, model_bytes

    settings = make_settings(tmp_path, **store)
    upgrade(settings.resolved_database_url)
    app = create_app(settings, allow_anonymous=True)
    svc = app.state.services
    with serve_over_http(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        weights = model_bytes(seed=11)
        model = c.post("/models", files={"weights": ("m.safetensors", weights)}, data={"spec": json.dumps(SPEC)})
        assert c.post("/datasets", files={"file": ("d.safetensors", dataset_bytes(seed=11))}).status_code == 201
        edited, delta = model_bytes(seed=12), b"the changed tensors"
        edited_key = content_key("models", hashlib.sha256(edited).hexdigest(), ".safetensors")
        delta_key = content_key("deltas", hashlib.sha256(delta).hexdigest(), ".safetensors")
        svc.store.put(edited_key, edited)
        svc.store.put(delta_key, delta)
        edit_id, edited_id = db.new_id(), db.new_id()
        with unscoped(svc.sessions)() as s:
            s.add(db.Model(id=edited_id, tenant="default", sha256=hashlib.sha256(edited).hexdigest(), arch=SPEC["arch"],
                           spec=SPEC, object_key=edited_key, size_bytes=len(edited),
                           parent_model_id=model.json()["id"], edit_id=edit_id))
            s.flush()
            s.add(db.Edit(id=edit_id, tenant="default", model_id=model.json()["id"], method="finetune_layer",
                          layers=["fc"], hyperparams={}, edit_set="builtin:digits-train",
                          test_set="builtin:digits-test", status="succeeded", edited_model_id=edited_id,
                          delta_object_key=delta_key, delta_sha256=hashlib.sha256(delta).hexdigest()))
            s.commit()
        yield SimpleNamespace(c=c, url=url, app=app, svc=svc, weights=weights, model=model.json(), edit_id=edit_id,
                              edited=edited, edited_key=edited_key)


def every_store_route(fx) -> dict[str, httpx.Response]:
    """One request of each operation that reads or writes the store (STORE_ROUTES): uploads of new content and of
    content that exists (its object is checked), and the three downloads."""
    from tests.integration.test_concurrent_writers import dataset_bytes, model_bytes

    c = fx.c
    return {
        "upload_model": c.post("/models", files={"weights": ("n.safetensors", model_bytes(seed=13))},
                               data={"spec": json.dumps(SPEC)}),
        "upload_model again": c.post("/models", files={"weights": ("m.safetensors", fx.weights)},
                                     data={"spec": json.dumps(SPEC)}),
        "upload_dataset": c.post("/datasets", files={"file": ("n.safetensors", dataset_bytes(seed=13))}),
        "download_model_weights": c.get(f"/models/{fx.model['id']}/weights"),
        "download_edit_weights": c.get(f"/edits/{fx.edit_id}/weights"),
        "download_edit_delta": c.get(f"/edits/{fx.edit_id}/delta"),
    }


def assert_store_503(responses: dict[str, httpx.Response], reason: str = "unavailable") -> None:
    for name, r in responses.items():
        assert r.status_code == 503, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", name
        assert r.headers["retry-after"].isdigit(), name
        body = r.json()
        assert body["status"] == 503 and body["errors"] == [{"field": "store", "reason": reason}], (name, body)


def assert_recovered(fx) -> None:
    got = fx.c.get(f"/edits/{fx.edit_id}/weights")
    assert got.status_code == 200 and got.content == fx.edited
    again = fx.c.post("/models", files={"weights": ("m.safetensors", fx.weights)}, data={"spec": json.dumps(SPEC)})
    assert again.status_code == 200 and again.json()["id"] == fx.model["id"]


def test_every_store_route_documents_its_503(tmp_path):
    from editaudit.service.app import create_app

    schema = create_app(make_settings(tmp_path), allow_anonymous=True).openapi()
    operations = {o["operationId"]: o for item in schema["paths"].values() for o in item.values()}
    for name in STORE_ROUTES:
        documented = operations[name]["responses"]["503"]
        assert "object store" in documented["description"] and "Retry-After" in documented["headers"], name
        assert documented["content"]["application/problem+json"]


def test_s3_down_is_a_503_on_every_store_route(tmp_path, s3_proxy):
    proxy, endpoint, bucket = s3_proxy
    prefix = f"api-{uuid.uuid4().hex[:8]}"
    with api_over_http(tmp_path, store_url=f"s3://{bucket}/{prefix}", s3_endpoint_url=endpoint) as fx:
        fx.svc.store = S3Store(bucket, prefix, endpoint_url=endpoint, attempts=2)  # the same store, fewer retries
        proxy.cut()
        try:
            assert_store_503(every_store_route(fx))
        finally:
            proxy.restore()
        assert_recovered(fx)


@contextmanager
def directory_replaced_by_a_file(root: Path):
    """The store's directory unusable, whoever the tests run as (root reads a mode-000 directory): a file where
    the directory was, as when a volume is not mounted where it should be."""
    away = root.with_name(root.name + "-away")
    root.rename(away)
    root.write_bytes(b"")
    try:
        yield
    finally:
        root.unlink()
        away.rename(root)


def test_an_unusable_store_directory_is_a_503_on_every_store_route(tmp_path):
    with api_over_http(tmp_path) as fx:
        with directory_replaced_by_a_file(fx.svc.store.root):
            assert_store_503(every_store_route(fx))
        assert_recovered(fx)


def test_a_missing_object_is_a_503_naming_it(tmp_path):
    with api_over_http(tmp_path) as fx:
        (fx.svc.store.root / fx.edited_key).unlink()
        assert_store_503({"download_edit_weights": fx.c.get(f"/edits/{fx.edit_id}/weights")}, "object missing")
        fx.svc.store.put(fx.edited_key, fx.edited)  # restored by the operator
        assert fx.c.get(f"/edits/{fx.edit_id}/weights").content == fx.edited


class BreaksMidway:
    """The store, except that a download's object breaks off after half its bytes (a connection reset mid-object)."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def stream(self, key, chunk=1 << 20):
        size, chunks = self.store.stream(key, chunk)
        data = b"".join(chunks)

        def broken():
            yield data[: len(data) // 2]
            raise StoreUnavailable("connection reset by peer mid-object")

        return size, broken()


def test_a_download_that_breaks_off_mid_object_is_never_a_short_file(tmp_path):
    from editaudit.client import ChecksumError, Client, IncompleteDownload

    with api_over_http(tmp_path) as fx:
        fx.svc.store = BreaksMidway(fx.svc.store)
        path = f"/edits/{fx.edit_id}/weights"
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", fx.url + path) as r:
            assert r.status_code == 200 and int(r.headers["content-length"]) == len(fx.edited)
            r.read()  # the connection closes short of Content-Length: httpx raises, it does not end cleanly

        dest = tmp_path / "edited.safetensors"
        with Client(fx.url) as api, pytest.raises(IncompleteDownload) as err:
            api.download_edit_weights(fx.edit_id, dest)
        assert isinstance(err.value, ChecksumError) and "broke off" in str(err.value)
        assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()

        out = tmp_path / "cli.safetensors"
        cli = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "models", "download", fx.model["id"],
                              "--output", str(out), "--url", fx.url], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2 and "broke off" in cli.stderr and not out.exists(), cli.stderr


def test_s3_cut_off_mid_download_breaks_the_download(tmp_path, s3_proxy):
    """The real thing: the S3 connection reset while a 64 MiB object streams (more than the sockets on the way can
    hold, so the API is still reading from S3): the download breaks off, it does not end."""
    import os

    from editaudit.core import db

    proxy, endpoint, bucket = s3_proxy
    with api_over_http(tmp_path, store_url=f"s3://{bucket}/cut-{uuid.uuid4().hex[:8]}", s3_endpoint_url=endpoint) as fx:
        big = os.urandom(64 << 20)
        key = content_key("models", hashlib.sha256(big).hexdigest(), ".safetensors")
        fx.svc.store.put(key, big)
        with unscoped(fx.svc.sessions)() as s:
            edited = s.get(db.Edit, fx.edit_id).edited_model_id
            s.get(db.Model, edited).object_key = key
            s.commit()
        got = 0
        with pytest.raises(httpx.TransportError), httpx.stream("GET", f"{fx.url}/edits/{fx.edit_id}/weights",
                                                                timeout=60) as r:
            assert r.status_code == 200 and int(r.headers["content-length"]) == len(big)
            for chunk in r.iter_raw(1 << 20):
                if not got:
                    proxy.cut()  # the download has started: now the store goes away
                got += len(chunk)
        assert got < len(big)
