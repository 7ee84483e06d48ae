"""Concurrent writers of one name, over real HTTP: the app served by uvicorn with its API threads, many client
threads released at once by a barrier, each with its own connection. Whatever the interleaving, no 500: versioned
documents get distinct versions (one document: one version, the others 200 with it), identical uploads are one row
(one 201, the others 200 with it), one Idempotency-Key is one resource, and concurrent promotions to one alias
(its first included) leave a trail whose every row names what the alias served before it, so that a revert lands
where the trail says. On Postgres (the production database, a fresh one) and on SQLite (the embedded default)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from safetensors.numpy import save as st_save
from sqlalchemy import func, select

from editaudit.core import db
from tests.conftest import SPEC, make_settings, postgres_database, serve_over_http, unscoped

V1 = json.loads((Path(__file__).parents[1] / "data" / "audit_result_v1.json").read_text())
WRITERS = 10
PROMOTERS = 12


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def served(request, tmp_path_factory):
    """The API over HTTP on a database of its own (anonymous access, as `editaudit serve` on loopback)."""
    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app

    with ExitStack() as stack:
        urls = {"database_url": stack.enter_context(postgres_database())} if request.param == "postgres" else {}
        settings = make_settings(tmp_path_factory.mktemp(request.param), **urls)
        upgrade(settings.resolved_database_url)
        app = create_app(settings, allow_anonymous=True)
        url = stack.enter_context(serve_over_http(app))
        yield SimpleNamespace(url=url, settings=settings, services=app.state.services,
                              sessions=unscoped(app.state.services.sessions))


def at_once(url: str, n: int, request) -> list[httpx.Response]:
    """`request(client, i)` from n threads released together, each on its own connection; their responses."""
    barrier = threading.Barrier(n)

    def run(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as c:
            c.get("/healthz")  # connected before the barrier: the requests race, not the handshakes
            barrier.wait()
            return request(c, i)

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(run, range(n)))
    assert not [r for r in responses if r.status_code >= 500], [(r.status_code, r.text) for r in responses]
    return responses


def codes(responses) -> Counter:
    return Counter(r.status_code for r in responses)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model_bytes(seed: int) -> bytes:
    """An untrained editaudit/smallcnn (its own weights per seed) as safetensors."""
    import safetensors.torch
    import torch

    from editaudit.worker.ml.archs import build_inner

    torch.manual_seed(seed)
    spec: dict = dict(SPEC)
    net = build_inner(spec["arch"], spec["num_classes"], spec["input_shape"])
    return safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})


def dataset_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return st_save({"x": rng.random((6, 1, 8, 8), dtype=np.float32), "y": rng.integers(0, 10, 6, dtype=np.int64)})


def count(served, table, **where) -> int:
    with served.sessions() as s:
        return s.scalar(select(func.count()).select_from(table).filter_by(**where))


POLICY = {"version": 1, "rules": [{"metric": "edit.accuracy", "min": 0.9}]}
PROFILE = {"attacks": [{"name": "pgd", "eps": 0.03, "steps": 10}], "max_samples": 64}


@pytest.mark.parametrize(("route", "table", "field", "same", "changed"), [
    ("/policies", db.PolicyVersion, "policy", POLICY,
     lambda i: {"version": 1, "rules": [{"metric": "edit.accuracy", "min": 0.5 + i / 100}]}),
    ("/audit-profiles", db.AuditProfile, "audit", PROFILE, lambda i: {**PROFILE, "max_samples": 64 + i}),
])
def test_concurrent_posts_of_one_name_get_one_version_each_document(served, route, table, field, same, changed):
    name = unique("doc")
    one = at_once(served.url, WRITERS, lambda c, i: c.post(route, json={"name": name, field: same}))
    assert codes(one) == {201: 1, 200: WRITERS - 1}, "one document is one version: the others answer with it"
    assert {r.json()["version"] for r in one} == {1} and count(served, table, name=name) == 1

    name = unique("doc")
    many = at_once(served.url, WRITERS, lambda c, i: c.post(route, json={"name": name, field: changed(i)}))
    assert codes(many) == {201: WRITERS}, "every changed document is a version"
    assert sorted(r.json()["version"] for r in many) == list(range(1, WRITERS + 1)), "distinct, consecutive"
    assert count(served, table, name=name) == WRITERS
    with httpx.Client(base_url=served.url) as c:
        assert c.get(f"{route}/{name}").json()["version"] == WRITERS


def test_concurrent_uploads_of_one_model_are_one_model(served):
    weights = model_bytes(seed=1)
    rs = at_once(served.url, WRITERS, lambda c, i: c.post(
        "/models", files={"weights": ("m.safetensors", weights)}, data={"spec": json.dumps(SPEC)}))
    assert codes(rs) == {201: 1, 200: WRITERS - 1}
    ids = {r.json()["id"] for r in rs}
    assert len(ids) == 1 and {r.headers["location"] for r in rs} == {f"/models/{ids.pop()}"}
    assert count(served, db.Model, sha256=rs[0].json()["sha256"]) == 1
    # the same weights under another spec are another model, once
    other = {**SPEC, "mean": [0.5], "std": [0.25]}
    rs = at_once(served.url, WRITERS, lambda c, i: c.post(
        "/models", files={"weights": ("m.safetensors", weights)}, data={"spec": json.dumps(other)}))
    assert codes(rs) == {201: 1, 200: WRITERS - 1} and count(served, db.Model, sha256=rs[0].json()["sha256"]) == 2


def test_concurrent_uploads_of_one_dataset_are_one_dataset(served):
    data = dataset_bytes(seed=1)
    rs = at_once(served.url, WRITERS, lambda c, i: c.post("/datasets", files={"file": (f"d{i}.safetensors", data)}))
    assert codes(rs) == {201: 1, 200: WRITERS - 1}
    assert len({r.json()["id"] for r in rs}) == 1 and count(served, db.Dataset, sha256=rs[0].json()["sha256"]) == 1
    store = served.services.store
    assert store.exists(f"datasets/{rs[0].json()['sha256'][:2]}/{rs[0].json()['sha256']}.safetensors")


@pytest.mark.parametrize("route", ["/datasets", "/policies"])
def test_one_idempotency_key_sent_concurrently_is_one_resource(served, route):
    """One request claims the key and creates; the others get 409 while it runs, or its response replayed."""
    key, name, data = unique("key"), unique("keyed"), dataset_bytes(seed=2)

    def post(c, i):
        headers = {"Idempotency-Key": key}
        if route == "/datasets":
            return c.post(route, files={"file": ("d.safetensors", data)}, headers=headers)
        return c.post(route, json={"name": name, "policy": POLICY}, headers=headers)

    rs = at_once(served.url, WRITERS, post)
    assert set(codes(rs)) <= {201, 409}, codes(rs)
    first = [r for r in rs if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    assert len(first) == 1, "exactly one request created"
    assert {r.json()["id" if route == "/datasets" else "version"] for r in rs if r.status_code == 201} == \
        {first[0].json()["id" if route == "/datasets" else "version"]}
    for r in rs:
        if r.status_code == 409:
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["errors"][0]["field"] == "Idempotency-Key"
    if route == "/datasets":
        assert count(served, db.Dataset, sha256=first[0].json()["sha256"]) == 1
    else:
        assert count(served, db.PolicyVersion, name=name) == 1


def succeeded_edits(served, root_id: str, n: int) -> list[tuple[str, str]]:
    """n edits of the root model that have succeeded, with their audits (the stored v1 result) and edited models:
    rows as the worker leaves them, without running n jobs. [(edit id, edited model id)]."""
    made = []
    with served.sessions() as s:
        for i in range(n):
            edit_id, model_id = db.new_id(), db.new_id()
            s.add(db.Model(id=model_id, tenant="default", sha256=f"{i:064x}", arch=SPEC["arch"], spec=SPEC,
                           object_key=f"models/00/{i:064x}.safetensors", size_bytes=1, parent_model_id=root_id,
                           edit_id=edit_id))
            s.flush()
            s.add(db.Edit(id=edit_id, tenant="default", model_id=root_id, method="finetune_layer", layers=["fc"],
                          hyperparams={}, edit_set="builtin:digits-train", test_set="builtin:digits-test",
                          status="succeeded", edited_model_id=model_id, finished_at=db.utcnow()))
            s.flush()
            s.add(db.Audit(tenant="default", edit_id=edit_id, status="succeeded", config=V1["config"], result=V1,
                           finished_at=db.utcnow()))
            made.append((edit_id, model_id))
        s.commit()
    return made


def test_concurrent_promotions_to_one_alias_chain_exactly_and_revert_follows_the_chain(served):
    with httpx.Client(base_url=served.url, timeout=60) as c:
        root = c.post("/models", files={"weights": ("root.safetensors", model_bytes(seed=2))},
                      data={"spec": json.dumps(SPEC)}).json()
        policy, alias = unique("any"), unique("production")
        assert c.post("/policies", json={"name": policy, "policy": {
            "version": 1, "rules": [{"metric": "test.accuracy", "min": 0.0}]}}).status_code == 201
    edits = succeeded_edits(served, root["id"], PROMOTERS)

    # every edit is of the root model: after the first promotion the others are audited against a model the alias
    # no longer serves, so they ship with an override (an admin's, here anonymous access's)
    rs = at_once(served.url, PROMOTERS, lambda c, i: c.post(f"/edits/{edits[i][0]}/promote", json={
        "alias": alias, "policy": policy, "override_reason": f"concurrency test, writer {i}"}))
    assert codes(rs) == {200: PROMOTERS}, [r.text for r in rs]
    with served.sessions() as s:
        rows = s.scalars(select(db.Promotion).filter_by(family=root["id"], alias=alias)
                         .order_by(db.Promotion.id)).all()
    assert len(rows) == PROMOTERS and sorted(r.model_id for r in rows) == sorted(m for _, m in edits)
    assert rows[0].previous_model_id is None, "the first promotion made the alias"
    for before, row in zip(rows, rows[1:], strict=False):
        assert row.previous_model_id == before.model_id, "each row names what the alias served before it"
    answered = {r.json()["model_id"]: r.json()["previous_model_id"] for r in rs}
    assert answered == {r.model_id: r.previous_model_id for r in rows}, "each caller was told the truth"

    with httpx.Client(base_url=served.url, timeout=60) as c:
        served_now = c.get(f"/aliases/{alias}", params={"family": root["id"]}).json()
        assert served_now["model_id"] == rows[-1].model_id
        assert [h["model_id"] for h in served_now["history"]] == [r.model_id for r in reversed(rows)]
        reverted = c.post(f"/edits/{rows[-1].edit_id}/revert", json={"reason": "bad edit"})
        assert reverted.status_code == 200 and reverted.json()["alias_targets"] == {alias: rows[-2].model_id}
        assert c.get(f"/aliases/{alias}", params={"family": root["id"]}).json()["model_id"] == rows[-2].model_id
