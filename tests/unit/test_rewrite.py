"""rewrite: keys/values reproduce the layer; on the digits texture scenario the defaults fix the edit set, only the
named layer moves, rank(ΔW) <= r; the second moment goes through the memo; bad input is refused with a reason."""

import pytest
import torch
from torch import nn

from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.edits.rewrite import keys_of, layer_io, values_of


@pytest.fixture(scope="module")
def scenario(digits_texture):
    return {k: TensorDataset.from_arrays(digits_texture[k]) for k in ("edit", "generalization", "test")}


def _acc(model, ds):
    with torch.no_grad():
        return float((model(ds.x).argmax(1) == ds.y).float().mean())


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1),
                                   nn.Conv2d(3, 4, (3, 1), dilation=2), nn.Linear(7, 4)])
def test_keys_and_values_are_the_layers_linear_map(layer):
    x = torch.rand(2, 3, 9, 9) if isinstance(layer, nn.Conv2d) else torch.rand(6, 7)
    model = nn.Sequential(nn.Identity(), layer)
    inp, out = layer_io(model, layer, x, torch.device("cpu"))
    k, v = keys_of(layer, inp), values_of(layer, out)
    assert torch.allclose(k @ layer.weight.flatten(1).T + layer.bias, v, atol=1e-5)


@pytest.mark.parametrize("solver", ["closed_form", "iterative"])
@pytest.mark.parametrize("layer,rank", [("fc1", 1), ("fc1", 3), ("features.7", 2)])
def test_rewrite_fixes_the_edit_set_changes_one_layer_and_respects_the_rank(digits_wrapped, scenario, layer, rank,
                                                                           solver):
    es = scenario["edit"]
    assert _acc(digits_wrapped, es) <= 0.5
    r = run_edit("rewrite", digits_wrapped, es, [layer], {"rank": rank, "solver": solver},
                 reference={"test": scenario["test"]})
    assert _acc(r.model, es) >= 0.9, r.info
    assert r.changed == [f"{layer}.weight"]
    assert r.info["l1_error_after"] < r.info["l1_error_before"]
    assert _acc(r.model, scenario["test"]) >= _acc(digits_wrapped, scenario["test"]) - 0.02
    before = dict(digits_wrapped.net.named_parameters())[f"{layer}.weight"]
    delta = (dict(r.model.net.named_parameters())[f"{layer}.weight"] - before).detach()
    # the default keys (auto): patch on a Linear, so rank bounds the whole ΔW; pixel on a 3x3 conv, so rank bounds
    # ΔW at every kernel position (float32 tolerance)
    assert r.info["keys_convention"] == ("pixel" if delta.dim() == 4 else "patch")
    assert r.info["keys_requested"] == "auto"
    per_position = [delta] if delta.dim() == 2 else [delta[:, :, i, j] for i in range(3) for j in range(3)]
    assert all(int(torch.linalg.matrix_rank(d)) <= rank for d in per_position)
    assert delta.dim() == 4 or r.info["delta_rank"] <= rank


def test_rewrite_defaults_generalise_beyond_the_edit_set(digits_wrapped, scenario):
    r = run_edit("rewrite", digits_wrapped, scenario["edit"], ["fc1"], {}, reference={"test": scenario["test"]})
    assert _acc(r.model, scenario["generalization"]) > _acc(digits_wrapped, scenario["generalization"]) + 0.1


def test_second_moment_goes_through_the_memo(digits_wrapped, scenario):
    kept, computed = {}, []

    def memo(name, compute):
        if name not in kept:
            computed.append(name)
            kept[name] = compute()
        return kept[name]

    runs = [run_edit("rewrite", digits_wrapped, scenario["edit"], ["fc1"], {}, reference={"test": scenario["test"]},
                     memo=memo) for _ in range(2)]
    assert len(computed) == 1 and "fc1" in computed[0]
    first, second = (r.model.state_dict() for r in runs)
    assert list(first) == list(second)
    assert all(torch.equal(a, b) for a, b in zip(first.values(), second.values(), strict=True))


def test_rewrite_refuses_what_it_cannot_do(digits_wrapped, scenario):
    es = scenario["edit"]
    with pytest.raises(ValueError, match="x_orig"):
        run_edit("rewrite", digits_wrapped, TensorDataset(es.x, es.y), ["fc1"], {})
    with pytest.raises(ValueError, match="Linear or Conv2d"):
        run_edit("rewrite", digits_wrapped, es, ["features.1"], {})  # BatchNorm
    with pytest.raises(ValueError, match="exactly one layer"):
        run_edit("rewrite", digits_wrapped, es, ["fc1", "fc"], {})


def test_interpolate_towards_a_rewrite(digits_wrapped, scenario):
    r = run_edit("interpolate", digits_wrapped, scenario["edit"], ["fc1"], {"base": {"method": "rewrite"}},
                 reference={"test": scenario["test"]})
    # by default alpha reaches 80% of what the full rewrite gains on the edit set
    assert _acc(r.model, scenario["edit"]) >= r.info["alpha_target"]["threshold"] > 0.5
    assert r.changed == ["fc1.weight"] and 0 < r.info["alpha"] <= 1


@pytest.mark.parametrize("shape,rank", [((10, 128), 1), ((64, 32, 3, 3), 3), ((300, 20), 20), ((5, 7), 0)])
def test_numerical_rank_agrees_with_an_svd(shape, rank):
    from editaudit.worker.ml.edits.base import numerical_rank

    g = torch.Generator().manual_seed(0)
    flat = (shape[0], int(torch.tensor(shape[1:]).prod()))
    m = (torch.randn(flat[0], rank, generator=g) @ torch.randn(rank, flat[1], generator=g)).view(shape)
    w = torch.randn(shape, generator=g)
    delta = (w + m) - w  # float32 rounding noise, as in a real weight change
    assert numerical_rank(delta) == rank == int(torch.linalg.matrix_rank(delta.flatten(1)))


def test_values_are_the_layers_own_output_even_before_an_inplace_relu():
    layer = nn.Linear(6, 5)
    model = nn.Sequential(layer, nn.ReLU(inplace=True))
    x = torch.randn(32, 6)
    _, out = layer_io(model, layer, x, torch.device("cpu"))
    assert torch.allclose(out, layer(x)) and float(out.min()) < 0, "captured before the ReLU overwrote it"


def test_a_layer_the_model_never_calls_is_a_clear_error():
    unused = nn.Linear(6, 5)
    model = nn.Sequential(nn.Linear(6, 6))
    model.add_module("unused", unused)
    model.forward = lambda x: model[0](x)
    with pytest.raises(ValueError, match="never called"):
        layer_io(model, unused, torch.randn(2, 6), torch.device("cpu"))
