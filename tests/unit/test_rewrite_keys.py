"""rewrite's default keys and inner layers: `keys: auto` resolves by the layer's weight (pixel for a conv, patch for a
linear layer) and the info records what ran; at a residual block's last conv the default
fixes at least as many edit images as the old default (patch) on a small seeded scenario; a layer inside a residual
block (its output reaches the add through another layer) is found in the traced graph and edited with a warning
naming the layer that ends the block (bench/rewrite_keys.py measures both)."""

import copy

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, resnet50

from editaudit.contracts.edits import RewriteParams
from editaudit.worker.ml.archs.graph import topology, trace
from editaudit.worker.ml.archs.registry import Normalized
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.edits.rewrite_target import block_end_after


class TinyResNet(nn.Module):
    """bench/rewrite_keys.py's tiny ResNet: torchvision's BasicBlock at 16 and 32 channels."""

    def __init__(self, w: int = 16):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)
        down = nn.Sequential(nn.Conv2d(w, 2 * w, 1, 2, bias=False), nn.BatchNorm2d(2 * w))
        self.layer1 = nn.Sequential(BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2, down), BasicBlock(2 * w, 2 * w))
        self.fc = nn.Linear(2 * w, 10)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))).mean((2, 3)))


class Mlp(nn.Module):
    """A transformer MLP block: x + fc2(GELU(fc1(x)))."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2, self.head = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(x + self.fc2(self.act(self.fc1(x))))


def test_auto_keys_resolve_by_the_layers_weight():
    p = RewriteParams()
    assert p.keys == "auto"
    assert p.keys_for((32, 16, 3, 3)) == "pixel" and p.keys_for((32, 16, 1, 1)) == "pixel"
    assert p.keys_for((10, 32)) == "patch"
    assert RewriteParams(keys="patch").keys_for((32, 16, 3, 3)) == "patch"
    assert RewriteParams(keys="pixel").keys_for((10, 32)) == "pixel"
    # the rank the API allows follows the resolved convention: input channels for pixel keys
    assert p.rank_limit((32, 16, 3, 3)) == 16 and RewriteParams(keys="patch").rank_limit((32, 16, 3, 3)) == 32
    assert p.rank_limit((8, 16, 1, 1)) == 16 and p.rank_limit((10, 32)) == 10


def _inner(net: nn.Module, input_shape=None) -> dict[str, str | None]:
    gm = trace(net, input_shape)
    return {name: block_end_after(gm, topology(gm, name)) for name, m in net.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_inner_layers_are_found_in_the_traced_graph():
    assert _inner(TinyResNet()) == {
        "conv1": None,  # the stem: its output feeds both the block and the skip
        "layer1.0.conv1": "layer1.0.conv2", "layer1.0.conv2": None,
        "layer2.0.conv1": "layer2.0.conv2", "layer2.0.conv2": None, "layer2.0.downsample.0": None,
        "layer2.1.conv1": "layer2.1.conv2", "layer2.1.conv2": None, "fc": None}
    bottleneck = _inner(resnet50())
    assert bottleneck["layer3.2.conv1"] == bottleneck["layer3.2.conv2"] == "layer3.2.conv3"
    assert bottleneck["layer3.2.conv3"] is None and bottleneck["conv1"] is None
    assert _inner(Mlp()) == {"fc1": "fc2", "fc2": None, "head": None}
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())
    assert _inner(plain) == {"0": None, "3": None}  # no residual add: every layer's output is what comes next


@pytest.fixture(scope="module")
def tiny():
    """The tiny ResNet trained on 1000 seeded synthetic 3x32x32 images (a few seconds on one core), and the texture
    scenario at strength 0.5 (bench/rewrite_keys.py's case, seed 0)."""
    from editaudit.worker.ml.scenarios import synthetic_arrays, synthetic_texture_scenario
    from editaudit.worker.ml.train import train_classifier

    tr = synthetic_arrays("train", 1000)
    torch.manual_seed(0)
    net = TinyResNet()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is as fast alone, and much faster on a busy machine
    try:
        train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=3, batch_size=32,
                         settle_epochs=1)
    finally:
        torch.set_num_threads(threads)
    model = Normalized(net, None, None, 3).eval()

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = synthetic_texture_scenario(predict, n_train=1000, n_test=300, strength=0.5)
    return model, {k: TensorDataset.from_arrays(sc[k]) for k in ("edit", "test")}


def _fixed(model, ds) -> int:
    with torch.no_grad():
        return int((model(ds.x).argmax(1) == ds.y).sum())


def _acc(model, ds) -> float:
    with torch.no_grad():
        return float((model(ds.x).argmax(1) == ds.y).float().mean())


def test_the_default_keys_fix_at_least_as_many_at_a_blocks_last_conv(tiny):
    model, sets = tiny
    es, test = sets["edit"], sets["test"]
    assert _fixed(model, es) <= 2
    totals = {"patch": 0, "auto": 0}
    for layer in ("layer2.0.conv2", "layer2.1.conv2"):
        fixed = {}
        for keys in ("patch", "auto"):
            r = run_edit("rewrite", copy.deepcopy(model), es, [layer], {"keys": keys}, reference={"test": test})
            assert r.info["matched"].startswith("block output") and "warning" not in r.info
            assert r.info["keys_requested"] == keys
            assert r.info["keys_convention"] == ("patch" if keys == "patch" else "pixel")
            assert _acc(r.model, test) >= _acc(model, test) - 0.02
            fixed[keys] = _fixed(r.model, es)
            totals[keys] += fixed[keys]
        assert fixed["auto"] >= fixed["patch"], (layer, fixed)
    assert totals["auto"] > totals["patch"] and totals["auto"] >= 14, totals  # measured: 16 against 2


def test_an_inner_conv_is_edited_with_a_warning_naming_the_blocks_last_conv(tiny):
    model, sets = tiny
    reference = {"test": sets["test"]}
    r = run_edit("rewrite", copy.deepcopy(model), sets["edit"], ["layer2.1.conv1"], {}, reference=reference)
    assert r.changed == ["layer2.1.conv1.weight"] and r.info["matched"] == "layer output"
    warning = r.info["warning"]
    assert "inside a residual block" in warning and "'layer2.1.conv2'" in warning and "skip" in warning
    # the stem and the classifier are plain layers: no warning
    for layer in ("conv1", "fc"):
        r = run_edit("rewrite", copy.deepcopy(model), sets["edit"], [layer], {}, reference=reference)
        assert "warning" not in r.info, (layer, r.info["warning"])
