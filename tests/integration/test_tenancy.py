"""Tenants and keys, tried as a second tenant and as a hostile key holder would: every route that takes an id
(generated from the route table, so a new route cannot be forgotten) answers 404 to another tenant's key, writes
included, and changes nothing; scopes are enforced before the body is read; revoked and forged keys are refused."""

from __future__ import annotations

import re

import pytest

from editaudit.service.app import api_routes
from tests.conftest import key_headers
from tests.integration.test_api_errors import assert_problem

PGD = {"name": "pgd", "eps": 0.03, "steps": 2}


@pytest.fixture()
def app_settings_extra() -> dict:
    return {"webhook_allowed_hosts": ["hooks.example.com"]}  # tenant A registers a webhook (never sent: no worker)


@pytest.fixture()
def two_tenants(edit_factory):
    """Tenant A (the edit_factory's uploads, a succeeded edit promoted to `production`, a policy, a profile and a
    webhook) and tenant B with an admin key of its own."""
    c = edit_factory.client
    a = key_headers(c.settings, "default", name="alice")
    c.headers.update(a)
    job = edit_factory.submit(audit={"attacks": [PGD]})
    assert c.post("/policies", json={"name": "team-policy", "policy": {"rules": [{"metric": "edit.accuracy", "min": 0.0}]}}).status_code == 201
    assert c.post("/audit-profiles", json={"name": "team-profile", "audit": {"attacks": [PGD]}}).status_code == 201
    r = c.post(f"/edits/{job['id']}/promote", json={"alias": "production", "policy": "default",
                                                    "override_reason": "the fixture needs an alias to exist"})
    assert r.status_code == 200, r.text
    queued = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    hook = c.post("/webhooks", json={"url": "https://hooks.example.com/ci", "events": ["*"]})
    assert hook.status_code == 201, hook.text
    job["webhook_id"] = hook.json()["id"]
    return c, a, key_headers(c.settings, "team-b", name="bob"), job, queued


def _values(edit_factory, job, queued) -> dict[str, str]:
    return {"model_id": edit_factory.model["id"], "dataset_id": edit_factory.dataset["id"], "edit_id": job["id"],
            "audit_id": job["audit_id"], "fmt": "json", "name": "production", "webhook_id": job["webhook_id"]}


NAME_BY_PREFIX = {"/policies": "team-policy", "/audit-profiles": "team-profile", "/aliases": "production"}
BODIES = {"promote_edit": {"alias": "production", "policy": "default", "override_reason": "a hostile override"},
          "revert_edit": {"reason": "a hostile revert"}}


def _id_routes():
    for route in api_routes():
        params = re.findall(r"{(\w+)}", route.path)
        if params:
            for method in sorted(route.methods):
                yield method, route.path, route.operation_id, params


def test_the_route_table_has_the_routes_this_test_must_cover():
    ops = {op for _, _, op, _ in _id_routes()}
    for must in ("cancel_edit", "promote_edit", "revert_edit", "gate_edit", "download_edit_delta",
                 "download_edit_weights", "download_model_weights", "get_audit_report", "get_audit", "get_webhook",
                 "delete_webhook", "list_webhook_deliveries", "test_webhook"):
        assert must in ops, must


def test_every_id_route_is_a_404_for_another_tenant(two_tenants, edit_factory):
    c, a, b, job, queued = two_tenants
    values = _values(edit_factory, job, queued)
    secret = c.get(f"/edits/{job['id']}").json()["edited_model_id"]  # A's, never named in B's requests
    checked = []
    for method, path, op_id, params in _id_routes():
        fill = dict(values)
        fill["name"] = next(v for p, v in NAME_BY_PREFIX.items() if path.startswith(p)) if "name" in params else None
        if op_id == "cancel_edit":
            fill["edit_id"] = queued["id"]
        unknown = [p for p in params if fill.get(p) is None]
        assert not unknown, f"{op_id}: no value for {unknown}; teach this test about it"
        url = path.format(**fill)
        body = BODIES.get(op_id)
        theirs = c.request(method, url, json=body, headers=b)
        assert theirs.status_code == 404, f"{method} {url} answered {theirs.status_code} to another tenant"
        assert_problem(theirs, 404)
        assert secret not in theirs.text, theirs.text  # nothing of A's leaks in the problem
        checked.append(op_id)
    assert len(checked) >= 15
    # nothing moved: the queued edit is still queued, production still serves A's edited model
    assert c.get(f"/edits/{queued['id']}").json()["status"] == "queued"
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["reverted_at"] is None
    assert c.get("/aliases/production").json()["model_id"] == edit["edited_model_id"]
    # and the owner is answered (the 404s above are not a broken route)
    for url in (f"/models/{values['model_id']}", f"/audits/{job['audit_id']}/report.json", f"/edits/{job['id']}/weights",
                f"/webhooks/{job['webhook_id']}"):
        assert c.get(url).status_code == 200, url


