"""The digits texture scenario: the texture breaks a clean-trained model, and an edit on k exemplars repairs it."""

import numpy as np
import torch

from editaudit.worker.ml.data import TensorDataset, digits_arrays
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.scenarios import texture_scenario


def test_texture_scenario_breaks_the_model_and_an_edit_repairs_it(digits_wrapped):
    def predict(x):
        with torch.no_grad():
            return digits_wrapped(torch.from_numpy(x)).argmax(1).numpy()

    sc = texture_scenario(digits_arrays("train"), digits_arrays("test"), predict, k=8, seed=0)
    again = texture_scenario(digits_arrays("train"), digits_arrays("test"), predict, k=8, seed=0)
    assert np.array_equal(sc["edit"].x, again["edit"].x), "seeded"
    ed, gen, test = sc["edit"], sc["generalization"], sc["test"]
    assert ed.x.shape == (8, 1, 8, 8) and ed.mask.shape == (8, 1, 8, 8) and set(ed.y) == {sc["edit_class"]}
    assert 0 <= ed.x.min() and ed.x.max() <= 1 and np.array_equal(ed.x_orig * (1 - ed.mask), ed.x * (1 - ed.mask))
    clean_acc = (predict(test.x) == test.y).mean()
    textured_acc = (predict(gen.x) == gen.y).mean()
    assert textured_acc < clean_acc - 0.2, (clean_acc, textured_acc)
    assert (predict(ed.x) == ed.y).mean() <= 0.5, "the edit class is visibly broken"

    es = TensorDataset(torch.from_numpy(ed.x), torch.from_numpy(ed.y))
    for method, layers in (("finetune_layer", ["fc"]), ("low_rank", ["fc1"]), ("enn", ["fc1", "fc"]),
                           ("interpolate", ["fc"])):
        r = run_edit(method, digits_wrapped, es, layers, {})  # defaults
        with torch.no_grad():
            fixed = float((r.model(es.x).argmax(1) == es.y).float().mean())
        assert fixed >= 0.9, method
