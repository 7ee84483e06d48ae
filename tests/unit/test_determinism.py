"""Seeded and deterministic: the same spec and data give bitwise-identical weights on CPU, for every edit method,
even when the global RNG is in another state between the two runs."""

import pytest
import torch

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits import run_edit

CASES = {
    "finetune": ([], {"steps": 5, "locality_set": "x", "locality_weight": 0.5}),
    "finetune_layer": (["fc1", "fc"], {"steps": 10, "batch_size": 4}),
    "enn": (["fc"], {"max_steps": 10, "batch_size": 4}),
    "low_rank": (["features.7"], {"rank": 2, "steps": 10, "batch_size": 4}),
    "rewrite": (["features.7"], {"rank": 2, "solver": "iterative", "steps": 20}),
    "interpolate": (["fc"], {"base": {"method": "low_rank", "hyperparams": {"steps": 10}},
                             "alpha": {"mode": "fixed", "alpha": 0.5}}),
}


def test_every_method_is_covered():
    assert set(CASES) == set(EDIT_PARAMS)


@pytest.fixture(scope="module")
def data(digits_texture):
    test = TensorDataset.from_arrays(digits_texture["test"])
    return (TensorDataset.from_arrays(digits_texture["edit"]),
            {"test": test, "locality": TensorDataset(test.x[:64], test.y[:64])})


@pytest.mark.parametrize("method", sorted(CASES))
def test_same_spec_same_data_same_bits(digits_wrapped, data, method):
    layers, hyperparams = CASES[method]
    edit_set, reference = data
    runs = []
    for noise_seed in (1, 2):
        torch.manual_seed(noise_seed)  # a different global RNG state must not matter
        torch.rand(7)
        runs.append(run_edit(method, digits_wrapped, edit_set, layers, hyperparams, reference=reference))
    a, b = (r.model.net.state_dict() for r in runs)
    assert runs[0].changed, "the edit changed something"
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
