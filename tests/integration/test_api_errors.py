"""Bad input over the API: clear problem+json naming the field, and nothing half-written (SQLite + local store)."""

import io
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import save as np_save

from editaudit.core import db
from tests.conftest import SPEC, unscoped


def objects(client) -> list:
    root = client.settings.data_dir / "objects"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def rows(client, table) -> int:
    with unscoped(client.services.sessions)() as s:
        return s.query(table).count()


def post_model(client, weights: bytes, spec=SPEC):
    return client.post("/models", files={"weights": ("m.safetensors", weights)},
                       data={"spec": spec if isinstance(spec, str) else json.dumps(spec)})


def assert_problem(r, status, field=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"]
    if field:
        assert any(e["field"] == field for e in body.get("errors", [])), body
    return body


def assert_nothing_stored(client):
    assert objects(client) == [] and rows(client, db.Model) == 0 and rows(client, db.Dataset) == 0


def test_api_app_import_does_not_import_torch():
    code = ("import sys, editaudit.service.app, editaudit.cli.main, editaudit.worker.celery_app; "
            "editaudit.service.app.create_app; sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_upload_model_ok(api_client, digits_model):
    weights, spec, _ = digits_model
    r = post_model(api_client, weights, spec)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/models/{body['id']}" and len(body["sha256"]) == 64
    assert api_client.get(f"/models/{body['id']}/weights").content == weights


def test_torch_save_weights_are_refused_and_never_unpickled(api_client, digits_model, monkeypatch):
    _, spec, net = digits_model
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    body = assert_problem(post_model(api_client, buf.getvalue(), spec), 415, "weights")
    assert "pickle" in body["detail"]
    assert_nothing_stored(api_client)


def test_mismatching_state_dict_names_first_key(api_client, digits_model):
    _, spec, net = digits_model
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    state["fc.weight"] = np.zeros((5, 128), np.float32)
    body = assert_problem(post_model(api_client, np_save(state), spec), 422, "weights")
    assert "'fc.weight'" in body["detail"]
    del state["fc.weight"]
    state["extra"] = np.zeros(1, np.float32)
    assert "missing key 'fc.weight'" in assert_problem(post_model(api_client, np_save(state), spec), 422)["detail"]
    assert_nothing_stored(api_client)


def test_unknown_arch_lists_valid_names(api_client, digits_model):
    body = assert_problem(post_model(api_client, digits_model[0], {**SPEC, "arch": "torchvision/resnet19"}), 422,
                          "spec.arch")
    assert "torchvision/resnet18" in body["valid"] and "torchvision/resnet18" in body["closest"]
    assert_nothing_stored(api_client)


@pytest.mark.parametrize("spec,field", [("{not json", "spec"), ({"arch": "editaudit/smallcnn"}, "spec.num_classes"),
                                        ({**SPEC, "input_shape": [1, 8]}, "spec.input_shape"),
                                        ({**SPEC, "mean": [0.1, 0.2]}, "spec")])
def test_malformed_spec_is_422(api_client, digits_model, spec, field):
    assert_problem(post_model(api_client, digits_model[0], spec), 422, field)
    assert_nothing_stored(api_client)


def test_torchvision_needs_three_channels(api_client, digits_model):
    assert_problem(post_model(api_client, digits_model[0], {**SPEC, "arch": "torchvision/resnet18"}), 422,
                   "spec.input_shape")


def test_unknown_ids_are_404(api_client):
    for path in ("/models/nope", "/models/nope/weights", "/datasets/nope", "/edits/nope", "/edits/nope/weights",
                 "/audits/nope"):
        assert_problem(api_client.get(path), 404)
    r = api_client.post("/edits", json={"model_id": "nope", "method": "finetune", "edit_set": "builtin:digits-train",
                                        "test_set": "builtin:digits-test"})
    assert_problem(r, 404, "model_id")


def test_dataset_upload_and_errors(api_client, failures_npz):
    r = api_client.post("/datasets", files={"file": ("f.npz", failures_npz)})
    assert r.status_code == 201 and r.json()["shape"] == [1, 8, 8] and r.json()["n"] >= 3
    bad = np_save({"x": np.zeros((2, 1, 8, 8), np.float32)})
    assert_problem(api_client.post("/datasets", files={"file": ("b.safetensors", bad)}), 422, "file.y")
    empty = np_save({"x": np.zeros((0, 1, 8, 8), np.float32), "y": np.zeros(0, np.int64)})
    assert_problem(api_client.post("/datasets", files={"file": ("e.safetensors", empty)}), 422, "file.x")
    assert_problem(api_client.post("/datasets", files={"file": ("p.pkl", pickle.dumps({"x": 1}))}), 415, "file")
    assert rows(api_client, db.Dataset) == 1


def test_failed_row_insert_removes_the_new_object(api_client, digits_model, monkeypatch):
    from sqlalchemy.orm import Session

    def broken_commit(self):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Session, "commit", broken_commit)
    with pytest.raises(RuntimeError):
        post_model(api_client, digits_model[0], SPEC)
    monkeypatch.undo()
    assert_nothing_stored(api_client)


@pytest.fixture()
def model_id(api_client, digits_model):
    return post_model(api_client, digits_model[0], SPEC).json()["id"]


def edit_body(model_id, **over):
    body = {"model_id": model_id, "method": "finetune_layer", "layers": ["fc"], "edit_set": "builtin:digits-train",
            "test_set": "builtin:digits-test", "audit": {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.03}]}}
    return {**body, **over}


