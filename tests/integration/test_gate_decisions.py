"""The gate cannot be talked into passing (over HTTP and the CLI, with audits really measured by the job code):
a small audit cannot pass a real robustness drop, a weak attack cannot satisfy a policy that requires a strong
one, a submitter cannot claim a profile, a typo is a usage error rather than a pass or a block, and an unchanged
candidate on enough samples does pass."""

from __future__ import annotations

import pytest

from editaudit.contracts.formats import DatasetArrays, dataset_to_npz
from editaudit.gate.policy import builtin_policy
from tests.conftest import key_headers
from tests.integration.test_api_errors import assert_problem
from tests.integration.test_gate_api import cli

# measured here: this edit costs ~17 points of robust accuracy on 30 audited samples (9 lost, 4 gained: McNemar
# p = 0.27, so "only significant drops count" lets it through), 10 points of clean accuracy (p = 0.38)
SMALL_AUDIT_EDIT = {"method": "finetune_layer", "layers": ["fc"],
                    "hyperparams": {"lr": 0.003, "steps": 30, "stop_when_fixed": False, "locality_weight": 0},
                    "audit": {"attacks": [{"name": "pgd", "eps": 0.05, "steps": 10}], "max_samples": 30, "seed": 3}}
PGD10 = {"name": "pgd", "norm": "inf", "min_eps": 0.03, "min_steps": 10}
REQUIRES_PGD10 = {"version": 1, "requires": {"attacks": [PGD10], "min_samples": {"test": 350}},
                  "rules": [{"attack": PGD10, "max_drop": 0.03}, {"metric": "edit.accuracy", "min": 0.9}]}


def legacy_default() -> dict:
    """The default policy as it was: every drop rule decided by significance (p < 0.05), and no collapse rule (this
    edit also pushes wrong answers into one class, which the current default blocks on its own)."""
    doc = builtin_policy("default").model_dump(mode="json", exclude_none=True)
    doc["rules"] = [r for r in doc["rules"] if r.get("metric") != "test.collapse"]
    for rule in doc["rules"]:
        if "max_drop" in rule:
            rule.update(decision="significant_drop")
    return doc


