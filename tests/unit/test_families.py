"""Bring-your-own architectures: `timm/<name>` and `hf/<model_type>` resolved by prefix (not in the API's manifest),
checked by `inspect_model` before any edit (resolved spec, layer table, the first mismatching tensor), traced for
rewrite (Hugging Face models through the concrete trace), and edited by blocks as well as layers."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from editaudit.core import arch_manifest
from editaudit.worker.ml.archs import ARCHS, build_inner, checkpoint_state, create_model
from editaudit.worker.ml.archs.graph import rewrite_kinds, trace
from editaudit.worker.ml.archs.inspect import inspect_model
from editaudit.worker.ml.archs.timm_family import pretrained_defaults
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit

pytestmark = pytest.mark.filterwarnings("ignore")
transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

HF_CONFIG = json.loads(transformers.ViTConfig(  # a config.json as uploaded
    image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"}).to_json_string())
HF_PRE = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 16, "width": 16},
          "resample": 3, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
          "do_rescale": True, "rescale_factor": 1 / 255}
HF_SPEC = {"arch": "hf/vit", "config": HF_CONFIG, "preprocessor": HF_PRE}


def _saved(tmp_path, net: nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights through a safetensors file, as an upload arrives."""
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    return load_file(str(tmp_path / "model.safetensors"))


def _build(arch: str, num_classes: int, shape: list[int], spec: dict | None = None) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_inner(arch, num_classes, shape, spec).eval()


def _edit_set(n: int, shape: list[int], target: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x_orig = torch.rand(n, *shape, generator=g)
    x = x_orig.clone()
    x[:, :, : shape[1] // 2, : shape[2] // 2] = 0.95  # a patch: what a rewrite undoes
    return TensorDataset(x, torch.full((n,), target, dtype=torch.long), x_orig=x_orig)


# ------------------------------------------------------------------------------------------------ registry

def test_families_resolve_by_prefix_and_stay_out_of_the_manifest():
    assert not any(a.startswith(("timm/", "hf/")) for a in ARCHS)
    assert set(arch_manifest.arch_names()) == set(ARCHS)  # the API's torch-free manifest is ARCHS only
    with pytest.raises(KeyError, match="unknown architecture 'timm/no_such_model'"):
        build_inner("timm/no_such_model", 10, [3, 32, 32])
    with pytest.raises(ValueError, match="not an image classifier"):
        build_inner("hf/bert", 3, [3, 16, 16], {"config": {"model_type": "bert"}})
    with pytest.raises(ValueError, match="config.json says 'deit'"):
        build_inner("hf/vit", 3, [3, 16, 16], {"config": {**HF_CONFIG, "model_type": "deit"}})


def test_timm_pretrained_defaults_need_no_download():
    cfg = pretrained_defaults("test_vit")
    assert cfg["input_size"] == [3, 160, 160] and cfg["interpolation"] == "bicubic"
    assert cfg["mean"] == [0.5, 0.5, 0.5] and cfg["std"] == [0.5, 0.5, 0.5] and 0 < cfg["crop_pct"] <= 1
    assert cfg["num_classes"] == 1000 and cfg["fixed_input_size"] is True


# ----------------------------------------------------------------------------------------------- inspection

def test_inspect_a_timm_resnet(tmp_path):
    state = _saved(tmp_path, _build("timm/test_resnet", 5, [3, 32, 32]))
    out = inspect_model({"arch": "timm/test_resnet", "input_shape": [3, 32, 32]}, state)
    assert json.loads(json.dumps(out)) == out
    spec = out["spec"]
    assert spec["num_classes"] == 5  # read from the checkpoint's classifier
    assert spec["input_shape"] == [3, 32, 32] and spec["mean"] == [0.5] * 3 and spec["std"] == [0.5] * 3
    assert spec["class_names"] is None
    assert spec["preprocess"] == {"resize": 33, "resize_exact": None, "crop": [32, 32], "interpolation": "bilinear"}
    rows = {r["name"]: r for r in out["modules"]}
    assert rows["fc"] == {"name": "fc", "type": "Linear", "weight_shape": [5, 96], "parameters": 485,
                          "rewrite": "layer"}
    assert rows["layer4.0.conv2"]["rewrite"] == "block: layer -> BatchNorm -> + skip -> ReLU"
    assert rows["layer4.0.bn2"]["type"] == "BatchNorm" and "rewrite" not in rows["layer4.0.bn2"]
    assert "layer4" not in rows  # a block owns no parameter itself

    model = create_model(spec, state)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_inspect_reads_channels_and_defaults_from_the_checkpoint_and_timm(tmp_path):
    state = _saved(tmp_path, _build("timm/test_resnet", 4, [1, 160, 160]))
    out = inspect_model({"arch": "timm/test_resnet"}, state)
    assert out["spec"]["input_shape"] == [1, 160, 160] and out["spec"]["num_classes"] == 4
    assert out["spec"]["mean"] == [0.5] and out["spec"]["preprocess"]["crop"] == [160, 160]


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    state = _saved(tmp_path, _build("timm/test_resnet", 5, [3, 32, 32]))
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError, match=r"'layer2\.0\.conv1\.weight' has shape \[3, 3, 3, 3\]"):
        inspect_model({"arch": "timm/test_resnet", "input_shape": [3, 32, 32]}, state)


def test_inspect_a_timm_vit_at_another_input_size(tmp_path):
    state = _saved(tmp_path, _build("timm/test_vit", 4, [3, 32, 32]))
    out = inspect_model({"arch": "timm/test_vit", "input_shape": [3, 32, 32], "mean": None}, state)
    assert out["spec"]["num_classes"] == 4 and out["spec"]["mean"] is None  # an explicit null: no normalisation
    rows = {r["name"]: r for r in out["modules"]}
    assert rows["blocks.1.mlp.fc1"]["rewrite"] == "layer"
    assert rows["blocks.1.mlp.fc2"]["rewrite"] == "block: layer -> + skip"
    assert rows[""]["type"] == "Other" and rows[""]["weight_shape"] is None  # cls_token, pos_embed
    model = create_model(out["spec"], state)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)