@pytest.mark.parametrize("over,status,field", [
    ({"method": "rome"}, 422, "method"),
    ({"layers": ["fc9"]}, 422, "layers.0"),
    ({"layers": []}, 422, "layers"),
    ({"method": "finetune"}, 422, "layers"),
    ({"method": "low_rank", "layers": ["fc"], "hyperparams": {"rank": 11}}, 422, "hyperparams.rank"),
    ({"method": "low_rank", "layers": ["fc", "fc1"]}, 422, "layers"),
    ({"method": "rewrite", "layers": ["fc1"], "hyperparams": {"rank": 129}}, 422, "hyperparams.rank"),
    ({"method": "rewrite", "layers": ["features.1"]}, 422, "layers.0"),  # a BatchNorm: no matrix to rewrite
    ({"method": "rewrite", "layers": ["fc1"], "hyperparams": {"solver": "sgd"}}, 422, "hyperparams.solver"),
    ({"method": "rewrite", "layers": ["features.7"], "hyperparams": {"keys": "pixel", "rank": 65}}, 422,
     "hyperparams.rank"),  # pixel keys: at most the 64 input channels (patch keys: 128)
    ({"method": "rewrite", "layers": ["fc1"], "hyperparams": {"keys": "voxel"}}, 422, "hyperparams.keys"),
    ({"method": "finetune", "layers": [], "sweep": True}, 422, "sweep"),
    ({"layers": ["fc"], "sweep": True}, 422, "layers"),
    ({"layers": ["fc", "fc"], "sweep": True}, 422, "layers"),
    ({"layers": ["fc", "fc9"], "sweep": True}, 422, "layers.1"),
    ({"method": "low_rank", "layers": ["fc", "features.1"], "sweep": True}, 422, "layers.1"),
    ({"method": "low_rank", "layers": ["fc1", "fc"], "sweep": True, "hyperparams": {"rank": 11}}, 422,
     "hyperparams.rank"),
    ({"method": "low_rank", "layers": ["fc"], "hyperparams": {"rank": "11"}}, 422, "hyperparams.rank"),  # not a 500
    ({"layers": [f"features.{i}" for i in range(12)] * 3, "sweep": True}, 422, "layers"),
    ({"method": "interpolate", "layers": ["fc1"], "hyperparams": {"base": {"method": "rewrite", "hyperparams": {
        "reference_set": "nope"}}}}, 404, "hyperparams.base.hyperparams.reference_set"),
    ({"method": "interpolate", "layers": ["fc"], "hyperparams": {"base": {"method": "low_rank",
                                                                           "hyperparams": {"rank": 11}}}},
     422, "hyperparams.base.hyperparams.rank"),
    ({"method": "interpolate", "layers": ["fc"], "hyperparams": {"base": {"method": "rewrite"}}}, 422, "edit_set"),
    ({"method": "rewrite", "layers": ["fc1"], "hyperparams": {"reference_set": "nope"}}, 404,
     "hyperparams.reference_set"),
    ({"method": "finetune", "layers": [], "hyperparams": {"from_layer": "fc9"}}, 422, "hyperparams.from_layer"),
    ({"hyperparams": {"from_layer": "fc"}}, 422, "hyperparams.from_layer"),
    ({"hyperparams": {"locality_set": "nope"}}, 404, "hyperparams.locality_set"),
    ({"hyperparams": {"lr": -1}}, 422, "hyperparams.lr"),
    ({"hyperparams": {"bogus": 1}}, 422, "hyperparams.bogus"),
    ({"edit_set": "builtin:cifar"}, 404, "edit_set"),
    ({"test_set": "nope"}, 404, "test_set"),
    ({"audit": {"attacks": [{"name": "boundary"}]}}, 422, "audit.attacks.0"),
    ({"audit": {"attacks": [{"name": "pgd", "eps": -0.1}]}}, 422, "audit.attacks.0.pgd.eps"),
    ({"audit": {"attacks": [{"name": "pgd", "steps": 0}]}}, 422, "audit.attacks.0.pgd.steps"),
    ({"audit": {"corruptions": {"names": ["fogg"]}}}, 422, "audit.corruptions.names.0"),
    ({"audit": {"corruptions": {"severities": [0]}}}, 422, "audit.corruptions.severities.0"),
    ({"audit": {"corruptions": {"severities": [6]}}}, 422, "audit.corruptions.severities.0"),
    ({"audit": {"attacks": [{"name": "apgd", "steps": 0}]}}, 422, "audit.attacks.0.apgd.steps"),
    ({"audit": {"attacks": [{"name": "pgd", "eps_sweep": [-1]}]}}, 422, "audit.attacks.0.pgd.eps_sweep.0"),
])
def test_bad_edit_requests(api_client, model_id, over, status, field):
    body = assert_problem(api_client.post("/edits", json=edit_body(model_id, **over)), status, field)
    if over.get("layers") == ["fc9"]:
        assert "fc" in body["closest"]
    if over.get("audit", {}).get("attacks", [{}])[0].get("name") == "boundary":
        assert "'pgd'" in body["detail"] and "'autoattack'" in body["detail"], "lists the valid attack names"
    if over.get("audit", {}).get("corruptions", {}).get("names"):
        assert "'gaussian_noise'" in body["detail"] and "'jpeg_compression'" in body["detail"]
    assert rows(api_client, db.Edit) == 0


