"""Gate, policies and promotion over HTTP. Edits run through the real job code (`run_edit_job`, the Celery task's
body) in this process, so each audit is really measured without waiting on a worker process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from editaudit.worker.jobs import run_edit_job
from tests.conftest import key_headers
from tests.integration.test_api_errors import assert_problem

PGD = {"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 5, "step_size": 0.02}
FAILING = {"version": 1, "rules": [{"metric": "test.accuracy", "min": 0.999}]}
PASSING = {"version": 1, "rules": [{"metric": "edit.accuracy", "min": 0.9}]}


@pytest.fixture()
def edited(edit_factory):
    return edit_factory.client, edit_factory.submit(audit={"attacks": [PGD]})


def test_gate_with_the_default_policy(edited):
    c, job = edited
    r = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] in {"pass", "warn", "fail"} and body["policy"] == {"name": "default", "version": "builtin"}
    metrics = {x["metric"] for x in body["rules"]}
    assert {"test.accuracy", "test.adv.pgd.accuracy", "edit.accuracy", "test.agreement"} <= metrics
    for row in body["rules"]:
        assert set(row) == {"rule", "metric", "baseline", "candidate", "delta", "threshold", "p_value", "outcome",
                            "reason", "n", "bound", "decision", "lenient", "undecided", "samples_needed"}
    drop_rows = [row for row in body["rules"] if row["metric"] in ("test.accuracy", "test.adv.pgd.accuracy")]
    for row in drop_rows:  # power in the open: n (450 less the 90 held out for locality), bound, threshold
        assert row["decision"] == "non_inferiority" and row["n"] == 360 and row["bound"] is not None
        assert row["threshold"] in (0.01, 0.03) and not row["lenient"]


def test_named_policies_are_versioned_per_tenant(edited):
    c, job = edited
    r = c.post("/policies", json={"name": "strict", "policy": FAILING})
    assert r.status_code == 201 and r.json()["version"] == 1
    assert c.post("/policies", json={"name": "strict", "policy": PASSING}).json()["version"] == 2
    assert c.get("/policies/strict").json()["policy"]["rules"][0]["metric"] == "edit.accuracy"
    assert c.get(f"/edits/{job['id']}/gate", params={"policy": "strict"}).json()["policy"]["version"] == 2
    c.headers.update(key_headers(c.settings, "default"))
    other = key_headers(c.settings, "team-b")
    assert_problem(c.get("/policies/strict", headers=other), 404)
    assert_problem(c.post("/gate", json={"edit_id": job["id"], "policy": "strict"}, headers=other), 404, "edit_id")
    assert "strict" in c.get("/policies").json()["policies"]


def test_inline_policy_and_errors(edited):
    c, job = edited
    assert c.post("/gate", json={"edit_id": job["id"], "policy": FAILING}).json()["verdict"] == "fail"
    assert c.post("/gate", json={"edit_id": job["id"], "policy": PASSING}).json()["verdict"] == "pass"
    assert_problem(c.post("/gate", json={"edit_id": job["id"], "policy": {"rules": [{"metric": "x"}]}}), 422)
    assert_problem(c.post("/gate", json={"edit_id": "nope", "policy": PASSING}), 404, "edit_id")
    queued = c.submit(run=False, audit={"attacks": [PGD]})
    body = assert_problem(c.post("/gate", json={"edit_id": queued["id"], "policy": PASSING}), 409, "edit_id")
    assert body["audit_status"] == "queued"


def test_promotion_refused_on_failing_gate_and_recorded_with_override(edited):
    c, job = edited
    edit = c.get(f"/edits/{job['id']}").json()
    r = c.post(f"/edits/{job['id']}/promote", json={"alias": "production", "policy": PASSING})
    assert_problem(r, 422, "policy")  # promotion only under a named policy: the promoter cannot write its rules
    c.post("/policies", json={"name": "fail-all", "policy": FAILING})
    c.post("/policies", json={"name": "edit-fixed", "policy": PASSING})
    r = c.post(f"/edits/{job['id']}/promote", json={"alias": "production", "policy": "fail-all"})
    body = assert_problem(r, 409, "edit_id")
    assert body["gate"]["verdict"] == "fail"
    assert_problem(c.get("/aliases/production"), 404)
    forged = {"alias": "production", "policy": "fail-all", "actor": "alice",
              "override_reason": "hotfix for incident 42, re-audit tomorrow"}
    assert_problem(c.post(f"/edits/{job['id']}/promote", json=forged), 422, "actor")  # the actor is the key's
    c.headers.update(key_headers(c.settings, "default"))  # once a key exists, every request needs one
    override = {k: v for k, v in forged.items() if k != "actor"}
    ci = key_headers(c.settings, "default", ["promote"], name="ci")  # may promote what passes, not override
    assert_problem(c.post(f"/edits/{job['id']}/promote", json=override, headers=ci), 403, "override_reason")
    alice = key_headers(c.settings, "default", ["admin"], name="alice")
    r = c.post(f"/edits/{job['id']}/promote", json=override, headers=alice)
    assert r.status_code == 200 and r.json()["outcome"] == "overridden"
    alias = c.get("/aliases/production").json()
    assert alias["model_id"] == edit["edited_model_id"] and alias["family"] == c.model["id"]
    assert [h["outcome"] for h in alias["history"]] == ["overridden", "refused"]
    assert alias["history"][0]["override_reason"].startswith("hotfix") and alias["history"][0]["actor"] == "alice"
    # an edit of the original model, audited against it, says nothing about replacing what production serves now
    stale = c.submit(audit={"attacks": [PGD]})
    body = assert_problem(c.post(f"/edits/{stale['id']}/promote", json={"alias": "production", "policy": "edit-fixed"}),
                          409, "edit_id")
    assert "audited against model" in body["detail"] and body["gate"]["verdict"] == "fail"
    # an edit of the model production serves, whose gate passes, moves the alias; the previous model is recorded
    job2 = c.submit(audit={"attacks": [PGD]}, model_id=edit["edited_model_id"])
    r = c.post(f"/edits/{job2['id']}/promote", json={"alias": "production", "policy": "edit-fixed"})
    assert r.json()["outcome"] == "promoted" and r.json()["previous_model_id"] == edit["edited_model_id"]
    assert len(c.get("/promotions").json()["promotions"]) == 4


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "editaudit.cli.main", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_cli_formats_policy_names_and_files(edited, http_url, tmp_path):
    c, job = edited
    r = cli("gate", job["id"], "--policy", "default", "--url", http_url)
    assert r.returncode in (0, 1) and "policy default" in r.stdout and "verdict:" in r.stdout
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text("version: 1\nrules:\n  - {metric: edit.accuracy, min: 0.9}\n"
                           "  - {metric: test.agreement, min: 1.0, severity: warn}\n")
    junit = tmp_path / "gate.xml"
    r = cli("gate", job["id"], "--policy", str(policy_file), "--format", "junit", "--output", str(junit),
            "--url", http_url)
    assert r.returncode == 0 and "PASS with warnings" in r.stdout, r.stdout + r.stderr
    from xml.etree import ElementTree as ET

    assert len(ET.parse(junit).getroot().findall("./testsuite/testcase")) == 2
    md = cli("gate", job["id"], "--policy", str(policy_file), "--format", "markdown", "--url", http_url)
    assert md.stdout.startswith("### editaudit gate") and md.returncode == 0
    assert cli("gate", job["id"], "--policy", "no-such-policy", "--url", http_url).returncode == 4
    policy_file.write_text("rules: []\n")
    assert cli("gate", job["id"], "--policy", str(policy_file), "--url", http_url).returncode == 4
    r = cli("gate", job["id"], "--policy", "default", "--min", "test.accuracy=0.9999", "--url", http_url)
    assert r.returncode == 1 and "BLOCKED" in r.stdout


def test_cli_wait_follows_a_running_audit(edited, http_url):
    c, _ = edited
    queued = c.submit(run=False, audit={"attacks": [PGD]})
    assert cli("gate", queued["id"], "--min", "edit.accuracy=0.9", "--url", http_url).returncode == 3
    proc = subprocess.Popen([sys.executable, "-m", "editaudit.cli.main", "gate", queued["id"], "--wait",
                             "--min", "edit.accuracy=0.9", "--url", http_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    assert proc.poll() is None, "still waiting while the edit is queued"
    run_edit_job(c.settings, queued["id"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "succeeded" in err and "PASS" in out


def test_cli_promote(edited, http_url):
    c, job = edited
    refused = cli("promote", job["id"], "--policy", "strict-fail", "--url", http_url)
    assert refused.returncode == 4, "unknown policy name is a usage error"
    c.post("/policies", json={"name": "strict-fail", "policy": FAILING})
    refused = cli("promote", job["id"], "--policy", "strict-fail", "--url", http_url)
    assert refused.returncode == 1 and "not promoted" in refused.stderr
    assert "verdict: BLOCKED" in refused.stderr and "test.accuracy" in refused.stderr, "the failing rules are shown"
    ok = cli("promote", job["id"], "--policy", "strict-fail", "--override-reason", "accepted risk, ticket 7",
             "--url", http_url)
    assert ok.returncode == 0 and ok.stdout.startswith("overridden: production -> model")
    back = cli("revert", job["id"], "--reason", "regression in prod", "--url", http_url)
    parent = c.get(f"/edits/{job['id']}").json()["model_id"]
    assert back.returncode == 0 and f"production -> {parent}" in back.stdout, back.stdout
    assert c.get("/aliases/production").json()["history"][0]["outcome"] == "reverted"
    assert cli("revert", "nope", "--url", http_url).returncode == 3, "unknown edit: exit 3 as for gate"
