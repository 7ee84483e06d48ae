"""Tenants and keys, tried as a second tenant and as a hostile key holder would. Every operation of the published
OpenAPI document is called with tenant B's key against tenant A's data (generated from /openapi.json, so a new
route, listing or aggregate cannot be forgotten): a route with an id answers 404 and names nothing of A's, a listing
or aggregate names none of A's ids or names, a create makes B's own resource, and afterwards everything A can read is
exactly as it was. Scopes are enforced before the body is read; revoked and forged keys are refused."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from tests.conftest import SPEC, key_headers, unscoped
from tests.integration.test_api_errors import assert_problem

PGD = {"name": "pgd", "eps": 0.03, "steps": 2}
RULES = {"rules": [{"metric": "edit.accuracy", "min": 0.0}]}


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
    assert c.post("/policies", json={"name": "team-policy", "policy": RULES}).status_code == 201
    assert c.post("/audit-profiles", json={"name": "team-profile", "audit": {"attacks": [PGD]}}).status_code == 201
    r = c.post(f"/edits/{job['id']}/promote", json={"alias": "production", "policy": "default",
                                                    "override_reason": "the fixture needs an alias to exist"})
    assert r.status_code == 200, r.text
    queued = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    hook = c.post("/webhooks", json={"url": "https://hooks.example.com/ci-of-team-a", "events": ["*"]})
    assert hook.status_code == 201, hook.text
    job["webhook_id"] = hook.json()["id"]
    study = c.post("/studies", json={"model_id": edit_factory.model["id"], "edit_set": edit_factory.dataset["id"],
                                     "test_set": "builtin:digits-test", "audit": {"attacks": [PGD]},
                                     "grid": {"methods": ["finetune_layer"], "layers": ["fc"], "interpolate": False}})
    assert study.status_code == 202, study.text
    job["study_id"] = study.json()["id"]
    return c, a, key_headers(c.settings, "team-b", name="bob"), job, queued


def _values(edit_factory, job, queued) -> dict[str, str]:
    """A value of A's for every path parameter of the API (a new one must be added here)."""
    kept = [s["index"] for s in edit_factory.client.get(f"/audits/{job['audit_id']}/samples",
                                                        params={"limit": 200}).json()["items"] if s["image"]]
    assert kept, "the fixture's edit flips some clean test samples (the failures it fixes), whose inputs are kept"
    return {"model_id": edit_factory.model["id"], "dataset_id": edit_factory.dataset["id"], "edit_id": job["id"],
            "audit_id": job["audit_id"], "fmt": "json", "webhook_id": job["webhook_id"], "index": str(kept[0]),
            "study_id": job["study_id"]}


def _secrets(c, edit_factory, job, queued) -> set[str]:
    """What of A's must never appear in an answer to B: its ids, names, actor and webhook URL."""
    edited = c.get(f"/edits/{job['id']}").json()["edited_model_id"]
    return {edit_factory.model["id"], edit_factory.dataset["id"], job["id"], job["audit_id"], queued["id"],
            queued["audit_id"], job["webhook_id"], job["study_id"], edited, *NAME_BY_PREFIX.values(), "alice",
            "ci-of-team-a"}


NAME_BY_PREFIX = {"/policies": "team-policy", "/audit-profiles": "team-profile", "/aliases": "production"}
# the bodies of operations that need one; B names A's ids and names in them
BODIES = {"promote_edit": {"alias": "production", "policy": "default", "override_reason": "a hostile override"},
          "revert_edit": {"reason": "a hostile revert"}}
# every operation without a path parameter that is not a GET: how B calls it, and the status B gets. A create
# makes B's own resource (named as A's are: it must not touch them); one naming A's ids in its body is a 404
CREATES = {
    "upload_model": (lambda f: {"files": {"weights": ("m.safetensors", f.weights)}, "data": {"spec": json.dumps(SPEC)}},
                     201),
    "upload_dataset": (lambda f: {"files": {"file": ("f.npz", f.dataset_bytes)}}, 201),
    "submit_edit": (lambda f: {"json": {"model_id": f.model["id"], "method": "finetune_layer", "layers": ["fc"],
                                        "edit_set": f.dataset["id"], "test_set": "builtin:digits-test"}}, 404),
    "gate": (lambda f: {"json": {"edit_id": f.job["id"], "policy": "team-policy"}}, 404),
    "submit_study": (lambda f: {"json": {"model_id": f.model["id"], "edit_set": f.dataset["id"],
                                         "test_set": "builtin:digits-test",
                                         "grid": {"methods": ["finetune_layer"], "layers": ["fc"]}}}, 404),
    "create_policy": (lambda f: {"json": {"name": "team-policy", "policy": RULES}}, 201),
    "create_audit_profile": (lambda f: {"json": {"name": "team-profile", "audit": {"attacks": []}}}, 201),
    "create_webhook": (lambda f: {"json": {"url": "https://hooks.example.com/b", "events": ["*"]}}, 201),
}
CATALOG = {"list_archs", "list_methods"}  # GETs that answer no tenant's data (A's answer need not name A's)
SIDE_EFFECTS = {"gate_edit"}  # GETs that write (a gate.evaluated event): not part of A's before/after snapshot


def _operations(c) -> list[tuple[str, str, dict]]:
    """(method, path, operation) of every operation in the document the API publishes."""
    doc = c.get("/openapi.json")
    assert doc.status_code == 200, doc.text
    return [(method.upper(), path, operation) for path, item in doc.json()["paths"].items()
            for method, operation in item.items()]