def test_labels_beyond_num_classes_are_refused(api_client, model_id):
    data = np_save({"x": np.zeros((2, 1, 8, 8), np.float32), "y": np.array([3, 12], np.int64)})
    ds = api_client.post("/datasets", files={"file": ("d.safetensors", data)}).json()["id"]
    body = assert_problem(api_client.post("/edits", json=edit_body(model_id, edit_set=ds)), 422, "edit_set")
    assert "num_classes" in body["detail"] or "classes" in body["detail"]


def test_a_request_over_the_cost_budget_is_refused_naming_the_cost(api_client, model_id):
    """Months of work in one accepted spec was possible: now the API counts the passes first."""
    monster = {"attacks": [{"name": "pgd", "eps": 0.03, "steps": 10_000, "restarts": 100}]}
    body = assert_problem(api_client.post("/edits", json=edit_body(model_id, audit=monster)), 422, "audit")
    assert body["cost"]["total"] > body["limit"] == api_client.settings.max_job_passes and "budget" in body["detail"]
    many = {"attacks": [{"id": f"a{i}", "name": "fgsm", "eps": 0.03} for i in range(17)]}
    assert_problem(api_client.post("/edits", json=edit_body(model_id, audit=many)), 422, "audit.attacks")
    assert rows(api_client, db.Edit) == 0
    ordinary = {"attacks": [{"name": "pgd", "eps": 0.03, "steps": 10}, {"id": "l2", "name": "pgd", "norm": "2",
                                                                      "eps": 0.5, "eps_sweep": [0.25, 1.0]}],
                "corruptions": {"names": "all", "severities": [1, 2, 3, 4, 5]}}
    assert api_client.post("/edits", json=edit_body(model_id, audit=ordinary)).status_code == 202


