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
from tests.conftest import SPEC, unscoped

PGD = {"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 5, "step_size": 0.02}


@pytest.fixture()
def app_settings_extra() -> dict:
    """Webhooks to one host may be configured (nothing here sends them: no worker delivers)."""
    return {"webhook_allowed_hosts": ["hooks.example.com"]}


@pytest.fixture()
def job_runner(api_client):
    """Runs every queued edit (not a sweep's sub-edits: their sweep runs them) as a worker would, until the test
    ends."""
    stop = threading.Event()
    sessions = unscoped(db.session_factory(api_client.settings.resolved_database_url))

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


def test_file_references_read_verbs_global_options_and_formats(api_client, http_url, job_runner, digits_model,
                                                                 failures_npz, tmp_path):
    """`edits submit edit.json` uploads the `@file`s it names (again: the same ids), every listable resource has a
    list verb, `--url`/`--key` go before or after the verb, one `-o`/`--format` convention, server suggestions."""
    url = ("--url", http_url)
    work = tmp_path / "work"
    work.mkdir()
    (work / "model.safetensors").write_bytes(digits_model[0])
    (work / "model.json").write_text(json.dumps(SPEC))
    (work / "edit-set.npz").write_bytes(failures_npz)
    body = {"model_id": "@model.safetensors", "method": "finetune_layer", "layers": ["fc"],
            "edit_set": "@edit-set.npz", "test_set": "builtin:digits-test", "audit": {"attacks": [PGD]}}
    (work / "edit.json").write_text(json.dumps(body))

    # --url before the verb; references resolved relative to the JSON file (not the working directory)
    first = editaudit("--url", http_url, "edits", "submit", str(work / "edit.json"), "--wait", "--poll", "0.2",
                      "--progress-every", "0", "--json", cwd=tmp_path)
    edit = json.loads(ok(first))
    assert edit["status"] == "succeeded"
    assert "uploaded" in first.stderr and "model.safetensors (spec model.json): model" in first.stderr
    assert "edit-set.npz: dataset" in first.stderr
    progress = [line for line in first.stderr.splitlines() if line.startswith(f"edit {edit['id']} ")
                and not line.endswith("waiting ...")]
    assert progress and all("elapsed" in line for line in progress), first.stderr
    assert "succeeded" in progress[-1] and "ETA" not in progress[-1], "the final line has no ETA"
    assert any("ETA" in line for line in progress[:-1]), progress

    # again: the same files answer the same ids, nothing is stored twice
    again = editaudit("edits", "submit", "edit.json", "-q", *url, cwd=work)
    second_id = ok(again).strip()
    assert second_id != edit["id"]
    assert ok(editaudit("edits", "wait", second_id, "-q", "--poll", "0.2", *url)).strip() == second_id
    models = json.loads(ok(editaudit("models", "list", "--json", *url)))
    datasets = json.loads(ok(editaudit("datasets", "list", "--json", *url)))
    assert [m["id"] for m in models if not m["edit_id"]] == [edit["model_id"]], "one uploaded model"
    assert [d["id"] for d in datasets] == [edit["edit_set"]], "one dataset"

    # a reference to a missing file, or a model without its spec: usage (4), nothing submitted
    (work / "bad.json").write_text(json.dumps({**body, "edit_set": "@nope.npz"}))
    missing = editaudit("edits", "submit", str(work / "bad.json"), *url)
    assert missing.returncode == 4 and "edit_set: '@nope.npz': no such file" in missing.stderr
    (work / "other.safetensors").write_bytes(digits_model[0])
    (work / "nospec.json").write_text(json.dumps({**body, "model_id": "@other.safetensors"}))
    nospec = editaudit("edits", "submit", str(work / "nospec.json"), *url)
    assert nospec.returncode == 4 and "other.json" in nospec.stderr

    # list verbs: table, JSON, ids; filters; a limit
    table = ok(editaudit("models", "list", *url))
    assert table.splitlines()[0].split()[:2] == ["id", "arch"] and edit["edited_model_id"] in table
    assert ok(editaudit("models", "list", "--limit", "1", "-q", *url)).split() == [models[0]["id"]]
    assert edit["edit_set"] in ok(editaudit("datasets", "list", *url))
    assert "edit-set.npz" in ok(editaudit("datasets", "get", edit["edit_set"], *url))
    audits = ok(editaudit("audits", "list", "--edit-id", edit["id"], "-q", *url)).split()
    assert audits == [edit["audit_id"]]
    assert len(json.loads(ok(editaudit("audits", "list", "--status", "succeeded", "--json", *url)))) == 2
    assert edit["audit_id"] in ok(editaudit("audits", "list", "--model-id", edit["model_id"], *url))
    shown = ok(editaudit("models", "get", edit["edited_model_id"], *url))
    assert edit["id"] in shown and SPEC["arch"] in shown
    layers = ok(editaudit("models", "layers", edit["model_id"], *url))
    assert "fc1" in layers and "parameters" in layers.splitlines()[2]
    assert [x["name"] for x in json.loads(ok(editaudit("models", "layers", edit["model_id"], "--match", "fc*",
                                                       "--json", *url)))["layers"]] == ["fc1", "fc"], \
        "in the model's module order (fc1 feeds fc), not alphabetical"
    lineage = ok(editaudit("models", "lineage", edit["edited_model_id"], *url))
    assert edit["model_id"] in lineage and "ancestor" in lineage
    assert "editaudit/smallcnn" in ok(editaudit("archs", *url)).split()
    assert all(n.startswith("torchvision/res") for n in ok(editaudit("archs", "torchvision/res*", *url)).split())
    assert "rewrite" in ok(editaudit("methods", *url)) and "rank" in ok(editaudit("methods", "rewrite", *url))
    typo = editaudit("methods", "rewrit", *url)
    assert typo.returncode == 4 and "did you mean: rewrite" in typo.stderr
    dl = tmp_path / "m.safetensors"
    ok(editaudit("models", "download", edit["model_id"], "-o", str(dl), *url))
    assert dl.read_bytes() == digits_model[0]
    piped = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "weights", "download", edit["id"], "-o", "-",
                            *url], capture_output=True, timeout=120)
    assert piped.returncode == 0 and hashlib.sha256(piped.stdout).hexdigest() == json.loads(ok(editaudit(
        "models", "get", edit["edited_model_id"], "--json", *url)))["sha256"]

    # the server's suggestions are printed
    (work / "typo.json").write_text(json.dumps({**body, "layers": ["fc3"]}))
    bad_layer = editaudit("edits", "submit", str(work / "typo.json"), *url)
    assert bad_layer.returncode == 2
    assert "layers.0: unknown layer 'fc3'" in bad_layer.stderr and "(did you mean: fc" in bad_layer.stderr
    bad_arch = editaudit("models", "upload", str(work / "model.safetensors"), "--spec",
                         json.dumps({**SPEC, "arch": "editaudit/smalcnn"}), *url)
    assert bad_arch.returncode == 2 and "spec.arch: " in bad_arch.stderr
    assert "did you mean: editaudit/smallcnn" in bad_arch.stderr

    # one output convention: -o (format from its suffix), --format with aliases, the same names for gate and report
    audit_id = edit["audit_id"]
    ok(editaudit("audits", "report", audit_id, "-o", str(tmp_path / "r.md"), *url))
    assert (tmp_path / "r.md").read_text().startswith("#") or "|" in (tmp_path / "r.md").read_text()
    junit = ok(editaudit("audits", "report", audit_id, "--format", "xml", *url))
    assert ET.fromstring(junit).tag == "testsuites"
    assert ET.fromstring(ok(editaudit("audits", "report", audit_id, "--format", "junit", *url))).tag == "testsuites"
    assert "test.accuracy" in ok(editaudit("audits", "report", audit_id, "--format", "table", *url))
    assert editaudit("audits", "report", audit_id, "--format", "pdf", *url).returncode == 4
    assert editaudit("audits", "get", audit_id, "--format", "junit", *url).returncode == 4
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nrules:\n  - {metric: edit.accuracy, min: 0.5}\n")
    gate_md = editaudit("gate", edit["id"], "--policy", str(policy), "--format", "md", *url)
    assert gate_md.returncode == 0 and gate_md.stdout.startswith("### editaudit gate")
    gate_out = editaudit("gate", edit["id"], "--policy", str(policy), "-o", str(tmp_path / "gate.xml"), *url)
    assert gate_out.returncode == 0 and "verdict: PASS" in gate_out.stdout
    assert ET.parse(tmp_path / "gate.xml").getroot().tag == "testsuites"
    listed = tmp_path / "out" / "edits.json"
    ok(editaudit("edits", "list", "-o", str(listed), *url))
    assert {e["id"] for e in json.loads(listed.read_text())} == {edit["id"], second_id}

    # keys: once one exists, --key before or after the verb, the one after wins
    token = ok(editaudit("keys", "create", "--tenant", "default", "--name", "ci", "--scope", "admin",
                         "--data-dir", str(api_client.settings.data_dir))).strip()
    assert ok(editaudit("--key", token, "edits", "list", "-q", *url)).split()
    assert ok(editaudit("--key", "ea_wrong", "--url", "http://127.0.0.1:9", "edits", "list", "-q", "--key", token,
                        *url)).split()
    wrong_after = editaudit("--key", token, "edits", "list", "--key", "ea_wrong", *url)
    assert wrong_after.returncode == 2 and "API key" in wrong_after.stderr
    env_key = editaudit("edits", "list", "-q", *url, key=token)
    assert env_key.returncode == 0, "the environment's key when none is given"
    assert editaudit("--key", "ea_wrong", "edits", "list", *url, key=token).returncode == 2, "--key beats the env"


