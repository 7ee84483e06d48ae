"""The audit's speed paths: BatchNorm folding (same function, original untouched, fallback when untraceable) and
the batch size chosen from the input size and free memory."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from editaudit.contracts.attacks import parse_attack
from editaudit.worker.ml.archs import create_model
from editaudit.worker.ml.audit import batching
from editaudit.worker.ml.audit.attacks import make_attack
from editaudit.worker.ml.audit.batching import MAX_BATCH, MIN_BATCH, auto_batch_size
from editaudit.worker.ml.audit.fastpath import fold_batchnorm, prepare_model
from editaudit.worker.ml.data import digits_arrays


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _model(arch: str, shape: list[int]) -> nn.Module:
    torch.manual_seed(0)
    spec = {"arch": arch, "num_classes": 10, "input_shape": shape, "mean": [0.49, 0.48, 0.45],
            "std": [0.25, 0.24, 0.26]}  # the wrapper normalises inside: folding must see through it
    return _randomise_bn(create_model(spec))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch,folds", [("torchvision/resnet18", 20), ("editaudit/smallcnn", 3)])
def test_folding_keeps_the_logits_and_leaves_the_original(arch, folds):
    model = _model(arch, [3, 32, 32])
    before = _state(model)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    folded, n = fold_batchnorm(model)
    assert n == folds
    assert folded is not model and type(folded) is type(model)
    assert _bns(folded) == 0 and _bns(model) == folds
    with torch.no_grad():
        out = folded(x)
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max(), float((out - ref).abs().max() / ref.abs().max())
    # the original: same modules, same tensors, and it still computes what it did
    after = _state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


class _Shared(nn.Module):
    """conv1's output feeds bn1 and a residual add (not foldable); conv2 -> bn2 is."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.conv1(x)
        b = self.bn1(a) + a
        return self.bn2(self.conv2(b)).mean((2, 3))


def test_a_conv_whose_output_is_used_elsewhere_is_not_folded():
    model = _randomise_bn(_Shared())
    x = torch.rand(4, 3, 8, 8)
    folded, n = fold_batchnorm(model)
    assert n == 1
    assert isinstance(folded.bn1, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.sum() > 0:
            y = y * 2
        return y.mean((2, 3))


def test_an_untraceable_model_is_returned_unfolded(caplog):
    model = _randomise_bn(_Untraceable())
    with caplog.at_level(logging.INFO, logger="editaudit.worker.ml.audit.fastpath"):
        folded, n = fold_batchnorm(model)
    assert n == 0 and folded is model and isinstance(model.bn, nn.BatchNorm2d)
    assert "not fx-traceable" in caplog.text
    # prepare_model goes on with the model as it is
    eager, fast = prepare_model(model, torch.device("cpu"), "off", 4, fold_bn=True)
    assert eager is model and fast is model


def test_prepare_model_folds_only_when_asked():
    model = _model("editaudit/smallcnn", [3, 16, 16])
    eager, _ = prepare_model(copy.deepcopy(model), torch.device("cpu"), "off", 4)
    assert _bns(eager) == 3
    before = _state(model)
    eager, fast = prepare_model(model, torch.device("cpu"), "off", 4, fold_bn=True)
    assert _bns(eager) == 0 and fast is eager and eager is not model
    assert not any(p.requires_grad for p in eager.parameters())
    assert _bns(model) == 3 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(eager(x), model(x), rtol=1e-4, atol=1e-5)


def test_pgd_outcomes_agree_folded_vs_unfolded(digits_wrapped):
    te = digits_arrays("test")
    x, y = torch.from_numpy(te.x[:48]), torch.from_numpy(te.y[:48])
    model = copy.deepcopy(digits_wrapped)
    folded, n = fold_batchnorm(model)
    assert n == 3
    attack = make_attack(parse_attack({"name": "pgd", "norm": "inf", "eps": 0.1, "steps": 10, "step_size": 0.025,
                                       "random_start": True}))
    outcomes, clean = [], None
    for net in (model, folded):
        x_adv = attack.perturb(net, x, y, torch.Generator().manual_seed(0))
        with torch.no_grad():
            outcomes.append(net(x_adv).argmax(1) == y)
            clean = net(x).argmax(1) == y
    assert outcomes[0].float().mean() < clean.float().mean() - 0.05, "the attack must actually hurt"
    # Folding reorders float32 arithmetic (~1e-7 relative), and L-inf PGD steps along sign(grad): a gradient
    # component within float noise of 0 can flip and send one pixel the other way, which can in rare cases turn
    # an input's outcome. Hence agreement, not identity (on this model and seed it is identical in practice).
    agree = float((outcomes[0] == outcomes[1]).float().mean())
    assert agree >= 0.98, agree


def test_auto_batch_size_is_a_bounded_power_of_two(monkeypatch):
    cpu = torch.device("cpu")
    for free in (0, 1, 2**28, 2**32, 2**40):
        monkeypatch.setattr(batching, "free_memory_bytes", lambda _device, free=free: free)
        for shape in ((1, 8, 8), (3, 32, 32), (3, 224, 224), (3, 1024, 1024)):
            for n_params in (None, 25_000_000):
                b = auto_batch_size(shape, cpu, n_params)
                assert MIN_BATCH <= b <= MAX_BATCH and b & (b - 1) == 0, (free, shape, b)
                assert auto_batch_size(shape, cpu, n_params) == b  # deterministic


def test_auto_batch_size_shrinks_with_the_input_and_the_free_memory(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(batching, "free_memory_bytes", lambda _device: 4 * 1024**3)
    small, large = auto_batch_size((3, 8, 8), cpu), auto_batch_size((3, 224, 224), cpu)
    assert small > large, (small, large)
    plenty = auto_batch_size((3, 64, 64), cpu)
    monkeypatch.setattr(batching, "free_memory_bytes", lambda _device: 512 * 1024**2)
    assert auto_batch_size((3, 64, 64), cpu) < plenty
    assert auto_batch_size((3, 64, 64), cpu, n_params=60_000_000) <= auto_batch_size((3, 64, 64), cpu)


def test_free_memory_readers(monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1048576 kB\n")
    monkeypatch.setattr(batching, "MEMINFO", meminfo)
    assert batching.free_memory_bytes(cpu) == 1024**3
    monkeypatch.setattr(batching, "MEMINFO", tmp_path / "absent")
    assert batching.free_memory_bytes(cpu) > 0  # psutil's reading, or the conservative constant