def test_rewrite_refuses_a_layer_its_graph_rules_out(api_client):
    """Read from the architecture's traced graph (the manifest), not the layer's name: a depthwise conv and a layer
    that reaches a residual add through a layer scale are 422s naming the layer and why; a block's last conv is
    accepted."""
    import safetensors.torch

    from editaudit.worker.ml.archs import build_inner

    spec = {"arch": "torchvision/mobilenet_v2", "num_classes": 10, "input_shape": [3, 32, 32]}
    state = {k: v.contiguous() for k, v in build_inner(spec["arch"], 10, [3, 32, 32]).state_dict().items()}
    model = post_model(api_client, safetensors.torch.save(state), spec).json()["id"]
    body = {"model_id": model, "method": "rewrite", "edit_set": "builtin:digits-train",
            "test_set": "builtin:digits-test"}
    r = api_client.post("/edits", json={**body, "layers": ["features.2.conv.1.0"]})
    assert "grouped" in assert_problem(r, 422, "layers.0")["detail"]
    r = api_client.post("/edits", json={**body, "layers": ["features.3.conv.2"]})  # ends a residual block: fine here
    assert all(e["field"] != "layers.0" for e in r.json().get("errors", [])), r.text
    assert rows(api_client, db.Edit) == 0


def test_rewrite_without_x_orig_says_what_it_needs(api_client, model_id):
    body = assert_problem(api_client.post("/edits", json=edit_body(model_id, method="rewrite", layers=["fc1"])),
                          422, "edit_set")
    assert "x_orig" in body["detail"] and "untransformed" in body["detail"]
    assert rows(api_client, db.Edit) == 0


def test_accepted_edit_is_committed_before_enqueue(api_client, model_id):
    r = api_client.post("/edits", json=edit_body(model_id))
    assert r.status_code == 202 and r.headers["location"] == f"/edits/{r.json()['id']}"
    edit = api_client.get(r.headers["location"]).json()
    assert edit["status"] == "queued" and edit["audit_id"] == r.json()["audit_id"]
    assert api_client.get(f"/audits/{edit['audit_id']}").json()["status"] == "queued"
    assert_problem(api_client.get(f"/edits/{edit['id']}/weights"), 409)
    queued = list((api_client.settings.broker_folder / "queue").glob("*"))
    assert len(queued) == 1, "the message sits in the embedded (filesystem) broker"


def test_bearer_token_when_configured(tmp_path):
    import pydantic
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    with pytest.raises(pydantic.ValidationError, match="at least 24 characters"):
        make_settings(tmp_path, api_token="x")
    token = "s3cr3t-value-long-enough-to-be-one"
    settings = make_settings(tmp_path, api_token=token)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, allow_anonymous=True)) as c:  # a configured token ends anonymous access
        assert c.get("/healthz").status_code == 200
        assert_problem(c.get("/archs"), 401)
        assert c.get("/archs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert_problem(c.get("/archs", headers={"Authorization": f"Bearer {token[:-1]}X"}), 401)


def test_malformed_json_body_names_the_body(api_client):
    r = api_client.post("/edits", content=b'{"model_id": "x"', headers={"content-type": "application/json"})
    body = assert_problem(r, 422, "body")
    assert "invalid JSON" in body["detail"]


def test_odd_norm_values_are_a_422_not_a_500(api_client, model_id):
    r = api_client.post("/edits", json=edit_body(model_id, audit={"attacks": [{"name": "pgd", "norm": [2]}]}))
    assert_problem(r, 422, "audit.attacks.0.pgd.norm")
    r = api_client.post("/edits", json=edit_body(model_id, method="interpolate",
                                                 hyperparams={"base": {"hyperparams": {"stepz": 3}}}))
    assert_problem(r, 422)
    r = api_client.post("/edits", json=edit_body(model_id, method="interpolate",
                                                 hyperparams={"alpha": {"target_split": "generalization"}}))
    assert_problem(r, 422, "hyperparams.alpha.target_split")
