"""Studies over the API: the grid expands into runs that are validated as edits before anything is stored (a bad run
is a 422 naming it, and nothing is written); the runs are ordinary edits, so one that fails leaves the others and the
summary standing; a cancel stops the runs still waiting; another tenant's study does not exist. The runs here are
executed by the real job code in this process; tests/integration/test_study_workers.py runs them on real workers."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from editaudit.contracts.studies import MAX_STUDY_RUNS
from editaudit.core import db
from editaudit.worker.jobs import run_edit_job
from tests.conftest import key_headers, unscoped

AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 3}],
         "corruptions": {"names": ["gaussian_noise"], "severities": [2]}, "max_samples": 120}
# finetune at lr 10 with the trust region off explodes (NaN): a run that fails in the worker, not at the door
EXPLODE = {"lr": [10.0], "steps": [50], "optimizer": ["sgd"], "max_locality_change": [1.0]}


def study_body(f, **grid) -> dict:
    return {"model_id": f.model["id"], "edit_set": f.dataset["id"], "test_set": "builtin:digits-test",
            "audit": AUDIT, "grid": {"methods": ["finetune_layer"], "layers": ["fc"], "seeds": [0, 1], **grid}}


def counts(c) -> tuple[int, int]:
    with unscoped(c.services.sessions)() as s:
        return (s.scalar(select(func.count()).select_from(db.Study)),
                s.scalar(select(func.count()).select_from(db.Edit)))


def run_all(c, study: dict) -> None:
    for run in study["runs"]:
        run_edit_job(c.settings, run["edit_id"])


def test_the_grid_expands_into_runs_that_are_ordinary_edits(edit_factory):
    f = edit_factory
    c = f.client
    r = c.post("/studies", json=study_body(f, methods=["finetune_layer", "low_rank"],
                                           hyperparams={"low_rank": {"rank": [1, 2]}}))
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/studies/{r.json()['id']}"
    runs = r.json()["runs"]
    # finetune_layer: 2 seeds, each with its 1-LI run; low_rank: 2 ranks x 2 seeds, each with its 1-LI run
    assert len(runs) == 2 * 2 + 2 * 2 * 2
    assert [x["index"] for x in runs] == list(range(len(runs)))
    groups = {x["group"] for x in runs}
    assert {"finetune_layer fc", "low_rank fc rank=1", "low_rank fc rank=2",
            "interpolate fc base=low_rank rank=2"} <= groups
    edit = c.get(f"/edits/{runs[0]['edit_id']}").json()
    assert edit["status"] == "queued" and edit["study_id"] == r.json()["id"]
    assert edit["hyperparams"]["seed"] == 0 and edit["hyperparams"]["lr"] > 0, "stored with its defaults"
    assert c.get(f"/audits/{runs[1]['audit_id']}").json()["config"]["seed"] == runs[1]["seed"]
    study = c.get(f"/studies/{r.json()['id']}").json()
    assert study["status"] == "running" and study["counts"] == {"queued": len(runs)}


@pytest.mark.parametrize(("grid", "field", "words"), [
    ({"methods": ["finetune_layer", "low_rank"], "hyperparams": {"low_rank": {"rank": [1, 999]}}},
     "grid.runs.8.hyperparams.rank", "rank 999"),
    ({"layers": ["fc", "nope"]}, "grid.runs.4.layers.0", "nope"),
    ({"hyperparams": {"finetune_layer": {"lr": [0.01, -1]}}}, "grid.runs.4.hyperparams.lr", "greater than"),
    ({"hyperparams": {"finetune_layer": {"no_such_param": [1]}}}, "grid.runs.0.hyperparams.no_such_param", "Extra"),
    ({"methods": ["no_such_method"]}, "grid.methods", "unknown edit methods"),
    ({"hyperparams": {"low_rank": {"rank": [1]}}}, "grid", "not in methods"),
    ({"seeds": [0, 0]}, "grid.seeds", "distinct"),
    ({"layers": [f"l{i}" for i in range(30)], "methods": ["finetune_layer", "low_rank", "rewrite"],
      "seeds": list(range(10))}, "grid", str(MAX_STUDY_RUNS)),
])
def test_a_bad_run_is_a_422_naming_it_before_anything_is_stored(edit_factory, grid, field, words):
    f = edit_factory
    before = counts(f.client)
    r = f.client.post("/studies", json=study_body(f, **grid))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert any(e["field"] == field for e in problem["errors"]), problem
    assert words in problem["detail"], problem
    assert counts(f.client) == before, "no study or run row was written"


def test_an_unknown_policy_or_model_is_refused_at_the_door(edit_factory):
    f = edit_factory
    r = f.client.post("/studies", json={**study_body(f), "policy": "no-such-policy"})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "policy"
    r = f.client.post("/studies", json={**study_body(f), "model_id": "nope"})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "model_id"


def test_one_failed_run_leaves_the_study_and_its_summary_standing(edit_factory):
    f = edit_factory
    c = f.client
    job = c.post("/studies", json=study_body(f, methods=["finetune", "finetune_layer"], seeds=[0, 1, 2],
                                             hyperparams={"finetune": EXPLODE})).json()
    run_all(c, job)
    study = c.get(f"/studies/{job['id']}").json()
    assert study["status"] == "succeeded", study["counts"]
    assert study["counts"] == {"failed": 3, "succeeded": 6}
    summary = study["summary"]
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    assert len(failed) == 3 and all(r["error"] for r in failed), "failed runs are listed with their reason"
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["finetune_layer fc"]["n_succeeded"] == 3
    assert all(r["verdict"] in ("pass", "warn", "fail") for r in summary["runs"] if r["status"] == "succeeded")
    curve = next(a for a in summary["alpha_curves"] if a["group"].startswith("interpolate"))
    assert len(curve["points"]) >= 5, "the 1-LI runs' alpha path: test, robust and edit accuracy along alpha"
    assert [f_["id"] for f_ in summary["findings"]] == ["reduces_robustness", "method_and_layer",
                                                        "constrained_better", "interpolation_tradeoff"]
    md = c.get(f"/studies/{job['id']}/report.md")
    assert md.status_code == 200 and "finetune_layer fc" in md.text
    html = c.get(f"/studies/{job['id']}/report.html").text
    assert "data:image/png;base64," in html and "https://" not in html
    assert c.get(f"/studies/{job['id']}/report.json").json()["schema"] == "editaudit/study-report"
    assert c.get(f"/studies/{job['id']}/report.pdf").status_code == 404


def test_cancel_stops_the_waiting_runs_and_keeps_the_finished(edit_factory):
    f = edit_factory
    c = f.client
    job = c.post("/studies", json=study_body(f, interpolate=False)).json()
    run_edit_job(c.settings, job["runs"][0]["edit_id"])
    r = c.post(f"/studies/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    study = r.json()
    assert study["status"] == "canceled" and study["counts"] == {"succeeded": 1, "canceled": 1}
    run_edit_job(c.settings, job["runs"][1]["edit_id"])  # its message arrives after the cancel: it never starts
    assert c.get(f"/edits/{job['runs'][1]['edit_id']}").json()["status"] == "canceled"
    assert c.post(f"/studies/{job['id']}/cancel").status_code == 409


def test_another_tenants_study_does_not_exist(edit_factory):
    f = edit_factory
    c = f.client
    job = c.post("/studies", json=study_body(f)).json()  # anonymous (the default tenant) while no key exists
    other = key_headers(c.settings, "tenant-b")
    for method, path in [("get", f"/studies/{job['id']}"), ("get", f"/studies/{job['id']}/report.md"),
                         ("post", f"/studies/{job['id']}/cancel")]:
        r = getattr(c, method)(path, headers=other)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["errors"][0]["field"] == "study_id"
    assert c.get("/studies", headers=other).json()["items"] == []
    # nor can tenant-b start a study on the first tenant's model
    r = c.post("/studies", json=study_body(f), headers=other)
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "model_id"


def test_values_that_coincide_once_validated_are_one_run_not_two_seeds(edit_factory):
    f = edit_factory
    r = f.client.post("/studies", json=study_body(f, methods=["low_rank"], hyperparams={"low_rank": {"rank": [1, "1"]}},
                                                  seeds=[0]))
    assert r.status_code == 422, r.text
    assert "same edit as run 0" in r.json()["detail"] and r.json()["errors"][0]["field"].startswith("grid.runs.2")


def test_layer_depth_follows_the_models_module_order(edit_factory):
    """The manifest stores state_dict keys sorted; depth must come from the model's order (fc is the last layer)."""
    f = edit_factory
    job = f.client.post("/studies", json=study_body(f, layers=["features.0", "fc1", "fc"], interpolate=False,
                                                    seeds=[0])).json()
    depth = {g["layers"][0]: g["depth"] for g in f.client.get(f"/studies/{job['id']}").json()["summary"]["groups"]}
    assert depth["features.0"] == 0.0 and depth["fc"] == 1.0 and 0 < depth["fc1"] < 1, depth


