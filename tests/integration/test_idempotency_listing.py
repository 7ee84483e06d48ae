"""Idempotency-Key on the creating POSTs (a retried request never makes a second job) and cursor listings (every
row exactly once across pages, filters that narrow, cursors that cannot be forged into other rows)."""

from __future__ import annotations

from editaudit.core import db
from tests.conftest import unscoped
from tests.integration.test_api_errors import assert_problem

PGD = {"name": "pgd", "eps": 0.03, "steps": 2}


def _count_edits(c) -> int:
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        return s.query(db.Edit).count()


def test_a_retried_submit_runs_one_job(edit_factory):
    c = edit_factory.client
    body = {"model_id": edit_factory.model["id"], "method": "finetune_layer", "layers": ["fc"],
            "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test", "audit": {"attacks": [PGD]}}
    key = {"Idempotency-Key": "ci-run-1234-attempt"}
    first = c.post("/edits", json=body, headers=key)
    assert first.status_code == 202
    before = _count_edits(c)
    for _ in range(3):
        again = c.post("/edits", json=body, headers=key)
        assert again.status_code == 202 and again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["idempotent-replayed"] == "true"
    assert _count_edits(c) == before
    assert_problem(c.post("/edits", json={**body, "layers": ["conv1"]}, headers=key), 422, "Idempotency-Key")
    assert c.post("/edits", json=body, headers={"Idempotency-Key": "another"}).json()["id"] != first.json()["id"]
    assert c.post("/edits", json=body).json()["id"] != first.json()["id"]  # no key: a new job each time
    assert_problem(c.post("/edits", json=body, headers={"Idempotency-Key": "has space"}), 422, "Idempotency-Key")


def test_a_failed_create_records_nothing_and_another_tenant_has_its_own_keys(edit_factory):
    from tests.conftest import key_headers

    c = edit_factory.client
    bad = {"model_id": "nope", "method": "finetune_layer", "edit_set": "x", "test_set": "builtin:digits-test"}
    key = {"Idempotency-Key": "k1"}
    assert_problem(c.post("/edits", json=bad, headers=key), 404, "model_id")
    body = {**bad, "model_id": edit_factory.model["id"], "layers": ["fc"], "edit_set": edit_factory.dataset["id"],
            "audit": {"attacks": [PGD]}}
    assert c.post("/edits", json=body, headers=key).status_code == 202  # the key was not spent by the failure
    c.headers.update(key_headers(c.settings, "default"))
    other = key_headers(c.settings, "team-b")
    assert_problem(c.post("/edits", json=body, headers={**key, **other}), 404, "model_id")  # not a replay of A's


def test_an_in_flight_key_is_a_409(edit_factory):
    from editaudit.service.services.idempotency import payload_hash

    c = edit_factory.client
    # as if a first request were still running
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        s.add(db.IdempotencyRecord(tenant="default", key="busy", route="POST /policies",
                                   request_hash=payload_hash({"x": 1})))
        s.commit()
    r = c.post("/policies", json={"name": "p", "policy": {"rules": [{"metric": "edit.accuracy", "min": 0.1}]}},
               headers={"Idempotency-Key": "busy"})
    assert_problem(r, 422, "Idempotency-Key")  # another payload: refused before it could wait
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        row = s.query(db.IdempotencyRecord).filter_by(key="busy").one()
        row.request_hash = payload_hash({"name": "p", "policy": {"rules": [{"metric": "edit.accuracy", "min": 0.1}]}})
        s.commit()
    assert_problem(c.post("/policies", json={"name": "p", "policy": {"rules": [{"metric": "edit.accuracy",
                                                                                  "min": 0.1}]}},
                          headers={"Idempotency-Key": "busy"}), 409, "Idempotency-Key")


def test_listings_page_through_every_row_once_and_filter(edit_factory):
    c = edit_factory.client
    jobs = [edit_factory.submit(run=False, audit={"attacks": [PGD]}) for _ in range(5)]
    c.post(f"/edits/{jobs[0]['id']}/cancel")
    seen, cursor = [], None
    while True:
        page = c.get("/edits", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(j["id"] for j in jobs) and len(seen) == len(set(seen))
    assert [e["id"] for e in c.get("/edits", params={"status": "canceled"}).json()["items"]] == [jobs[0]["id"]]
    assert len(c.get("/edits", params={"status": "queued", "method": "finetune_layer",
                                       "model_id": edit_factory.model["id"]}).json()["items"]) == 4
    assert c.get("/edits", params={"method": "rewrite"}).json()["items"] == []
    assert_problem(c.get("/edits", params={"status": "exploded"}), 422, "status")
    assert_problem(c.get("/edits", params={"limit": 0}), 422, "limit")
    audits = c.get("/audits", params={"edit_id": jobs[1]["id"]}).json()["items"]
    assert [a["id"] for a in audits] == [jobs[1]["audit_id"]]
    assert len(c.get("/audits", params={"model_id": edit_factory.model["id"]}).json()["items"]) == 5
    assert [m["id"] for m in c.get("/models").json()["items"]] == [edit_factory.model["id"]]
    assert [d["id"] for d in c.get("/datasets").json()["items"]] == [edit_factory.dataset["id"]]
    newest = c.get("/edits", params={"limit": 1}).json()["items"][0]
    assert c.get("/edits", params={"created_after": newest["created_at"]}).json()["items"] == []


def test_a_forged_cursor_is_a_422(api_client):
    import base64
    import json

    for forged in ("%%%", base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", "x\u0000"]).encode()).decode(),
                   base64.urlsafe_b64encode(b"[1, 2, 3]").decode(), "e30"):
        assert_problem(api_client.get("/models", params={"cursor": forged}), 422, "cursor")