def _url(path: str, operation: dict, values: dict) -> str:
    params = re.findall(r"{(\w+)}", path)
    fill = dict(values)
    if "name" in params:
        fill["name"] = next((v for p, v in NAME_BY_PREFIX.items() if path.startswith(p)), None)
    unknown = [p for p in params if fill.get(p) is None]
    assert not unknown, f"{operation['operationId']}: no value for {unknown}; teach this test about it"
    required = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")]
    assert not required, f"{operation['operationId']}: required query parameters {required}; teach this test"
    return path.format(**fill)


def _leaks(response, secrets: set[str]) -> list[str]:
    text = response.content.decode("utf-8", "replace")
    return sorted(s for s in secrets if s in text)


def _snapshot(c, operations, values) -> dict[str, tuple[int, bytes]]:
    """Everything A can read (every GET but the public ones and those that write), as A sees it."""
    return {op["operationId"]: (r.status_code, r.content) for method, path, op in operations
            if method == "GET" and op.get("security") != [] and op["operationId"] not in SIDE_EFFECTS
            for r in [c.get(_url(path, op, values))]}


def test_every_operation_of_the_api_keeps_tenants_apart(two_tenants, edit_factory, digits_model):
    c, a, b, job, queued = two_tenants
    values = _values(edit_factory, job, queued)
    secrets = _secrets(c, edit_factory, job, queued)
    operations = _operations(c)
    before = _snapshot(c, operations, values)
    fixture = SimpleNamespace(weights=digits_model[0], dataset_bytes=edit_factory.dataset_bytes,
                              model=edit_factory.model, dataset=edit_factory.dataset, job=job)
    checked: dict[str, str] = {}
    creates = []
    for method, path, op in operations:
        op_id = op["operationId"]
        if op.get("security") == []:  # public: no key, no tenant, and nothing of any tenant's in it
            r = c.request(method, path, headers={"Authorization": ""})
            assert not _leaks(r, secrets), (op_id, _leaks(r, secrets))
            checked[op_id] = "public"
        elif "{" in path:  # names a resource of A's: absent for B, reads and writes alike
            url = _url(path, op, values)
            body = BODIES.get(op_id)
            if op.get("requestBody", {}).get("required"):
                assert body is not None, f"{op_id} needs a body; teach this test (BODIES)"
            if op_id == "cancel_edit":
                url = path.format(edit_id=queued["id"])
            r = c.request(method, url, json=body, headers=b)
            assert r.status_code == 404, f"{method} {url} answered {r.status_code} to another tenant: {r.text}"
            assert_problem(r, 404)
            named = {s for s in secrets if s in url or s in json.dumps(body)}  # B's own words may be echoed
            assert not _leaks(r, secrets - named), (op_id, _leaks(r, secrets - named))
            checked[op_id] = "404"
        elif method == "GET":  # a listing or an aggregate: B's answer names none of A's
            r = c.get(path, headers=b)
            assert r.status_code == 200, (op_id, r.text)
            assert not _leaks(r, secrets), (op_id, _leaks(r, secrets))
            if op_id not in CATALOG:  # and A's names some: the route serves tenant data, B's answer is not vacuous
                assert _leaks(c.get(path), secrets), f"{op_id}: A's own answer names nothing of A's"
            checked[op_id] = "listing"
        else:
            assert op_id in CREATES, f"{method} {path} ({op_id}): teach this test how B calls it (CREATES)"
            creates.append((method, path, op))
    for method, path, op in creates:  # after the listings: B's creates reuse A's names, which B may then list
        op_id = op["operationId"]
        kwargs, status = CREATES[op_id]
        sent = kwargs(fixture)
        r = c.request(method, path, headers=b, **sent)
        assert r.status_code == status, (op_id, r.status_code, r.text)
        named = {s for s in secrets if s in json.dumps(sent.get("json"))}  # B's own words may be echoed
        assert not _leaks(r, secrets - named), (op_id, _leaks(r, secrets - named))
        checked[op_id] = str(status)
    assert set(CREATES) <= set(checked), sorted(set(CREATES) - set(checked))  # no stale entries
    assert len(checked) == len(operations) >= 40, (len(checked), len(operations))
    # B created its own (same bytes, same names): A's resources, names and ids are untouched
    assert c.get("/policies/team-policy", headers=b).json()["version"] == 1
    assert c.get("/policies/team-policy").json()["version"] == 1
    after = _snapshot(c, operations, values)
    changed = sorted(op for op in before if before[op] != after[op])
    assert not changed, f"B's requests changed what A reads: {changed}"
    assert c.get(f"/edits/{queued['id']}").json()["status"] == "queued"
    assert c.get("/aliases/production").json()["model_id"] == c.get(f"/edits/{job['id']}").json()["edited_model_id"]
    assert all(status == 200 for status, _ in before.values()), {k: v[0] for k, v in before.items() if v[0] != 200}


def test_scopes_are_enforced_before_the_body(edit_factory):
    c = edit_factory.client
    reader = key_headers(c.settings, "default", ["audits:read"], name="reader")
    r = c.post("/models", headers=reader, files={"weights": ("m.safetensors", b"x" * 4096)}, data={"spec": "{}"})
    body = assert_problem(r, 403)
    assert body["required_scope"] == "models:write"
    assert_problem(c.post("/policies", json={"name": "p", "policy": RULES}, headers=reader), 403)
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
    with unscoped(db.session_factory(c.settings.resolved_database_url))() as s:
        keys.revoke_key(s, token[:12])
        assert [k.revoked_at is not None for k in keys.list_keys(s)] == [True]
    assert_problem(c.get("/archs", headers=headers), 401)
    assert c.get("/healthz").status_code == 200  # health stays public


def test_keys_are_stored_hashed(api_client):
    from sqlalchemy import select

    from editaudit.core import db

    headers = key_headers(api_client.settings, "default")
    token = headers["Authorization"].split()[1]
    with unscoped(db.session_factory(api_client.settings.resolved_database_url))() as s:
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
