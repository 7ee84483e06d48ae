"""rewrite through residual blocks and with per-pixel keys: the graph tells a block layer from a plain one, the
captured target is the block's own arithmetic, pixel keys bound ΔW at every kernel position, the API's manifest
refuses what the worker cannot do, and on the synthetic resnet18 a rank-1 edit of layer4.1.conv2 works."""

import copy

import pytest
import torch
from torch import nn

from editaudit.core import arch_manifest
from editaudit.worker.ml.archs.graph import topology, trace
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.edits.rewrite_target import Target, capture, norm_scale


class Block(nn.Module):
    """A ResNet basic block's tail on a stem: stem -> conv -> bn -> + stem output -> ReLU -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        out = self.bn(self.conv(s))
        out += s
        return self.fc(torch.relu(out).mean((2, 3)))


class Wrapped(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x * 2 - 1)


def _block():
    torch.manual_seed(0)
    net = Block().eval()
    with torch.no_grad():  # statistics far from identity, so a missing BatchNorm correction would show
        net.bn.running_var.uniform_(0.2, 3.0)
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.weight.uniform_(0.3, 2.0)
    return net


def test_the_graph_tells_a_block_layer_from_a_plain_one():
    net = _block()
    gm = trace(net)
    conv, stem, fc = topology(gm, "conv"), topology(gm, "stem"), topology(gm, "fc")
    assert (conv.kind, conv.norm, conv.relu is not None) == ("block", "bn", True)
    assert stem.kind == "layer"  # a ReLU first: the skip carries its (matched) post-ReLU output onward
    assert fc.kind == "layer"

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(self.lin(x))

    assert "2 times" in topology(trace(Shared()), "lin").reason


def test_the_manifest_marks_block_layers_and_refusals_for_the_api():
    assert arch_manifest.rewrite_kind("torchvision/resnet18", "layer4.1.conv2") == \
        "block: layer -> BatchNorm -> + skip -> ReLU"
    assert arch_manifest.rewrite_kind("torchvision/resnet18", "layer4.1.conv1") == "layer"
    assert arch_manifest.rewrite_kind("torchvision/vit_b_16", "encoder.layers.encoder_layer_0.mlp.3") == \
        "block: layer -> + skip"
    assert arch_manifest.rewrite_kind("torchvision/mobilenet_v2", "features.2.conv.1.0").startswith(
        "unsupported: a grouped")  # depthwise
    assert "stochastic_depth" in arch_manifest.rewrite_kind("torchvision/convnext_tiny", "features.1.0.block.5")
    assert arch_manifest.rewrite_kind("torchvision/resnet18", "bn1") is None


def test_the_captured_target_is_the_blocks_own_arithmetic():
    net = _block()
    model, gm = Wrapped(net), trace(net)
    topo = topology(gm, "conv")
    x, x_orig = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    got = capture(model, gm, x, [topo.add, topo.out], torch.device("cpu"))
    with torch.no_grad():
        s = torch.relu(net.stem(x * 2 - 1))
        pre = net.bn(net.conv(s)) + s
    assert torch.allclose(got[topo.add], pre, atol=1e-6) and torch.allclose(got[topo.out], pre.relu(), atol=1e-6)
    # a change c of conv's output moves the pre-activation by bn's scale * c: the corrected residual lands exactly
    orig = capture(model, gm, x_orig, [topo.add, topo.out], torch.device("cpu"))
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, 6).double()  # noqa: E731
    target = Target(rows(got[topo.add]), rows(orig[topo.add]), rows(orig[topo.out]),
                    norm_scale(net.bn).double(), relu=True)
    with torch.no_grad():
        shifted = net.bn(net.conv(s) + target.residual().float().view(5, 8, 8, 6).permute(0, 3, 1, 2)) + s
    assert torch.allclose(rows(shifted.relu()), target.goal, atol=1e-4)


@pytest.mark.parametrize("solver", ["closed_form", "iterative"])
def test_pixel_keys_bound_the_change_at_every_kernel_position(digits_wrapped, digits_texture, solver):
    sets = {k: TensorDataset.from_arrays(digits_texture[k]) for k in ("edit", "test")}
    r = run_edit("rewrite", digits_wrapped, sets["edit"], ["features.7"],
                 {"rank": 2, "keys": "pixel", "solver": solver, "steps": 100}, reference={"test": sets["test"]})
    before = dict(digits_wrapped.net.named_parameters())["features.7.weight"]
    delta = (dict(r.model.net.named_parameters())["features.7.weight"] - before).detach().double()
    assert r.info["keys_convention"] == "pixel" and r.info["directions"] == 2 * 9
    in_channel_span = delta.permute(1, 0, 2, 3).reshape(delta.shape[1], -1)  # every position's rows, side by side
    assert int(torch.linalg.matrix_rank(in_channel_span, rtol=1e-6)) <= 2
    assert all(int(torch.linalg.matrix_rank(delta[:, :, i, j], rtol=1e-6)) <= 2 for i in range(3) for j in range(3))
    assert int(torch.linalg.matrix_rank(delta.flatten(1), rtol=1e-6)) > 2  # not the patch convention's bound


@pytest.fixture(scope="module")
def synthetic_resnet():
    """resnet18 trained here on the seeded synthetic 3x32x32 shapes (about a minute on 2 cores), and the texture
    scenario at strength 0.5 (bench/edits.py's case)."""
    from editaudit.worker.ml.archs import build_inner, create_model
    from editaudit.worker.ml.scenarios import synthetic_arrays, synthetic_texture_scenario
    from editaudit.worker.ml.train import train_classifier

    spec = {"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32]}
    tr = synthetic_arrays("train", 1500)
    torch.manual_seed(0)
    net = build_inner(spec["arch"], 10, spec["input_shape"])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=3, batch_size=32, settle_epochs=1)
    model = create_model(spec)
    model.net.load_state_dict(net.state_dict())
    model.eval()

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = synthetic_texture_scenario(predict, n_train=1500, strength=0.5)
    return model, {k: TensorDataset.from_arrays(sc[k]) for k in ("edit", "test")}


def _acc(model, ds):
    with torch.no_grad():
        return float(sum(int((model(ds.x[i : i + 256]).argmax(1) == ds.y[i : i + 256]).sum())
                         for i in range(0, len(ds), 256)) / len(ds))


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["closed_form", "iterative"])
def test_a_rank_one_rewrite_of_a_resnet_blocks_last_conv_fixes_the_edit_set(synthetic_resnet, solver):
    """The reviewer's case: matching conv2's own output fixed 1 of 8; matching the block's output fixes most."""
    model, sets = synthetic_resnet
    clean = _acc(model, sets["test"])
    r = run_edit("rewrite", copy.deepcopy(model), sets["edit"], ["layer4.1.conv2"], {"rank": 1, "solver": solver},
                 reference={"test": sets["test"]})
    assert r.info["matched"].startswith("block output") and r.info["delta_rank"] == 1
    assert _acc(r.model, sets["edit"]) >= 0.75, r.info
    assert abs(_acc(r.model, sets["test"]) - clean) <= 0.01