def finished(c, edit_id: str, deadline_s: float = 300) -> str:
    """The edit's final status, polling; the deadline only bounds a failure."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status = c.get(f"/edits/{edit_id}").json()["status"]
        if status in ("succeeded", "failed", "canceled"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"edit {edit_id} did not finish within {deadline_s} s")


def test_promotion_refusals_say_why_first(api_client, http_url, job_runner, edit_factory, tmp_path):
    url = ("--url", http_url)
    c = edit_factory.client
    lenient, strict = tmp_path / "lenient.yaml", tmp_path / "strict.yaml"
    lenient.write_text("version: 1\nrules:\n  - {metric: edit.accuracy, min: 0.1}\n  - {metric: test.accuracy, "
                       "min: 0.1}\n")
    strict.write_text("version: 1\nrules:\n  - {metric: edit.accuracy, min: 0.1}\n  - {metric: test.accuracy, "
                      "min: 0.9999}\n")
    assert "stored" in ok(editaudit("policies", "create", "lenient", str(lenient), *url))
    ok(editaudit("policies", "create", "strict", str(strict), *url))
    assert editaudit("policies", "create", "default", str(lenient), *url).returncode == 4, "a built-in's name"
    names = ok(editaudit("policies", "list", *url))
    assert "default" in names and "lenient" in names and "strict" in names
    assert "min: 0.9999" in ok(editaudit("policies", "get", "strict", *url))

    # queued and run by job_runner (running them here too would race it for the lease: one of the two returns early)
    a = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    b = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    for job in (a, b):
        assert finished(c, job["id"]) == "succeeded"
    promoted = ok(editaudit("promote", a["id"], "--policy", "lenient", *url))
    a_model = c.get(f"/edits/{a['id']}").json()["edited_model_id"]
    b = {**b, "model_id": c.get(f"/edits/{b['id']}").json()["model_id"]}
    assert promoted.startswith(f"promoted: production -> model {a_model} (was unset); gate pass")

    # the gate's refusal: its reason first, then only the failing rules
    gated = editaudit("promote", b["id"], "--alias", "staging", "--policy", "strict", *url)
    assert gated.returncode == 1, gated.stderr
    first = gated.stderr.splitlines()[0]
    assert first.startswith("error: gate failed: 1 rule blocks (policy strict)"), gated.stderr
    assert first.endswith(f"edit {b['id']} not promoted to 'staging'")
    assert "test.accuracy" in gated.stderr and "verdict: BLOCKED" in gated.stderr
    assert "edit.accuracy" not in gated.stderr.split("verdict:")[0], "a passing rule is not in the table"
    assert "1 other rule passed" in gated.stderr

    # the alias moved since b was made (a's model serves production now): said first, no table of passing rules
    moved = editaudit("promote", b["id"], "--policy", "lenient", *url)
    assert moved.returncode == 1
    first = moved.stderr.splitlines()[0]
    assert first.startswith(f"error: the alias 'production' moved since edit {b['id']} was made: it serves model "
                            f"{a_model}, the edit was audited against model {b['model_id']}"), moved.stderr
    assert "the gate fails" not in moved.stderr and "verdict:" not in moved.stderr and "PASS" not in moved.stderr
    assert "override-reason" in moved.stderr
    both = editaudit("promote", b["id"], "--policy", "strict", *url)
    assert both.stderr.splitlines()[0].startswith("error: the alias 'production' moved")
    assert "also, the gate fails: 1 rule blocks" in both.stderr and "test.accuracy" in both.stderr

    history = ok(editaudit("aliases", "get", "production", *url))
    assert history.startswith("production -> model") and "refused" in history and "promoted" in history
    trail = json.loads(ok(editaudit("promotions", "list", "--edit-id", b["id"], "--json", *url)))
    assert [p["outcome"] for p in trail["promotions"]] == ["refused"] * 3


def test_unfinished_audits_and_waiting(api_client, http_url, edit_factory, tmp_path):
    """No worker runs here: the edit stays queued. A report of its audit exits 3 and says its status; so does a
    gate; `edits wait` times out (3) with progress lines on stderr."""
    url = ("--url", http_url)
    job = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    report = editaudit("audits", "report", job["audit_id"], "--format", "md", *url)
    assert report.returncode == 3 and f"audit {job['audit_id']} is queued" in report.stderr and not report.stdout
    html = editaudit("audits", "report", job["audit_id"], "-o", str(tmp_path / "r.html"), *url)
    assert html.returncode == 3 and not (tmp_path / "r.html").exists()
    assert editaudit("gate", job["id"], "--min", "edit.accuracy=0.9", *url).returncode == 3
    waited = editaudit("edits", "wait", job["id"], "--timeout", "1", "--poll", "0.2", "--progress-every", "0", *url)
    assert waited.returncode == 3 and "still queued" in waited.stderr
    lines = [line for line in waited.stderr.splitlines() if line.startswith(f"edit {job['id']} queued")]
    assert lines and all("waiting for a worker" in line and "ETA ?" in line for line in lines), waited.stderr


def test_webhook_verbs(api_client, http_url, tmp_path):
    url = ("--url", http_url)
    assert json.loads(ok(editaudit("webhooks", "list", "--json", *url))) == []
    created = editaudit("webhooks", "create", "https://hooks.example.com/editaudit", "--event", "gate.evaluated",
                        "--event", "edit.failed", "--description", "CI trigger", *url)
    out = ok(created)
    assert "secret" in out and "shown only now" in created.stderr
    hook_id = ok(editaudit("webhooks", "list", "-q", *url)).strip()
    assert hook_id in out
    shown = json.loads(ok(editaudit("webhooks", "get", hook_id, "--json", *url)))
    assert shown["events"] == ["edit.failed", "gate.evaluated"] and "secret" not in shown
    refused = editaudit("webhooks", "create", "https://elsewhere.example.org/x", *url)
    assert refused.returncode == 2 and "allow-list" in refused.stderr
    assert "ping" in ok(editaudit("webhooks", "test", hook_id, *url))
    deliveries = json.loads(ok(editaudit("webhooks", "deliveries", hook_id, "--json", *url)))
    assert [d["event"] for d in deliveries] == ["ping"]
    assert ok(editaudit("webhooks", "delete", hook_id, *url)).strip() == f"deleted webhook {hook_id}"
    assert editaudit("webhooks", "get", hook_id, *url).returncode == 3


def test_a_study_from_a_yaml_file_with_uploads_then_its_report(api_client, http_url, job_runner, digits_model,
                                                               failures_npz, tmp_path):
    """`study submit STUDY.yaml --wait` uploads its @files, follows the runs to the end; `study report` writes the
    Markdown and the HTML; a bad run is exit 2 naming it."""
    url = ("--url", http_url)
    (tmp_path / "model.safetensors").write_bytes(digits_model[0])
    (tmp_path / "model.json").write_text(json.dumps(SPEC))
    (tmp_path / "failures.npz").write_bytes(failures_npz)
    (tmp_path / "study.yaml").write_text(
        "name: two seeds\nmodel_id: '@model.safetensors'\nedit_set: '@failures.npz'\n"
        "test_set: builtin:digits-test\n"
        "audit: {attacks: [{id: pgd, name: pgd, eps: 0.05, steps: 2}], max_samples: 60}\n"
        "grid: {methods: [finetune_layer], layers: [fc], seeds: [0, 1], interpolate: false}\n")
    r = editaudit("study", "submit", str(tmp_path / "study.yaml"), "--wait", "--poll", "0.2", *url)
    out = ok(r)
    assert "recommended" in out and "finetune_layer fc" in out and "2 succeeded" in r.stderr + out
    study_id = json.loads(ok(editaudit("study", "list", "--json", *url)))[0]["id"]
    md = ok(editaudit("study", "report", study_id, *url))
    assert "finetune_layer fc" in md
    ok(editaudit("study", "report", study_id, "-o", str(tmp_path / "study.html"), *url))
    assert "data:image/png;base64," in (tmp_path / "study.html").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "study.yaml").read_text().replace("layers: [fc]", "layers: [fc, nope]"))
    r = editaudit("study", "submit", str(bad), *url)
    assert r.returncode == 2 and "grid.runs.2.layers.0" in r.stderr, r.stderr
