"""The resource verbs of the CLI (models, datasets, edits, audits, weights) through the typed client against the app
served over real HTTP, and `editaudit keys` against the same SQLite database. Queued edits are run by a thread that
calls the Celery task's body (`run_edit_job`), so `edits submit --wait` follows a job that really runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import select

from editaudit.core import db
from editaudit.worker.jobs import run_edit_job
from tests.conftest import SPEC

PGD = {"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 5, "step_size": 0.02}


@pytest.fixture()
def job_runner(api_client):
    """Runs every queued edit (not a sweep's sub-edits: their sweep runs them) as a worker would, until the test
    ends."""
    stop = threading.Event()
    sessions = db.session_factory(api_client.settings.resolved_database_url)

    def loop():
        while not stop.is_set():
            with sessions() as s:
                queued = s.scalars(select(db.Edit.id).where(db.Edit.status == "queued", db.Edit.sweep_id.is_(None))
                                   .order_by(db.Edit.created_at)).all()
            for edit_id in queued:
                run_edit_job(api_client.settings, edit_id)
            stop.wait(0.1)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield
    stop.set()
    t.join(60)


def editaudit(*args: str, key: str | None = None, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, with no EDITAUDIT_* settings from this one but the key given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}
    if key:
        env["EDITAUDIT_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "editaudit.cli.main", *args], capture_output=True, text=True,
                          input=stdin, env=env, cwd=cwd, timeout=300)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def test_resource_verbs_and_keys_end_to_end(api_client, http_url, job_runner, digits_model, failures_npz, tmp_path):
    data_dir, url = str(api_client.settings.data_dir), ("--url", http_url)

    # the operator's bootstrap: a key, printed once; from now on every request needs one
    created = editaudit("keys", "create", "--tenant", "default", "--name", "ci", "--scope", "admin",
                        "--data-dir", data_dir)
    token = ok(created).strip()
    assert token.startswith("ea_") and "cannot be shown again" in created.stderr and token not in created.stderr
    anonymous = editaudit("edits", "list", *url)
    assert anonymous.returncode == 2 and anonymous.stderr.startswith("error: a valid API key is required")

    weights, spec_file, npz = tmp_path / "m.safetensors", tmp_path / "spec.json", tmp_path / "failures.npz"
    weights.write_bytes(digits_model[0])
    spec_file.write_text(json.dumps(SPEC))
    npz.write_bytes(failures_npz)
    model = json.loads(ok(editaudit("models", "upload", str(weights), "--spec", f"@{spec_file}", "--json", *url,
                                    key=token)))
    assert model["arch"] == SPEC["arch"] and model["sha256"] == hashlib.sha256(digits_model[0]).hexdigest()
    dataset_id = ok(editaudit("datasets", "upload", str(npz), "-q", *url, key=token)).strip()
    assert ok(editaudit("models", "upload", str(weights), "--spec", json.dumps(SPEC), "-q", *url,
                        key=token)).strip() == model["id"], "the same upload answers the same model"

    body = tmp_path / "edit.json"
    body.write_text(json.dumps({"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"],
                                "edit_set": dataset_id, "test_set": "builtin:digits-test",
                                "audit": {"attacks": [PGD]}}))
    waited = editaudit("edits", "submit", str(body), "--wait", "--poll", "0.2", "--json", "--idempotency-key",
                       "build-7", *url, key=token)
    edit = json.loads(ok(waited))
    assert edit["status"] == "succeeded" and edit["edited_model_id"]
    assert "succeeded" in waited.stderr and "/" in waited.stderr, "progress lines on stderr"
    again = editaudit("edits", "submit", "-", "--json", "--idempotency-key", "build-7", *url, key=token,
                      stdin=body.read_text())
    assert json.loads(ok(again))["id"] == edit["id"], "the same idempotency key answers the first edit"

    listed = json.loads(ok(editaudit("edits", "list", "--status", "succeeded", "--model-id", model["id"],
                                     "--json", *url, key=token)))
    assert [e["id"] for e in listed] == [edit["id"]]
    table = ok(editaudit("edits", "list", "--method", "finetune_layer", "--limit", "5", *url, key=token))
    assert table.splitlines()[0].split()[:3] == ["id", "status", "method"] and edit["id"] in table
    assert ok(editaudit("edits", "list", "--status", "failed", "--json", *url, key=token)).strip() == "[]"
    shown = ok(editaudit("edits", "get", edit["id"], *url, key=token))
    assert "succeeded" in shown and edit["edited_model_id"] in shown and edit["audit_id"] in shown

    audit_id = edit["audit_id"]
    assert "test.adv.pgd.accuracy" in ok(editaudit("audits", "get", audit_id, *url, key=token))
    audit = json.loads(ok(editaudit("audits", "get", audit_id, "--json", *url, key=token)))
    assert audit["status"] == "succeeded" and audit["edit_id"] == edit["id"]
    for fmt, check in (("md", lambda t: audit_id in t or edit["id"] in t), ("json", lambda t: json.loads(t)),
                       ("xml", lambda t: ET.fromstring(t).tag == "testsuites"), ("html", lambda t: "<html" in t)):
        out = tmp_path / f"report.{fmt}"
        ok(editaudit("audits", "report", audit_id, "--format", fmt, "-o", str(out), *url, key=token))
        assert check(out.read_text(encoding="utf-8")), fmt

    dest = tmp_path / "out" / "edited.safetensors"
    got = ok(editaudit("weights", "download", edit["id"], "-o", str(dest), *url, key=token))
    edited = api_client.get(f"/models/{edit['edited_model_id']}", headers={"Authorization": f"Bearer {token}"}).json()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == edited["sha256"] and "verified" in got
    assert sorted(p.name for p in dest.parent.iterdir()) == ["edited.safetensors"], "no partial file left"

    # problems: not found / not in the needed state (3), the server's refusal (2), usage (4)
    finished = editaudit("edits", "cancel", edit["id"], *url, key=token)
    assert finished.returncode == 3 and finished.stderr.startswith(f"error: edit {edit['id']} is already succeeded")
    missing = editaudit("edits", "get", "no-such-edit", *url, key=token)
    assert missing.returncode == 3 and missing.stderr.startswith("error:")
    assert editaudit("edits", "submit", str(tmp_path / "nope.json"), *url, key=token).returncode == 4
    assert editaudit("models", "upload", str(weights), "--spec", "{not json", *url, key=token).returncode == 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"],
                               "edit_set": dataset_id, "test_set": "builtin:digits-test",
                               "audit": {"attacks": [{**PGD, "eps": -1}]}}))
    refused = editaudit("edits", "submit", str(bad), *url, key=token)
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "audit.attacks.0" in refused.stderr

    # scopes: a read-only key reads and cannot submit
    reader = ok(editaudit("keys", "create", "--tenant", "default", "--name", "dashboard", "--scope", "audits:read",
                          "--data-dir", data_dir)).strip()
    assert ok(editaudit("edits", "get", edit["id"], *url, key=reader))
    denied = editaudit("edits", "submit", str(body), *url, key=reader)
    assert denied.returncode == 2 and "lacks the scope 'edits:write'" in denied.stderr

    keys = json.loads(ok(editaudit("keys", "list", "--tenant", "default", "--json", "--data-dir", data_dir)))
    assert [(k["name"], k["scopes"], k["revoked_at"]) for k in keys] == [("ci", ["admin"], None),
                                                                         ("dashboard", ["audits:read"], None)]
    table = ok(editaudit("keys", "list", "--data-dir", data_dir))
    assert keys[0]["prefix"] in table and token not in table and token[len(keys[0]["prefix"]):] not in table

    revoked = ok(editaudit("keys", "revoke", keys[0]["prefix"], "--data-dir", data_dir))
    assert revoked.startswith(f"revoked key {keys[0]['prefix']}")
    after = editaudit("edits", "get", edit["id"], *url, key=token)
    assert after.returncode == 2 and after.stderr.startswith("error: a valid API key is required")
    assert json.loads(ok(editaudit("keys", "list", "--json", "--data-dir", data_dir)))[0]["revoked_at"]
    assert editaudit("keys", "revoke", "ea_nope", "--data-dir", data_dir).returncode == 3
    assert editaudit("keys", "create", "--tenant", "default", "--name", "x", "--scope", "root",
                     "--data-dir", data_dir).returncode == 4