def test_inspect_a_hugging_face_vit(tmp_path):
    net = _build("hf/vit", 3, [3, 16, 16], HF_SPEC)
    state = _saved(tmp_path, net)
    out = inspect_model(HF_SPEC, state)
    assert json.loads(json.dumps(out)) == out
    spec = out["spec"]
    assert spec["num_classes"] == 3 and spec["input_shape"] == [3, 16, 16]
    assert spec["class_names"] == ["cat", "dog", "fox"]
    assert spec["mean"] == [0.5] * 3 and spec["std"] == [0.25] * 3
    # HF resizes to exactly 16 x 16; `resize` + `crop` are the aspect-keeping equivalent for readers of those only
    assert spec["preprocess"] == {"resize": 16, "resize_exact": [16, 16], "crop": [16, 16],
                                  "interpolation": "bicubic"}
    rows = {r["name"]: r for r in out["modules"]}
    fc1, fc2 = (next(n for n in rows if n.endswith(f"layers.1.mlp.{k}") or n.endswith(f"layer.1.{v}"))
                for k, v in (("fc1", "intermediate.dense"), ("fc2", "output.dense")))
    assert rows[fc1]["rewrite"] == "layer" and rows[fc2]["rewrite"] == "block: layer -> + skip"
    assert rows["classifier"]["weight_shape"] == [3, 32] and "checkpoint_name" not in rows["classifier"]
    # where transformers renamed the module, the row also names it as save_pretrained's checkpoints do
    assert rows[fc1].get("checkpoint_name", fc1) == "vit.encoder.layer.1.intermediate.dense"
    assert rows[fc2].get("checkpoint_name", fc2) == "vit.encoder.layer.1.output.dense"

    model = create_model(spec, state)
    assert isinstance(model.net, transformers.PreTrainedModel) and "classifier.weight" in model.net.state_dict()
    x = torch.rand(2, 3, 16, 16)
    logits = model(x)  # a Tensor: Normalized takes the ModelOutput's logits
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3)
    assert torch.allclose(logits, net((x - 0.5) / 0.25).logits, atol=1e-6)


def test_a_hugging_face_checkpoint_in_its_saved_layout_loads_and_errors_name_its_keys(tmp_path):
    net = _build("hf/vit", 3, [3, 16, 16], HF_SPEC)
    net.save_pretrained(tmp_path / "vit")  # the layout users upload (older module names where transformers renamed)
    state = load_file(str(tmp_path / "vit" / "model.safetensors"))
    assert "vit.encoder.layer.1.intermediate.dense.weight" in state
    model = create_model({**HF_SPEC, "num_classes": 3, "input_shape": [3, 16, 16]}, state)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model.net(x).logits, net(x).logits, atol=1e-6)
    saved = checkpoint_state("hf/vit", model.net)  # what an edited model is saved as: the upload's layout
    assert set(saved) == set(state) and all(torch.equal(saved[k], state[k]) for k in state)
    key = next(k for k in state if k.endswith(".weight") and state[k].dim() == 2 and "classifier" not in k)
    state[key] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=f"'{key}' has shape"):
        inspect_model(HF_SPEC, state)


def test_a_model_that_cannot_be_traced_marks_its_layers_unsupported():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if float(x.sum()) > 0:  # data-dependent Python: neither trace can follow it without an input shape
                return self.fc(x)
            return -self.fc(x)

    kinds = rewrite_kinds(Branchy())
    assert kinds["fc"].startswith("unsupported: the model cannot be traced (")


