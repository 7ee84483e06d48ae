"""The object store's transient faults, injected by cutting a proxy in front of moto's S3 server: a short outage
is retried and the write lands; a lasting one raises after the retries, and a job that cannot store its result
ends `failed` with the reason, leaving no model row and no object behind."""

from __future__ import annotations

import threading

import pytest

from editaudit.core.storage import S3Store
from tests.conftest import unscoped
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
        assert edit["status"] == Status.failed and "storing the result failed" in edit["error"], edit
        sessions = unscoped(db.session_factory(c.settings.resolved_database_url))
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(db.Model).where(db.Model.edit_id == job["id"])) == 0
            assert s.get(db.Edit, job["id"]).lease_token is None
        proxy.restore()
        store = S3Store(bucket, "job", endpoint_url=endpoint)
        listed = store.client.list_objects_v2(Bucket=bucket, Prefix="job/models/").get("Contents", [])
        assert len(listed) == 1, "only the uploaded model's weights: the edit stored nothing"