def test_the_policy_is_pinned_when_the_study_is_submitted(edit_factory):
    """A later version of a named policy does not change the verdicts of a study that already ran."""
    f = edit_factory
    c = f.client
    assert c.post("/policies", json={"name": "team", "policy": {"rules": [
        {"metric": "edit.accuracy", "min": 0.0}]}}).status_code == 201
    job = c.post("/studies", json={**study_body(f, seeds=[0], interpolate=False), "policy": "team"}).json()
    run_all(c, job)
    before = c.get(f"/studies/{job['id']}").json()["summary"]["policy"]
    assert c.post("/policies", json={"name": "team", "policy": {"rules": [
        {"metric": "edit.accuracy", "min": 1.1}]}}).json()["version"] == 2
    after = c.get(f"/studies/{job['id']}").json()
    assert after["summary"]["policy"] == before and before["recommended"] == "finetune_layer fc"
    assert after["request"]["pinned_policy"]["ref"]["version"] == 1 and before["name"] == "team v1"


def test_a_queue_outage_fails_every_run_so_a_retry_is_the_one_study_that_runs(edit_factory, monkeypatch):
    f = edit_factory
    c = f.client
    sent = []

    def enqueue(task, edit_id):
        if sent:
            raise ConnectionError("broker down")
        sent.append(edit_id)

    monkeypatch.setattr(c.services, "enqueue", enqueue)
    r = c.post("/studies", json=study_body(f), headers={"Idempotency-Key": "k1"})
    assert r.status_code == 503 and r.json()["study_id"], r.text
    study = c.get(f"/studies/{r.json()['study_id']}").json()
    assert study["status"] == "failed" and study["counts"] == {"failed": 4}, "the sent run failed too"
    run_edit_job(c.settings, sent[0])  # its message is delivered: it finds the run failed and runs nothing
    assert c.get(f"/studies/{r.json()['study_id']}").json()["counts"] == {"failed": 4}


def test_cancelling_a_finished_study_is_a_409_and_changes_nothing(edit_factory):
    f = edit_factory
    c = f.client
    job = c.post("/studies", json=study_body(f, seeds=[0], interpolate=False)).json()
    run_all(c, job)
    r = c.post(f"/studies/{job['id']}/cancel")
    assert r.status_code == 409 and "nothing to cancel" in r.json()["detail"]
    assert c.get(f"/studies/{job['id']}").json()["status"] == "succeeded"