def test_the_concrete_trace_follows_python_reads_and_leaves_the_model_as_it_was():
    class ReadsShapes(nn.Module):  # what torch.fx's symbolic trace cannot follow
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.size = nn.Linear(4, 4), nn.Linear(4, 4), None

        def forward(self, x):
            b, c, h, w = x.shape
            self.size = min(h, w)  # a forward that stores what it computes (Swin's window size)
            tokens = x.flatten(2).transpose(1, 2)
            if tokens.shape[1] != self.size * self.size:
                raise AssertionError
            return (self.fc2(torch.relu(self.fc1(tokens))) + tokens).mean(1)

    net = ReadsShapes()
    gm = trace(net, [4, 3, 3])
    assert net.size is None  # not a proxy left behind
    x = torch.rand(5, 4, 3, 3)  # another batch size than the trace's example
    assert torch.allclose(gm(x), net(x))
    assert rewrite_kinds(net, [4, 3, 3]) == {"fc1": "layer", "fc2": "block: layer -> + skip"}


# ------------------------------------------------------------------------------------------ edits on blocks

@pytest.mark.parametrize("method,hyperparams", [
    ("finetune_layer", {"steps": 3, "lr": 1e-2, "stop_when_fixed": False, "locality_weight": 0}),
    ("enn", {"max_steps": 3, "lr": 1e-2, "stop_when_fixed": False, "locality_weight": 0}),
])
def test_a_block_edits_all_its_parameters_and_nothing_else(tmp_path, method, hyperparams):
    spec = {"arch": "timm/test_resnet", "num_classes": 5, "input_shape": [3, 32, 32]}
    model = create_model(spec, _saved(tmp_path, _build("timm/test_resnet", 5, [3, 32, 32])))
    es = _edit_set(6, [3, 32, 32], target=2)
    r = run_edit(method, model, es, ["layer4", "layer4.0.conv2"], hyperparams)  # overlapping: each param once
    assert r.changed and all(k.startswith("layer4.") for k in r.changed)
    weights = {k for k, v in model.net.named_parameters() if k.startswith("layer4.")}
    assert {k for k in r.changed if k in weights} == weights  # every parameter of the block moved


def test_1_layer_interpolation_of_a_block(tmp_path):
    spec = {"arch": "timm/test_resnet", "num_classes": 5, "input_shape": [3, 32, 32]}
    model = create_model(spec, _saved(tmp_path, _build("timm/test_resnet", 5, [3, 32, 32])))
    es = _edit_set(4, [3, 32, 32], target=1)
    base = {"method": "finetune_layer", "hyperparams": {"steps": 2, "lr": 1e-2, "stop_when_fixed": False,
                                                         "locality_weight": 0}}
    r = run_edit("interpolate", model, es, ["layer4"], {"base": base, "alpha": {"mode": "fixed", "alpha": 0.5}})
    assert r.changed and all(k.startswith("layer4.") for k in r.changed) and r.info["alpha"] == 0.5


def test_single_layer_methods_refuse_a_block_by_name(tmp_path):
    model = create_model({"arch": "timm/test_resnet", "num_classes": 5, "input_shape": [3, 32, 32]})
    es = _edit_set(2, [3, 32, 32], target=1)
    with pytest.raises(ValueError, match="'layer4' is a Sequential .*name one of its layers"):
        run_edit("rewrite", model, es, ["layer4"], {"rank": 1})
    with pytest.raises(ValueError, match="low_rank edits one layer .*'layer4'"):
        run_edit("low_rank", model, es, ["layer4"], {"rank": 1})


# ----------------------------------------------------------------------------------- rewrite on a HF ViT

@pytest.mark.parametrize("which,matched", [("fc1", "layer output"), ("fc2", "block output: layer -> + skip")])
def test_rewrite_on_a_hugging_face_vit_mlp(tmp_path, which, matched):
    net = _build("hf/vit", 3, [3, 16, 16], HF_SPEC)
    model = create_model({**HF_SPEC, "num_classes": 3, "input_shape": [3, 16, 16]}, _saved(tmp_path, net))
    layer = next(n for n, _ in model.net.named_modules()
                 if n.endswith(f"layers.1.mlp.{which}")
                 or n.endswith({"fc1": "layer.1.intermediate.dense", "fc2": "layer.1.output.dense"}[which]))
    r = run_edit("rewrite", model, _edit_set(6, [3, 16, 16], target=0), [layer],
                 {"rank": 1, "reference_samples": 16})
    assert r.changed == [f"{layer}.weight"]
    assert r.info["matched"] == matched and r.info["keys"] == 6 * 17  # tokens are the keys: [B, T, D] -> rows
    assert r.info["l1_error_after"] < r.info["l1_error_before"]


def test_a_config_far_larger_than_its_checkpoint_is_refused_before_it_is_built():
    """A hostile config.json (29 billion parameters next to a 10k-number checkpoint) must not reach random
    initialisation: the size is probed on the meta device and the model refused."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from editaudit.worker.ml.archs.inspect import inspect_model

    cfg = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    state = ViTForImageClassification(cfg).state_dict()
    huge = {**cfg.to_dict(), "hidden_size": 4096, "intermediate_size": 65536, "num_hidden_layers": 48,
            "num_attention_heads": 32}
    with pytest.raises(ValueError, match="refused before building it"):
        inspect_model({"arch": "hf/vit", "config": huge}, state)
