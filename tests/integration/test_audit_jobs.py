"""Audit features end to end through the job code: baseline cache, cancellation, eps sweeps, corruptions, reports."""

from __future__ import annotations

import threading
import time
from xml.etree import ElementTree as ET

from tests.conftest import unscoped
from tests.integration.test_api_errors import assert_problem

PGD = {"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 5, "step_size": 0.02}


def test_baseline_is_cached_and_reused(edit_factory):
    c = edit_factory.client
    audit_cfg = {"attacks": [PGD], "max_samples": 120}
    first = c.get(f"/audits/{edit_factory.submit(audit=audit_cfg)['audit_id']}").json()
    second_job = edit_factory.submit(audit=audit_cfg, hyperparams={"steps": 10})
    second = c.get(f"/audits/{second_job['audit_id']}").json()
    assert first["baseline_cached"] is False and second["baseline_cached"] is True
    assert first["metrics"]["baseline"] == second["metrics"]["baseline"]
    assert not any(k.startswith("baseline.") for k in second["durations_s"]), "the baseline was not re-evaluated"
    assert second["samples"]["test"]["n"] == 120 and len(second["samples"]["test"]["ids"]) == 120
    third = edit_factory.submit(audit={**audit_cfg, "seed": 1})  # another config: another cache entry
    assert c.get(f"/audits/{third['audit_id']}").json()["baseline_cached"] is False


def test_the_baseline_cache_is_each_tenants_own(api_client, digits_model, failures_npz):
    """Two tenants audit the same model on the same data with the same config: B's first audit computes its own
    baseline (`baseline_cached: false`), so the flag never tells B that A audited that model; each tenant's second
    audit reuses its own entry, and the rewrite memo is keyed the same way."""
    import json

    from editaudit.worker.jobs import run_edit_job
    from tests.conftest import SPEC, key_headers

    c = api_client
    audit = {"attacks": [PGD], "max_samples": 64}

    def audit_of(headers: dict, model_id: str, dataset_id: str) -> dict:
        job = c.post("/edits", headers=headers, json={
            "model_id": model_id, "method": "finetune_layer", "layers": ["fc"], "edit_set": dataset_id,
            "test_set": "builtin:digits-test", "audit": audit}).json()
        run_edit_job(c.settings, job["id"])
        return c.get(f"/audits/{job['audit_id']}", headers=headers).json()

    tenants = {}
    for tenant in ("team-a", "team-b"):
        h = key_headers(c.settings, tenant)
        model = c.post("/models", headers=h, files={"weights": ("m.safetensors", digits_model[0])},
                       data={"spec": json.dumps(SPEC)}).json()
        ds = c.post("/datasets", headers=h, files={"file": ("f.npz", failures_npz)}).json()
        tenants[tenant] = (h, model["id"], ds["id"])
    a_first, a_second = (audit_of(*tenants["team-a"]) for _ in range(2))
    b_first, b_second = (audit_of(*tenants["team-b"]) for _ in range(2))
    assert (a_first["baseline_cached"], a_second["baseline_cached"]) == (False, True)
    assert (b_first["baseline_cached"], b_second["baseline_cached"]) == (False, True), "B never sees A's entry"
    assert b_first["metrics"]["baseline"] == a_first["metrics"]["baseline"], "the same numbers, computed again"


def test_cancel_a_queued_edit(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, audit={"attacks": [PGD]})
    r = c.post(f"/edits/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    from editaudit.worker.jobs import run_edit_job

    run_edit_job(c.settings, job["id"])  # the message still arrives: nothing happens
    assert c.get(f"/edits/{job['id']}").json()["status"] == "canceled"
    assert_problem(c.post(f"/edits/{job['id']}/cancel"), 409)
    assert c.get(f"/audits/{job['audit_id']}").json()["status"] == "canceled"


def test_cancel_a_running_edit_stops_between_batches(edit_factory):
    from editaudit.worker.jobs import run_edit_job

    c = edit_factory.client
    job = edit_factory.submit(run=False, audit={"attacks": [{**PGD, "steps": 400}], "batch_size": 16})
    worker = threading.Thread(target=run_edit_job, args=(c.settings, job["id"]))
    worker.start()
    deadline = time.monotonic() + 60
    while (e := c.get(f"/edits/{job['id']}").json())["progress"]["stage"] != "auditing":
        assert time.monotonic() < deadline, e
        time.sleep(0.1)
    assert c.post(f"/edits/{job['id']}/cancel").status_code == 200
    worker.join(timeout=60)
    assert not worker.is_alive(), "the job stops soon after the cancel"
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["status"] == "canceled" and edit["edited_model_id"] is None
    assert edit["progress"]["done"] < edit["progress"]["total"]


def test_eps_sweep_curves_and_reports(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(audit={"attacks": [{**PGD, "eps_sweep": [0.0, 0.1, 0.2]},
                                                 {"id": "aa", "name": "autoattack", "eps": 0.05, "square_queries": 20}],
                                     "max_samples": 100,
                                     "corruptions": {"names": ["shot_noise", "pixelate"]}})
    audit = c.get(f"/audits/{job['audit_id']}").json()
    curve = audit["curves"]["test.adv.pgd"]
    assert curve["eps"] == [0.0, 0.05, 0.1, 0.2]
    assert curve["baseline"][0] == audit["metrics"]["baseline"]["test.accuracy"]  # eps 0 = clean accuracy
    assert curve["baseline"][-1] <= curve["baseline"][0] and curve["candidate"][-1] <= curve["candidate"][0]

    rep = c.get(f"/audits/{job['audit_id']}/report.json")
    assert rep.status_code == 200 and rep.json()["schema_version"] == 1 and rep.json()["audit"]["id"] == audit["id"]
    md = c.get(f"/audits/{job['audit_id']}/report.md").text
    lines = md.splitlines()
    assert lines[0].startswith("### ") and "editaudit: **" in lines[0] and "policy `default (built-in)`" in lines[0], \
        "a CI comment leads with the gate's verdict"
    assert "| clean accuracy (test) | " in md and "| robust accuracy: aa (test) |" in md and len(lines) < 40
    assert "Attacks: " in md and "autoattack" in md
    assert lines[-1].endswith(f"/audits/{audit['id']}/report.html?policy=default)") or \
        lines[-1].endswith(f"/audits/{audit['id']}/report.html)"), "it links the full report"
    assert 0 <= audit["metrics"]["candidate"]["test.adv.aa.accuracy"] <= audit["metrics"]["candidate"]["test.accuracy"]
    page = c.get(f"/audits/{job['audit_id']}/report.html")
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count("data:image/png;base64,") >= 3, "heat maps (test, edit) and the eps curve"
    assert "corruption heat map" in page.text and "http://" not in page.text and "https://" not in page.text
    text = page.text
    assert text.index('id="verdict"') < text.index('id="summary"') < text.index('id="edit"') \
        < text.index('id="samples"') < text.index('id="details"'), "answer first, detail last"
    assert "test.corruption.pixelate.5.accuracy" in audit["metrics"]["candidate"]
    xml = c.get(f"/audits/{job['audit_id']}/report.xml", params={"policy": "default"})
    cases = ET.fromstring(xml.text).findall("./testsuite/testcase")
    assert len(cases) >= 4
    assert_problem(c.get(f"/audits/{job['audit_id']}/report.pdf"), 404)


def test_interpolation_records_the_alpha_curve_and_mli(edit_factory):
    c = edit_factory.client
    base = edit_factory.submit(audit={"attacks": [PGD], "max_samples": 100})
    job = edit_factory.submit(method="interpolate", hyperparams={"base_edit_id": base["id"],
                                                                 "alpha": {"target": 0.9}},
                              audit={"attacks": [PGD], "max_samples": 100})
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["status"] == "succeeded", edit["error"]
    audit = c.get(f"/audits/{job['audit_id']}").json()
    assert audit["mli"]["monotone"] is True and audit["mli"]["evaluations"] <= 8
    assert 0 < audit["mli"]["alpha"] < 1 and len(audit["alpha_curve"]) >= audit["mli"]["evaluations"]
    assert audit["mli"]["target_split"] == "edit" and audit["mli"]["threshold"] == 0.9
    spaced = {p["alpha"]: p["metrics"] for p in audit["alpha_curve"] if p["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0)}
    assert len(spaced) == 5 and all({"edit.accuracy", "test.accuracy"} <= set(m) for m in spaced.values())
    assert audit["metrics"]["candidate"]["edit.accuracy"] >= 0.9
    assert edit["info"]["changed_keys"] == ["fc.weight", "fc.bias"]
    assert "alpha curve" in c.get(f"/audits/{job['audit_id']}/report.html").text

    # bad 1-LI requests
    body = {"method": "interpolate", "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test",
            "model_id": edit_factory.model["id"]}
    assert_problem(c.post("/edits", json={**body, "layers": ["fc", "fc1"]}), 422, "layers")
    assert_problem(c.post("/edits", json={**body, "layers": ["fc"], "hyperparams": {"base_edit_id": "nope"}}), 404,
                   "hyperparams.base_edit_id")
    assert_problem(c.post("/edits", json={**body, "layers": ["fc1"], "hyperparams": {"base_edit_id": base["id"]}}),
                   422, "hyperparams.base_edit_id")


def test_layers_and_lineage(edit_factory):
    c = edit_factory.client
    layers = c.get(f"/models/{edit_factory.model['id']}/layers").json()["layers"]
    by_name = {x["name"]: x for x in layers}
    assert by_name["fc"] == {"name": "fc", "type": "Linear", "weight_shape": [10, 128], "parameters": 1290,
                             "rewrite": "layer", "checkpoint_name": None}
    assert by_name["features.0"]["type"] == "Conv2d" and by_name["features.1"]["type"] == "BatchNorm"
    job = edit_factory.submit(audit={"attacks": []})
    edited = c.get(f"/edits/{job['id']}").json()["edited_model_id"]
    lineage = c.get(f"/models/{edited}/lineage").json()
    assert [a["id"] for a in lineage["ancestors"]] == [edit_factory.model["id"], edited]
    assert lineage["ancestors"][1]["edit_id"] == job["id"]
    root = c.get(f"/models/{edit_factory.model['id']}/lineage").json()
    assert [ch["id"] for ch in root["children"]] == [edited]
    assert_problem(c.get("/models/nope/layers"), 404)


def test_enn_with_a_locality_set_runs_as_a_job(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(method="enn", layers=["fc1", "fc"],
                              hyperparams={"max_steps": 100, "locality_set": "builtin:digits-train"},
                              audit={"attacks": [], "max_samples": 100})
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["status"] == "succeeded", edit["error"]
    assert edit["info"]["edit_set_fixed"] and edit["info"]["locality"]
    assert c.get(f"/audits/{job['audit_id']}").json()["metrics"]["candidate"]["edit.accuracy"] == 1.0


def test_rewrite_runs_as_a_job_and_reuses_the_second_moment(edit_factory, digits_texture):
    from editaudit.contracts.formats import dataset_to_npz

    c = edit_factory.client
    ds = c.post("/datasets", files={"file": ("edit.npz", dataset_to_npz(digits_texture["edit"]))}).json()
    infos = []
    for solver in ("closed_form", "iterative"):
        job = edit_factory.submit(method="rewrite", layers=["fc1"], edit_set=ds["id"], audit={"attacks": []},
                                  hyperparams={"solver": solver, "reference_set": "builtin:digits-train"})
        edit = c.get(f"/edits/{job['id']}").json()
        assert edit["status"] == "succeeded", edit["error"]
        assert c.get(f"/audits/{job['audit_id']}").json()["metrics"]["candidate"]["edit.accuracy"] >= 0.9
        infos.append(edit["info"])
    assert all(i["changed_keys"] == ["fc1.weight"] and i["delta_rank"] <= 1 for i in infos)
    assert infos[0]["memo"]["misses"] and not infos[0]["memo"]["hits"]
    assert infos[1]["memo"]["hits"] == infos[0]["memo"]["misses"] and not infos[1]["memo"]["misses"]


def test_layer_sweep_runs_one_sub_edit_per_layer_and_compares_them(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(layers=["fc1", "fc"], sweep=True, audit={"attacks": [PGD], "max_samples": 100})
    assert [s["layer"] for s in job["sub_edits"]] == ["fc1", "fc"]
    sweep = c.get(f"/edits/{job['id']}").json()
    assert sweep["status"] == "succeeded", sweep["error"]
    assert sweep["sweep"] and [s["id"] for s in sweep["sub_edits"]] == [s["id"] for s in job["sub_edits"]]
    table = c.get(f"/audits/{job['audit_id']}").json()["sweep"]
    assert [r["layer"] for r in table["rows"]] == ["fc1", "fc"]
    assert {"edit.accuracy", "test.accuracy", "test.adv.pgd.accuracy"} <= set(table["metrics"])
    assert set(table["best"]) == set(table["metrics"]) and table["best"]["edit.accuracy"] in ("fc1", "fc")
    for sub, row in zip(job["sub_edits"], table["rows"], strict=True):
        edit = c.get(f"/edits/{sub['id']}").json()
        assert edit["status"] == "succeeded" and edit["sweep_id"] == job["id"] and edit["layers"] == [sub["layer"]]
        assert {k.rsplit(".", 1)[0] for k in edit["info"]["changed_keys"]} == {sub["layer"]}
        audit = c.get(f"/audits/{sub['audit_id']}").json()
        assert row["metrics"]["edit.accuracy"] == audit["metrics"]["candidate"]["edit.accuracy"]
    md = c.get(f"/audits/{job['audit_id']}/report.md").text
    assert "Layer sweep" in md and "| fc1 | succeeded |" in md and "| fc | succeeded |" in md
    html = c.get(f"/audits/{job['audit_id']}/report.html").text
    assert '<h2 id="sweep">Layer sweep</h2>' in html and 'alt="layer sweep"' in html
    for path in ("weights", "delta", "gate"):  # these belong to the sub-edits
        body = assert_problem(c.get(f"/edits/{job['id']}/{path}"), 409, "edit_id")
        assert [s["id"] for s in body["sub_edits"]] == [s["id"] for s in job["sub_edits"]]


def test_delta_holds_exactly_the_changed_tensors(edit_factory):
    import safetensors.torch
    import torch

    c = edit_factory.client
    job = edit_factory.submit(method="low_rank", layers=["fc1"], audit={"attacks": []})
    edit = c.get(f"/edits/{job['id']}").json()
    r = c.get(f"/edits/{job['id']}/delta")
    assert r.status_code == 200 and r.headers["x-content-sha256"] == edit["delta_sha256"]
    delta = safetensors.torch.load(r.content)
    assert sorted(delta) == edit["info"]["changed_keys"] == ["fc1.weight"]
    parent = safetensors.torch.load(c.get(f"/models/{edit_factory.model['id']}/weights").content)
    edited = safetensors.torch.load(c.get(f"/edits/{job['id']}/weights").content)
    patched = {**parent, **delta}
    assert all(torch.equal(patched[k], edited[k]) for k in edited), "parent + delta == edited, bit for bit"
    assert int(torch.linalg.matrix_rank(delta["fc1.weight"] - parent["fc1.weight"])) <= 1
    meta = _metadata(r.content)
    assert meta["parent_sha256"] == edit_factory.model["sha256"] and meta["method"] == "low_rank"
    assert edit["info"]["delta"]["fc1.weight"]["norm"] > 0


def _metadata(data: bytes) -> dict:
    """The safetensors header's __metadata__."""
    import json
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n])["__metadata__"]


def test_sequential_edits_and_revert_move_the_alias_back(edit_factory):
    c = edit_factory.client
    first = edit_factory.submit(audit={"attacks": []})
    first_model = c.get(f"/edits/{first['id']}").json()["edited_model_id"]
    second = edit_factory.submit(audit={"attacks": []}, model_id=first_model, layers=["fc1"])
    second_edit = c.get(f"/edits/{second['id']}").json()
    assert second_edit["status"] == "succeeded" and second_edit["model_id"] == first_model
    lineage = c.get(f"/models/{second_edit['edited_model_id']}/lineage").json()
    assert [a["id"] for a in lineage["ancestors"]] == [edit_factory.model["id"], first_model,
                                                       second_edit["edited_model_id"]]
    promo = c.post(f"/edits/{second['id']}/promote", json={"alias": "production",
                                                                  "override_reason": "ship it for the revert test"})
    assert promo.status_code == 200, promo.text
    assert c.get("/aliases/production").json()["model_id"] == second_edit["edited_model_id"]

    back = c.post(f"/edits/{second['id']}/revert", json={"reason": "robustness regression seen in prod"}).json()
    assert back["model_id"] == first_model and back["aliases"] == ["production"]
    alias = c.get("/aliases/production").json()
    assert alias["model_id"] == first_model and alias["history"][0]["outcome"] == "reverted"
    assert c.get(f"/edits/{second['id']}").json()["reverted_at"] is not None
    again = c.post(f"/edits/{second['id']}/revert").json()
    assert again["aliases"] == [] and again["reverted_at"] == back["reverted_at"], "idempotent"
    assert c.post(f"/edits/{first['id']}/revert").json()["aliases"] == ["production"]
    assert c.get("/aliases/production").json()["model_id"] == edit_factory.model["id"]
    assert_problem(c.post("/edits/nope/revert"), 404)


def test_revert_goes_back_to_what_the_alias_held_before_the_promotion(edit_factory):
    """prod = M1 (edit E1 of M0); E2, another edit of M0, is promoted; reverting E2 gives prod M1 again, not M0."""
    c = edit_factory.client
    reason = {"override_reason": "test: the gate verdict does not matter here"}
    e1 = edit_factory.submit(audit={"attacks": []})
    m1 = c.get(f"/edits/{e1['id']}").json()["edited_model_id"]
    assert c.post(f"/edits/{e1['id']}/promote", json={"alias": "prod", **reason}).status_code == 200
    e2 = edit_factory.submit(audit={"attacks": []}, layers=["fc1"])
    assert c.post(f"/edits/{e2['id']}/promote", json={"alias": "prod", **reason}).status_code == 200
    back = c.post(f"/edits/{e2['id']}/revert").json()
    assert back["alias_targets"] == {"prod": m1} and c.get("/aliases/prod").json()["model_id"] == m1


def test_a_failing_layer_is_a_row_of_the_sweep_not_its_end(edit_factory, digits_texture):
    """An all-zero mask leaves a conv layer nothing to rewrite (that sub-edit fails); fc1 ignores masks."""
    import numpy as np

    from editaudit.contracts.formats import DatasetArrays, dataset_to_npz

    c = edit_factory.client
    e = digits_texture["edit"]
    no_mask = DatasetArrays(x=e.x, y=e.y, x_orig=e.x_orig, mask=np.zeros_like(e.mask))
    ds = c.post("/datasets", files={"file": ("m.npz", dataset_to_npz(no_mask))}).json()
    job = edit_factory.submit(method="rewrite", layers=["features.7", "fc1"], sweep=True, edit_set=ds["id"],
                              audit={"attacks": []})
    sweep = c.get(f"/edits/{job['id']}").json()
    rows = {r["layer"]: r for r in c.get(f"/audits/{job['audit_id']}").json()["sweep"]["rows"]}
    assert rows["features.7"]["status"] == "failed" and "mask is empty" in rows["features.7"]["error"]
    assert rows["fc1"]["status"] == "succeeded" and rows["fc1"]["metrics"]["edit.accuracy"] >= 0.9
    assert sweep["status"] == "failed" and "features.7" in sweep["error"] and "fc1" not in sweep["error"]


def test_delta_of_an_edit_from_before_deltas_is_a_404(edit_factory):
    from editaudit.core import db

    c = edit_factory.client
    job = edit_factory.submit(audit={"attacks": []})
    with unscoped(c.services.sessions)() as s:
        s.get(db.Edit, job["id"]).delta_object_key = None
        s.commit()
    assert "before deltas" in assert_problem(c.get(f"/edits/{job['id']}/delta"), 404, "edit_id")["detail"]
