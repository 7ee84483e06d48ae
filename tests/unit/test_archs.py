"""Architecture registry and the torch-free signature manifest the API uses."""

import pytest
import torch

from editaudit.core import arch_manifest as manifest
from editaudit.worker.ml.archs import ARCHS, build_inner, create_model, load_state_dict_strict
from editaudit.worker.ml.archs.signatures import signature


@pytest.mark.parametrize("arch", ["editaudit/smallcnn", "torchvision/resnet18", "torchvision/mobilenet_v3_small",
                                  "torchvision/regnet_y_400mf", "torchvision/vit_b_16"])
def test_manifest_matches_the_real_architecture(arch):
    assert manifest.manifest()["archs"][arch] == signature(arch)


def test_manifest_lists_every_registered_arch():
    assert set(manifest.arch_names()) == set(ARCHS)


@pytest.mark.parametrize("num_classes,shape", [(10, [1, 8, 8]), (3, [3, 32, 32])])
def test_expected_shapes_follow_num_classes_and_channels(num_classes, shape):
    net = build_inner("editaudit/smallcnn", num_classes, shape)
    real = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert manifest.expected_shapes("editaudit/smallcnn", num_classes, shape[0]) == real


def test_smallcnn_runs_on_8x8_and_32x32():
    for shape in ([1, 8, 8], [3, 32, 32]):
        m = create_model({"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": shape})
        assert m(torch.rand(2, *shape)).shape == (2, 10)


def test_normalisation_is_inside_the_model_and_not_in_the_state_dict():
    spec = {"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    m = create_model(spec)
    assert set(m.net.state_dict()) == set(build_inner("torchvision/resnet18", 10, [3, 32, 32]).state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(m(x), m.net((x - 0.5) / 0.25))


def test_mismatching_state_dict_names_the_key():
    net = build_inner("editaudit/smallcnn", 10, [1, 8, 8])
    state = net.state_dict()
    state["fc.weight"] = torch.zeros(3, 128)
    with pytest.raises(ValueError, match="'fc.weight' has shape"):
        load_state_dict_strict(build_inner("editaudit/smallcnn", 10, [1, 8, 8]), state)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(KeyError, match="valid names"):
        build_inner("torchvision/nope", 10, [3, 32, 32])


def test_the_manifest_records_each_keys_kind_of_dtype(monkeypatch):
    """Counters are int, weights and float buffers float; a manifest from before dtypes (version 1) still reads,
    and then checks shapes only."""
    from editaudit.contracts.formats import TensorInfo

    assert manifest.expected_dtype("editaudit/smallcnn", "features.1.num_batches_tracked") == "int"
    assert manifest.expected_dtype("editaudit/smallcnn", "fc.weight") == "float"
    shapes = manifest.expected_shapes("editaudit/smallcnn", 10, 1)
    header = {k: TensorInfo("I64" if k.endswith("num_batches_tracked") else "F32", v) for k, v in shapes.items()}
    assert manifest.first_mismatch("editaudit/smallcnn", 10, 1, header) is None
    header["fc.bias"] = TensorInfo("I32", shapes["fc.bias"])
    assert "'fc.bias' is I32, expected a float dtype" in manifest.first_mismatch("editaudit/smallcnn", 10, 1, header)
    old = {**manifest.manifest(), "version": 1,
           "archs": {a: {k: v for k, v in e.items() if k != "dtypes"} for a, e in manifest.manifest()["archs"].items()}}
    monkeypatch.setattr(manifest, "manifest", lambda: old)
    assert manifest.expected_dtype("editaudit/smallcnn", "fc.bias") is None
    assert manifest.first_mismatch("editaudit/smallcnn", 10, 1, header) is None


def test_the_worker_refuses_a_state_dict_of_the_wrong_kind_of_dtype():
    net = build_inner("editaudit/smallcnn", 10, [1, 8, 8])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["fc.weight"] = state["fc.weight"].to(torch.int32)
    with pytest.raises(ValueError, match="'fc.weight' is torch.int32, expected a float dtype"):
        load_state_dict_strict(net, state)
    state["fc.weight"] = state["fc.weight"].to(torch.float16)  # another width of the right kind loads
    load_state_dict_strict(net, state)