def test_a_small_audit_cannot_pass_a_real_robustness_drop(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(**SMALL_AUDIT_EDIT)
    audit = c.get(f"/audits/{job['audit_id']}").json()
    d = audit["deltas"]["test.adv.pgd.accuracy"]
    assert d["n"] == 30 and -0.25 <= d["value"] <= -0.08 and d["p_value"] >= 0.05, d  # a real drop, not significant
    legacy = c.post("/gate", json={"edit_id": job["id"], "policy": legacy_default()}).json()
    assert legacy["verdict"] != "fail", "the old default passed it"
    assert all(r["lenient"] for r in legacy["rules"] if r["decision"] == "significant_drop")
    assert any("lenient" in n for n in legacy["notes"])
    gate = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"}).json()
    assert gate["verdict"] == "fail"
    adv = next(r for r in gate["rules"] if r["metric"] == "test.adv.pgd.accuracy")
    assert adv["outcome"] == "fail" and adv["decision"] == "non_inferiority" and adv["n"] == 30
    assert adv["bound"] > adv["threshold"] == 0.03 and "upper bound" in adv["reason"]


def test_an_unchanged_candidate_needs_enough_samples_and_then_passes(edit_factory, digits_model):
    """Interpolation at alpha = 0 leaves every weight as it was: on the 360 images the audit scores (90 of the 450
    are held out for the base edit's locality term) the default policy can show every drop is within its margin; on
    30 samples it cannot, and says how many samples would."""
    import torch

    from editaudit.worker.ml.data import digits_arrays

    c = edit_factory.client
    tr, net = digits_arrays("train"), digits_model[2]
    with torch.no_grad():
        right = (net(torch.from_numpy(tr.x)).argmax(1) == torch.from_numpy(tr.y)).nonzero().flatten()[:16].numpy()
    kept = c.post("/datasets", files={"file": ("kept.npz", dataset_to_npz(DatasetArrays(x=tr.x[right],
                                                                                         y=tr.y[right])))}).json()
    body = {"method": "interpolate", "layers": ["fc"], "edit_set": kept["id"],
            "hyperparams": {"alpha": {"mode": "fixed", "alpha": 0.0}}}
    attacks = [{"name": "pgd", "eps": 0.05, "steps": 10}]
    full = edit_factory.submit(**body, audit={"attacks": attacks})
    assert c.get(f"/edits/{full['id']}").json()["info"]["changed_keys"] == []
    gate = c.get(f"/edits/{full['id']}/gate", params={"policy": "default"}).json()
    assert gate["verdict"] == "pass", gate
    assert {r["metric"]: r["n"] for r in gate["rules"] if r["decision"] == "non_inferiority"} == {
        "test.accuracy": 360, "test.adv.pgd.accuracy": 360}
    small = edit_factory.submit(**body, audit={"attacks": attacks, "max_samples": 30})
    gate = c.get(f"/edits/{small['id']}/gate", params={"policy": "default"}).json()
    assert gate["verdict"] == "fail"
    clean = next(r for r in gate["rules"] if r["metric"] == "test.accuracy")
    assert clean["undecided"] and clean["samples_needed"] == 268 and "268 samples" in clean["reason"]
    assert any("undecided" in n and "test.accuracy" in n for n in gate["notes"])


def test_a_weak_attack_cannot_satisfy_a_policy_that_requires_pgd10(edit_factory):
    c = edit_factory.client
    for weak in ({"name": "pgd", "eps": 0.05, "steps": 1}, {"name": "pgd", "eps": 0.001, "steps": 10},
                 {"name": "fgsm", "eps": 0.05}):
        job = edit_factory.submit(audit={"attacks": [weak]})
        gate = c.post("/gate", json={"edit_id": job["id"], "policy": REQUIRES_PGD10}).json()
        assert gate["verdict"] == "fail", weak
        req = next(r for r in gate["rules"] if r["rule"].startswith("requires attack"))
        assert req["outcome"] == "fail" and "eps>=0.03" in req["rule"] and "no attack of the audit" in req["reason"]
        sel = next(r for r in gate["rules"] if r["rule"].startswith("max_drop"))
        assert sel["outcome"] == "fail" and "missing" in sel["reason"], "the selector matches no attack: fail-closed"
        default = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"}).json()
        assert default["verdict"] == "fail" and default["rules"][0]["rule"].startswith("requires attack pgd")
        assert default["rules"][0]["outcome"] == "fail", "the default refuses a one-step or near-zero attack too"
    strong = edit_factory.submit(audit={"attacks": [{"id": "whatever", "name": "pgd", "eps": 0.03, "steps": 10}]})
    gate = c.post("/gate", json={"edit_id": strong["id"], "policy": REQUIRES_PGD10}).json()
    rows = {r["rule"].split(" (")[0]: r for r in gate["rules"]}
    assert all(r["outcome"] == "pass" for r in gate["rules"] if r["decision"] == "requirement"), gate
    assert rows["max_drop 0.03"]["metric"] == "test.adv.whatever.accuracy", "selected by parameters, not by id"


def test_eps_zero_is_refused(edit_factory):
    c = edit_factory.client
    body = {"model_id": edit_factory.model["id"], "method": "finetune_layer", "layers": ["fc"],
            "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test",
            "audit": {"attacks": [{"name": "pgd", "eps": 0}]}}
    assert_problem(c.post("/edits", json=body), 422, "audit.attacks.0.pgd.eps")


def test_audit_profiles_are_the_servers_not_the_submitters(edit_factory):
    c = edit_factory.client
    release = {"attacks": [{"name": "pgd", "eps": 0.03, "steps": 10}], "max_samples": 64}
    r = c.post("/audit-profiles", json={"name": "release", "audit": release})
    assert r.status_code == 201 and r.json()["version"] == 1 and r.json()["audit"]["attacks"][0]["steps"] == 10
    assert c.post("/audit-profiles", json={"name": "release", "audit": {**release, "max_samples": 128}}
                  ).json()["version"] == 2
    assert c.get("/audit-profiles/release", params={"version": 1}).json()["audit"]["max_samples"] == 64
    assert c.get("/audit-profiles").json()["profiles"] == ["release"]
    c.headers.update(key_headers(c.settings, "default"))
    team_b = key_headers(c.settings, "team-b")
    assert_problem(c.get("/audit-profiles/release", headers=team_b), 404)
    policy = {"version": 1, "requires": {"profile": {"name": "release", "min_version": 2}},
              "rules": [{"metric": "edit.accuracy", "min": 0.5}]}

    by_profile = edit_factory.submit(audit={"profile": "release"})
    audit = c.get(f"/audits/{by_profile['audit_id']}").json()
    assert audit["profile"]["name"] == "release" and audit["profile"]["version"] == 2
    assert audit["config"]["max_samples"] == 128 and audit["samples"]["test"]["n"] == 128
    assert c.post("/gate", json={"edit_id": by_profile["id"], "policy": policy}).json()["verdict"] == "pass"

    copied = edit_factory.submit(audit={**release, "max_samples": 128})  # the same config, spelled out
    gate = c.post("/gate", json={"edit_id": copied["id"], "policy": policy}).json()
    assert gate["verdict"] == "fail" and "no server-side profile" in gate["rules"][0]["reason"]
    old = edit_factory.submit(audit={"profile": "release", "version": 1})
    assert c.post("/gate", json={"edit_id": old["id"], "policy": policy}).json()["verdict"] == "fail"

    body = {"model_id": edit_factory.model["id"], "method": "finetune_layer", "layers": ["fc"],
            "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test"}
    assert_problem(c.post("/edits", json={**body, "audit": {"profile": "nightly"}}), 404, "audit.profile")
    assert_problem(c.post("/edits", json={**body, "audit": {"profile": "release", "attacks": []}}), 422,
                   "audit.attacks")
    assert_problem(c.post("/edits", json={**body, "audit": {"profile": "release"}},
                          headers=team_b), 404, "model_id")  # its model is not team-b's either


def test_cli_typos_are_usage_errors_with_suggestions(edit_factory, http_url):
    job = edit_factory.submit(audit={"attacks": [{"name": "pgd", "eps": 0.05, "steps": 2}]})
    r = cli("gate", job["id"], "--max-drop", "test.acc=0.01", "--url", http_url)
    assert r.returncode == 4 and "did you mean test.accuracy" in r.stderr, r.stderr
    r = cli("gate", job["id"], "--max-drop", "test.adv.pdg.accuracy=0.01", "--url", http_url)
    assert r.returncode == 4 and "test.adv.pgd.accuracy" in r.stderr, r.stderr
    r = cli("gate", job["id"], "--min", "generalization.accuracy=0.5", "--url", http_url)
    assert r.returncode == 1 and "missing" in r.stdout, "well-formed but absent from this audit: blocked"
    r = cli("gate", job["id"], "--max-drop", "test.accuracy=0.01", "--format", "markdown", "--url", http_url)
    assert "| n | bound | threshold |" in r.stdout and "360" in r.stdout


@pytest.mark.parametrize("doc, field", [
    ({"rules": [{"metric": "test.accuracy", "max_drop": 0.01, "decision": "non_inferiority",
                 "require_significance": 0.05}]}, "policy"),
    ({"rules": [{"max_drop": 0.01}]}, "policy.rules.0"),
    ({"rules": [{"metric": "test.accurcy", "max_drop": 0.01}]}, "policy.rules.0.metric"),
    ({"requires": {"attacks": [{"name": "pgd", "min_eps": 0}]}, "rules": [{"metric": "edit.accuracy", "min": 0}]},
     "policy.requires.attacks.0.min_eps"),
])
def test_bad_policies_are_refused_naming_the_field(edit_factory, doc, field):
    job = edit_factory.submit(run=False)
    body = assert_problem(edit_factory.client.post("/gate", json={"edit_id": job["id"], "policy": doc}), 422)
    assert any(e["field"].startswith(field) for e in body["errors"]), body


def test_builtin_policy_names_are_reserved(edit_factory):
    c = edit_factory.client
    body = assert_problem(c.post("/policies", json={"name": "default", "policy": {"rules": [
        {"metric": "test.accuracy", "min": 0}]}}), 409, "name")
    assert "built-in" in body["detail"]
    assert c.get("/policies/default").json()["version"] == "builtin"


def test_a_file_named_like_a_server_policy_does_not_replace_it(edit_factory, http_url, tmp_path):
    job = edit_factory.submit(audit={"attacks": [{"name": "pgd", "eps": 0.05, "steps": 2}]})
    (tmp_path / "default").write_text("version: 1\nrules: [{metric: test.accuracy, min: 0}]\n")
    r = cli("gate", job["id"], "--policy", "default", "--url", http_url, cwd=tmp_path)
    assert r.returncode == 1 and "policy default" in r.stdout, "the server's default (PGD-2 is refused), not the file"
    assert cli("gate", job["id"], "--policy", "./missing.yaml", "--url", http_url).returncode == 4


def test_a_default_gradient_edit_never_scores_its_own_locality_images(edit_factory):
    """The locality term's images come out of the test split and the audit scores only the rest, so an edit cannot
    flatter its own test numbers; a policy demanding the whole test split sees the hold-out and fails."""
    c = edit_factory.client
    job = edit_factory.submit(method="finetune_layer", layers=["fc"], audit={"attacks": []})
    edit, audit = c.get(f"/edits/{job['id']}").json(), c.get(f"/audits/{job['audit_id']}").json()
    row = audit["samples"]["test"]
    held = row["held_out"]
    assert (row["n"], row["of"], held["n"], held["for"]) == (360, 450, 90, ["locality"]), row
    assert not set(row["ids"]) & set(held["ids"]) and len(set(row["ids"]) | set(held["ids"])) == 450
    # recorded either way; whether 30 default steps fix all 16 depends on the platform's float kernels (this
    # fixture's set is fixed on some machines and left one example short on others), which is not this test's point
    assert edit["info"]["locality"] == 90 and "edit_set_fixed" in edit["info"], edit["info"]
    policy = {"version": 1, "requires": {"full_splits": ["test"]}, "rules": [{"metric": "edit.accuracy", "min": 0.9}]}
    gate = c.post("/gate", json={"edit_id": job["id"], "policy": policy}).json()
    assert gate.get("verdict") == "fail" and any("360 of 450" in str(r) for r in gate["rules"]), gate
    named = edit_factory.submit(method="finetune_layer", layers=["fc"], audit={"attacks": []},
                                hyperparams={"locality_set": "builtin:digits-train"})
    row = c.get(f"/audits/{named['audit_id']}").json()["samples"]["test"]
    assert (row["n"], row["of"], row["held_out"]) == (450, 450, None), row
