"""Bring your own model and data, over HTTP on the embedded default (SQLite, local store, a real Celery worker
process running the same task code as production): a timm ResNet and a Hugging Face ViT, each with an image-folder
archive made here, through import -> validating -> ready -> edit -> audit (PGD + two corruptions) -> gate. Plus a
checkpoint that does not fit (invalid, the tensor named; an edit on it is a 409)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from editaudit.cli.embedded import EmbeddedServer
from editaudit.client import ApiError, Client
from tests.conftest import make_settings
from tests.image_folders import folder_members, tar_bytes, zip_bytes

pytestmark = pytest.mark.slow

CLASSES = ["ant", "bee", "cat"]
AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.01, "steps": 3, "step_size": 0.005}],
         "corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [1, 3]}, "seed": 0}


def timm_weights(name: str, **kwargs) -> bytes:
    import timm

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, **kwargs)
    return safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})


def gate(url: str, edit_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "editaudit.cli.main", "gate", edit_id, "--url", url,
                           "--max-drop", "test.accuracy=1.0"], capture_output=True, text=True, timeout=120)


def submit_and_wait(c: Client, body: dict) -> dict:
    job = c.submit_edit(body)
    edit = c.wait_for_edit(job["id"], timeout=600)
    assert edit["status"] == "succeeded", edit["error"]
    return edit


def check_audit(c: Client, edit: dict, layers_prefix: str) -> dict:
    audit = c.get_audit(edit["audit_id"])
    assert audit["status"] == "succeeded"
    for side in ("baseline", "candidate"):
        m = audit["metrics"][side]
        for name in ("test.accuracy", "test.adv.pgd.accuracy", "test.corruption.gaussian_noise.3.accuracy",
                     "test.corruption.contrast.1.accuracy", "edit.accuracy"):
            assert 0.0 <= m[name] <= 1.0, name
    assert all(k.startswith(layers_prefix) for k in edit["info"]["changed_keys"]), edit["info"]["changed_keys"]
    return audit


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with EmbeddedServer(make_settings(tmp_path_factory.mktemp("byo"))) as s:
        yield s


def test_timm_resnet_with_image_folders(stack):
    c = Client(stack.url)
    model = c.import_timm_model("test_resnet", timm_weights("test_resnet", num_classes=3), input_shape=[3, 32, 32],
                                class_names=CLASSES)
    assert model["status"] == "ready", model.get("error")
    assert model["spec"]["num_classes"] == 3 and model["spec"]["mean"] == [0.5, 0.5, 0.5]  # timm's pretrained cfg
    layers = {row["name"] for row in c.get_model_layers(model["id"])["layers"]}
    assert "layer4.0.conv1" in layers and "fc" in layers

    edit_set = c.import_dataset(tar_bytes(folder_members(CLASSES, 4, seed=1), gz=True), options=None)
    test_set = c.import_dataset(zip_bytes(folder_members(CLASSES, 10, seed=2, fmt="JPEG")))
    for ds in (edit_set, test_set):
        assert ds["status"] == "ready", ds.get("error")
        assert ds["classes"] == CLASSES and ds["shape"] == [3, 32, 32]

    base = {"model_id": model["id"], "edit_set": edit_set["id"], "test_set": test_set["id"], "audit": AUDIT}
    ft = submit_and_wait(c, {**base, "method": "finetune_layer", "layers": ["layer4"],
                             "hyperparams": {"steps": 5, "lr": 0.01, "locality_weight": 0}})
    assert ft["layers"] == ["layer4"]
    check_audit(c, ft, "layer4.")
    enn = submit_and_wait(c, {**base, "method": "enn", "layers": ["layer4.0.*"],
                              "hyperparams": {"max_steps": 3, "locality_weight": 0}})
    assert all(name.startswith("layer4.0.") for name in enn["layers"])
    check_audit(c, enn, "layer4.0.")
    assert gate(stack.url, ft["id"]).returncode in (0, 1)

    # a glob that matches nothing, and a block for a single-layer rewrite, are 422s naming them
    with pytest.raises(ApiError) as e:
        c.submit_edit({**base, "method": "finetune_layer", "layers": ["layer9.*"]})
    assert e.value.status == 422 and "layer9.*" in e.value.detail
    with pytest.raises(ApiError) as e:
        c.submit_edit({**base, "method": "rewrite", "layers": ["layer4"]})
    assert e.value.status == 422 and "layer4" in e.value.detail


def test_hugging_face_vit_rewrite(stack, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=3, id2label=dict(enumerate(CLASSES)),
                    label2id={n: i for i, n in enumerate(CLASSES)})
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "vit", safe_serialization=True)
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32}}))
    c = Client(stack.url)
    model = c.import_hf_model(tmp_path / "vit")
    assert model["status"] == "ready", model.get("error")
    assert model["arch"] == "hf/vit" and model["spec"]["class_names"] == CLASSES
    # the MLP's first Linear, named as the checkpoint names it (transformers 5 builds it as vit.layers.1.mlp.fc1)
    checkpoint_name = "vit.encoder.layer.1.intermediate.dense"
    rows = c.get_model_layers(model["id"])["layers"]
    row = next(r for r in rows if checkpoint_name in (r["name"], r.get("checkpoint_name")))
    assert row["type"] == "Linear" and row["rewrite"] == "layer"
    layer = row["name"]

    edit_set = c.import_dataset(tar_bytes(folder_members(CLASSES, 3, seed=3, twins=True)))
    assert edit_set["status"] == "ready" and edit_set["has_x_orig"] and edit_set["has_mask"], edit_set.get("error")
    test_set = c.import_dataset(tar_bytes(folder_members(CLASSES, 10, seed=4)))
    edit = submit_and_wait(c, {"model_id": model["id"], "method": "rewrite", "layers": [checkpoint_name],
                               "hyperparams": {"rank": 1}, "edit_set": edit_set["id"], "test_set": test_set["id"],
                               "audit": AUDIT})
    assert edit["layers"] == [layer] and edit["info"]["changed_keys"] == [f"{layer}.weight"]
    check_audit(c, edit, layer)
    assert gate(stack.url, edit["id"]).returncode in (0, 1)
    # the edited weights come back in the checkpoint's own layout: save_pretrained's names load them
    buf = io.BytesIO()
    c.download_edit_weights(edit["id"], buf)
    edited = safetensors.torch.load(buf.getvalue())
    assert f"{checkpoint_name}.weight" in edited or f"{layer}.weight" in edited
    original = safetensors.torch.load_file(str(tmp_path / "vit" / "model.safetensors"))
    assert set(edited) == set(original)


def test_checkpoint_that_does_not_fit_is_invalid(stack):
    c = Client(stack.url)
    state = safetensors.torch.load(timm_weights("test_resnet", num_classes=3))
    state["layer4.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    model = c.import_timm_model("test_resnet", safetensors.torch.save(state), num_classes=3,
                                input_shape=[3, 32, 32])
    assert model["status"] == "invalid" and "layer4.0.conv1.weight" in model["error"]
    with pytest.raises(ApiError) as e:
        c.submit_edit({"model_id": model["id"], "method": "finetune", "edit_set": "builtin:digits-train",
                       "test_set": "builtin:digits-test"})
    assert e.value.status == 409 and "invalid" in e.value.detail


def test_unknown_timm_name_is_invalid_not_downloaded(stack):
    c = Client(stack.url)
    model = c.import_timm_model("no_such_net", io.BytesIO(timm_weights("test_resnet", num_classes=3)))
    assert model["status"] == "invalid" and "no_such_net" in model["error"]
