"""Reports attacked as a hostile caller would (the real app, a real edit, its real per-sample files): varying the
query string or Host header cannot grow the report cache (each miss redraws plots and re-reads the per-sample file);
a key without gate:read gets the numbers but never a verdict (as GET /edits/{id}/gate refuses it); an unknown
policy is a 404 on every audit, a layer sweep's too; a CI key holding gate:read alone still gets the gate's HTML
page with its exit code; a spec of huge class names does not make a huge page."""

from __future__ import annotations

import json

from editaudit.service.services import reports
from tests.conftest import SPEC, key_headers
from tests.integration.test_api_errors import assert_problem
from tests.integration.test_cli_verbs import editaudit

PGD = {"name": "pgd", "eps": 0.05, "steps": 10}


def test_the_cache_does_not_follow_the_request(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(audit={"attacks": [PGD], "max_samples": 100})
    url = f"/audits/{job['audit_id']}/report"
    assert c.get(f"{url}.html").status_code == 200 and c.get(f"{url}.md").status_code == 200
    kept = set(reports._cache)
    for i in range(5):
        for fmt in ("md", "html", "json"):
            r = c.get(f"{url}.{fmt}", params={"x": str(i)}, headers={"Host": f"evil{i}.example"})
            assert r.status_code == 200
    assert set(reports._cache) == kept, "no request detail makes a new entry"
    md = c.get(f"{url}.md", headers={"Host": "ci.example"}).text
    assert md.rstrip().endswith(f"(http://ci.example/audits/{job['audit_id']}/report.html?policy=default)"), \
        "the link names the report under the same policy, and nothing else of the request"


def test_a_key_without_gate_read_sees_no_verdict(edit_factory):
    c = edit_factory.client
    admin = key_headers(c.settings, "default", name="admin")
    reader = key_headers(c.settings, "default", scopes=("audits:read",), name="reader")
    c.headers.update(admin)
    job = edit_factory.submit(audit={"attacks": [PGD], "max_samples": 100})
    assert_problem(c.get(f"/edits/{job['id']}/gate", headers=reader), 403)
    body = c.get(f"/audits/{job['audit_id']}/report.json", headers=reader).json()
    assert body["gate"]["verdict"] is None and "gate:read" in body["gate"]["why"]
    page = c.get(f"/audits/{job['audit_id']}/report.html", headers=reader).text
    assert 'data-verdict="none"' in page and "Gate rules" not in page
    assert c.get(f"/audits/{job['audit_id']}/report.json", headers=admin).json()["gate"]["verdict"] in (
        "pass", "warn", "fail")
    c.headers.pop("Authorization")  # as a browser: the console's cookie only
    c.cookies.set("editaudit_console", reader["Authorization"].split(" ", 1)[1])
    page = c.get(f"/console/edits/{job['id']}", follow_redirects=False)
    assert page.status_code == 200 and "lacks the gate:read scope" in page.text


def test_an_unknown_policy_is_a_404_even_for_a_sweep(edit_factory):
    c = edit_factory.client
    sweep = edit_factory.submit(layers=["fc1", "fc"], sweep=True, audit={"attacks": [PGD], "max_samples": 60})
    plain = edit_factory.submit(audit={"attacks": [PGD], "max_samples": 60})
    for job in (sweep, plain):
        for fmt in ("md", "html", "json"):
            assert_problem(c.get(f"/audits/{job['audit_id']}/report.{fmt}", params={"policy": "nope"}), 404, "policy")
    page = c.get(f"/audits/{sweep['audit_id']}/report.html").text
    assert 'data-verdict="none"' in page and "gated per layer" in page


def test_the_gate_page_with_a_gate_only_key_keeps_its_exit_code(edit_factory, http_url, tmp_path):
    c = edit_factory.client
    c.headers.update(key_headers(c.settings, "default", name="admin"))
    job = edit_factory.submit(audit={"attacks": [PGD], "max_samples": 100})
    ci = key_headers(c.settings, "default", scopes=("gate:read",), name="ci")["Authorization"].split(" ", 1)[1]
    ref = editaudit("--url", http_url, "gate", job["id"], "--policy", "default", "--format", "markdown", key=ci)
    out = tmp_path / "gate.html"
    r = editaudit("--url", http_url, "gate", job["id"], "--policy", "default", "-o", str(out), key=ci)
    assert r.returncode == ref.returncode in (0, 1), r.stdout + r.stderr
    page = out.read_text()
    assert "data-verdict=" in page and "What changed" not in page, "no audits:read: the verdict, not the numbers"
    assert f"/audits/{job['audit_id']}/report.html?policy=default" in page
    inline = tmp_path / "p.yaml"
    inline.write_text("rules: [{metric: edit.accuracy, min: 0.5}]\n")
    r = editaudit("--url", http_url, "gate", job["id"], "--policy", str(inline), "-o", str(out), key=ci)
    assert r.returncode in (0, 1) and "/report.html" not in out.read_text(), \
        "an inline policy's page does not link a report that would show another policy's verdict"


def test_huge_class_names_do_not_make_a_huge_page(api_client, digits_model, failures_npz):
    c = api_client
    spec = {**SPEC, "class_names": [f"{i}" + "x" * 100_000 for i in range(SPEC["num_classes"])]}
    model = c.post("/models", files={"weights": ("m.safetensors", digits_model[0])},
                   data={"spec": json.dumps(spec)})
    assert model.status_code == 201, model.text  # a 1 MB spec is within the limits
    from editaudit.worker.jobs import run_edit_job

    ds = c.post("/datasets", files={"file": ("f.npz", failures_npz)}).json()
    job = c.post("/edits", json={"model_id": model.json()["id"], "method": "finetune_layer", "layers": ["fc"],
                                 "edit_set": ds["id"], "test_set": "builtin:digits-test",
                                 "audit": {"attacks": [PGD], "max_samples": 100}}).json()
    run_edit_job(c.settings, job["id"])
    page = c.get(f"/audits/{job['audit_id']}/report.html").text
    assert len(page) < 3_000_000, len(page)
    assert "x" * 60 not in page and "0" + "x" * 58 + "…" in page, "names are cut, with a mark"
