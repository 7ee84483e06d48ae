"""Direct low-rank editing: fixes the edit set, moves only its layer, and rank(dW) <= r."""

import pytest
import torch

from editaudit.worker.ml.data import load_bytes
from editaudit.worker.ml.edits import run_edit


@pytest.mark.parametrize("layer,rank", [("fc", 1), ("fc1", 2), ("features.7", 4)])
def test_low_rank_edit(digits_wrapped, failures_npz, layer, rank):
    es = load_bytes(failures_npz, "f.npz")
    r = run_edit("low_rank", digits_wrapped, es, [layer], {"rank": rank})
    before = digits_wrapped.net.state_dict()[f"{layer}.weight"]
    delta = r.model.net.state_dict()[f"{layer}.weight"] - before
    assert r.changed == [f"{layer}.weight"]
    assert int(torch.linalg.matrix_rank(delta.flatten(1))) <= rank and r.info["delta_rank"] <= rank
    with torch.no_grad():
        acc = float((r.model(es.x).argmax(1) == es.y).float().mean())
    assert acc >= 0.9, acc


def test_rank_beyond_the_layer_is_refused(digits_wrapped, failures_npz):
    with pytest.raises(ValueError, match="exceeds"):
        run_edit("low_rank", digits_wrapped, load_bytes(failures_npz, "f.npz"), ["fc"], {"rank": 11})


def test_single_layer_methods_refuse_several_layers(digits_wrapped, failures_npz):
    for method in ("low_rank", "interpolate"):
        with pytest.raises(ValueError, match="exactly one layer"):
            run_edit(method, digits_wrapped, load_bytes(failures_npz, "f.npz"), ["fc", "fc1"], {})