def test_ids_in_bodies_and_listings_are_scoped_too(two_tenants, edit_factory):
    c, a, b, job, queued = two_tenants
    body = {"model_id": edit_factory.model["id"], "method": "finetune_layer", "layers": ["fc"],
            "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test"}
    assert_problem(c.post("/edits", json=body, headers=b), 404, "model_id")
    assert_problem(c.post("/gate", json={"edit_id": job["id"], "policy": "default"}, headers=b), 404, "edit_id")
    for kind in ("models", "datasets", "edits", "audits", "webhooks"):
        assert c.get(f"/{kind}", headers=b).json()["items"] == [], kind
        assert c.get(f"/{kind}").json()["items"], kind
    assert c.get("/promotions", headers=b).json()["promotions"] == []
    # B's upload of the same bytes is B's own resource: content addresses do not leak ownership
    mine = c.post("/datasets", files={"file": ("f.npz", edit_factory.dataset_bytes)}, headers=b)
    assert mine.status_code == 201 and mine.json()["id"] != edit_factory.dataset["id"]
    assert c.get(f"/datasets/{mine.json()['id']}").status_code == 404


def test_scopes_are_enforced_before_the_body(edit_factory):
    c = edit_factory.client
    reader = key_headers(c.settings, "default", ["audits:read"], name="reader")
    r = c.post("/models", headers=reader, files={"weights": ("m.safetensors", b"x" * 4096)}, data={"spec": "{}"})
    body = assert_problem(r, 403)
    assert body["required_scope"] == "models:write"
    assert_problem(c.post("/policies", json={"name": "p", "policy": {"rules": [{"metric": "edit.accuracy", "min": 0.0}]}}, headers=reader), 403)
    assert c.get(f"/models/{edit_factory.model['id']}", headers=reader).status_code == 200
    gate_only = key_headers(c.settings, "default", ["gate:read"], name="ci")
    assert_problem(c.get(f"/models/{edit_factory.model['id']}", headers=gate_only), 403)


def test_anonymous_access_ends_once_a_key_exists_and_bad_keys_are_refused(api_client):
    from editaudit.core import db, keys

    c = api_client
    assert c.get("/archs").status_code == 200  # no key yet: the embedded default on loopback
    headers = key_headers(c.settings, "default", ["audits:read"])
    assert_problem(c.get("/archs"), 401)
    assert c.get("/archs", headers=headers).status_code == 200
    token = headers["Authorization"].split()[1]
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), token[:12], "ea_" + "x" * 43, "Bearer",
                   " ".join(token), "x" * 5000):
        assert_problem(c.get("/archs", headers={"Authorization": f"Bearer {forged}"}), 401)
    assert_problem(c.get("/archs", headers={"Authorization": f"Basic {token}"}), 401)
    with db.session_factory(c.settings.resolved_database_url)() as s:
        keys.revoke_key(s, token[:12])
        assert [k.revoked_at is not None for k in keys.list_keys(s)] == [True]
    assert_problem(c.get("/archs", headers=headers), 401)
    assert c.get("/healthz").status_code == 200  # health stays public


def test_keys_are_stored_hashed(api_client):
    from sqlalchemy import select

    from editaudit.core import db

    headers = key_headers(api_client.settings, "default")
    token = headers["Authorization"].split()[1]
    with db.session_factory(api_client.settings.resolved_database_url)() as s:
        row = s.scalars(select(db.ApiKey)).one()
        stored = " ".join(str(getattr(row, col.name)) for col in db.ApiKey.__table__.columns)
    assert token not in stored and token[12:] not in stored and row.prefix == token[:12]


def test_docs_and_schema_need_a_key_once_keys_exist(api_client):
    c = api_client
    assert c.get("/docs").status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in c.get("/docs").text
    assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200  # served locally, no CDN
    key_headers(c.settings, "default")
    assert_problem(c.get("/openapi.json"), 401)
    assert_problem(c.get("/docs"), 401)


def test_without_keys_only_a_loopback_bind_serves(tmp_path):
    from editaudit.cli.embedded import EmbeddedServer
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    with pytest.raises(RuntimeError, match="refusing to serve on 0.0.0.0 without API keys"):
        with EmbeddedServer(settings, host="0.0.0.0"):
            pass
    assert not (tmp_path / "worker.log").exists()  # refused before the worker started: nothing left running


def test_the_production_app_refuses_to_start_without_a_key(tmp_path):
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    with pytest.raises(RuntimeError, match="refusing to serve without authentication"):
        with TestClient(create_app(settings)):
            pass
    headers = key_headers(settings, "team-a", ["audits:read"])
    with TestClient(create_app(settings)) as c:
        assert_problem(c.get("/archs"), 401)
        assert c.get("/archs", headers=headers).status_code == 200
