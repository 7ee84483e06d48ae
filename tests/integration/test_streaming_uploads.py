"""Uploads over the API go from starlette's spooled file to the store without being read into memory whole (the
memory figures are bench/uploads.py's): the same bytes twice in a tenant are one resource (201, then 200 with the
same id), uint8 datasets are recorded without conversion, and a failed row removes the object it streamed in."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from editaudit.core import db
from tests.conftest import SPEC, unscoped
from tests.integration.test_api_errors import assert_nothing_stored, objects, post_model, rows


def post_dataset(client, data: bytes, name: str = "d.safetensors"):
    return client.post("/datasets", files={"file": (name, data)})


def test_the_same_dataset_twice_is_one_dataset(api_client, failures_npz):
    first = post_dataset(api_client, failures_npz, "f.npz")
    again = post_dataset(api_client, failures_npz, "renamed.npz")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == f"/datasets/{first.json()['id']}"
    assert rows(api_client, db.Dataset) == 1 and len(objects(api_client)) == 1


def test_the_same_model_twice_is_one_model(api_client, digits_model):
    first, again = post_model(api_client, digits_model[0], SPEC), post_model(api_client, digits_model[0], SPEC)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["id"] == first.json()["id"] and rows(api_client, db.Model) == 1


def test_a_duplicate_upload_restores_a_missing_object(api_client, digits_model):
    """The row of the first upload is answered again; its object, lost from the store meanwhile, is put back."""
    first = post_model(api_client, digits_model[0], SPEC).json()
    for path in objects(api_client):
        path.unlink()
    again = post_model(api_client, digits_model[0], SPEC)
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    got = api_client.get(f"/models/{first['id']}/weights")
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == first["sha256"]


def test_a_uint8_dataset_larger_than_the_spool_is_recorded_as_uploaded(api_client):
    """4 MiB: past starlette's 1 MiB in-memory spool, so the route reads it from disk."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1024, 32, 32, 4), dtype=np.uint8)
    y = rng.integers(0, 2**40, 1024, dtype=np.int64)
    data = st_save({"x": x, "y": y, "mask": np.ones((1024, 1, 32, 32), np.float32)})
    r = post_dataset(api_client, data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["n"] == 1024 and body["shape"] == [4, 32, 32] and body["sha256"] == hashlib.sha256(data).hexdigest()
    with unscoped(api_client.services.sessions)() as s:
        row = s.get(db.Dataset, body["id"])
        assert row.label_max == int(y.max()) and row.has_mask and not row.has_x_orig
        assert row.object_key.endswith(".safetensors")
        assert api_client.services.store.get(row.object_key) == data


def test_a_failed_row_removes_the_streamed_object(api_client, monkeypatch):
    from sqlalchemy.orm import Session

    data = st_save({"x": np.zeros((512, 3, 32, 32), np.float32), "y": np.zeros(512, np.int64)})  # 6 MiB

    def broken_commit(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "commit", broken_commit)
    with pytest.raises(RuntimeError):
        post_dataset(api_client, data)
    monkeypatch.undo()
    assert_nothing_stored(api_client)


def test_a_failed_row_keeps_an_object_a_concurrent_upload_now_uses(api_client, monkeypatch):
    """Two tenants upload the same bytes at once: this request's put created the object, the other's row
    committed on it, then this commit fails. Deleting "its" object would leave the other row without one."""
    from sqlalchemy.orm import Session

    from editaudit.core.storage import content_key

    data = st_save({"x": np.zeros((4, 1, 8, 8), np.float32), "y": np.zeros(4, np.int64)})
    key = content_key("datasets", hashlib.sha256(data).hexdigest(), ".safetensors")
    real_commit = Session.commit

    def commit_after_the_other_tenant(self):
        with unscoped(api_client.services.sessions)() as other:
            other.add(db.Dataset(tenant="team-b", sha256=hashlib.sha256(data).hexdigest(), filename="b",
                                 object_key=key, n=4, shape=[1, 8, 8], label_max=0))
            real_commit(other)
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "commit", commit_after_the_other_tenant)
    with pytest.raises(RuntimeError):
        post_dataset(api_client, data)
    monkeypatch.undo()
    assert rows(api_client, db.Dataset) == 1 and len(objects(api_client)) == 1  # team-b's row keeps its object


def test_a_streamed_upload_lands_in_s3(tmp_path, s3_server):
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    endpoint, bucket = s3_server
    settings = make_settings(tmp_path, store_url=f"s3://{bucket}/streamed", s3_endpoint_url=endpoint)
    upgrade(settings.resolved_database_url)
    data = st_save({"x": np.full((300, 3, 32, 32), 0.5, np.float32), "y": np.arange(300, dtype=np.int64)})
    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        r = post_dataset(c, data)
        assert r.status_code == 201, r.text
        with unscoped(c.app.state.services.sessions)() as s:
            key = s.get(db.Dataset, r.json()["id"]).object_key
        assert c.app.state.services.store.get(key) == data
