"""1-layer interpolation: endpoints exact, only the layer moves, and the alpha search is cheap on monotone paths."""

import math

import pytest
import torch

from editaudit.worker.ml.data import TensorDataset, digits_arrays, load_bytes
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.edits.interpolate import interpolated


@pytest.fixture(scope="module")
def setup(digits_wrapped, failures_npz):
    te = digits_arrays("test")
    test = TensorDataset(torch.from_numpy(te.x), torch.from_numpy(te.y))
    return digits_wrapped, load_bytes(failures_npz, "f.npz"), test


def test_endpoints_reproduce_original_and_single_layer_edit(setup):
    model, es, test = setup
    w1 = run_edit("finetune_layer", model, es, ["fc"], {"steps": 30})
    with torch.no_grad():
        assert torch.equal(interpolated(model, w1.model, "fc", 0.0)(test.x), model(test.x))
        assert torch.equal(interpolated(model, w1.model, "fc", 1.0)(test.x), w1.model(test.x))


def test_fixed_alpha_changes_only_the_layer(setup):
    model, es, _ = setup
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "fixed", "alpha": 0.5}})
    assert set(r.changed) == {"fc.weight", "fc.bias"} and r.info["alpha"] == 0.5


def test_min_alpha_search_is_monotone_and_uses_at_most_eight_evaluations(setup):
    """alpha = 0 (the original model), then 7 bisection steps for a 1% resolution."""
    model, es, _ = setup
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "min_alpha", "target": 0.9}})
    assert r.info["alpha_curve_monotone"] and r.info["alpha_search"] == "bisection"
    assert r.info["alpha_evaluations"] <= 8 and r.info["alpha_curve"][0]["alpha"] == 0.0
    assert 0 < r.info["alpha"] < 1
    with torch.no_grad():
        acc = float((r.model(es.x).argmax(1) == es.y).float().mean())
    assert acc >= 0.9
    curve = r.info["alpha_curve"]
    assert [p["alpha"] for p in curve] == sorted(p["alpha"] for p in curve)


def test_non_monotone_path_falls_back_to_a_grid(setup, monkeypatch):
    from editaudit.worker.ml.edits import interpolate as li

    model, es, _ = setup
    # alpha = 0, then bisection visits 0.5, 0.75, 0.875: accuracy 0.1, 0.1, 0.5, then 0.3 -- lower further along
    wiggle = iter([0.1, 0.1, 0.5, 0.3] + [0.95] * 100)
    monkeypatch.setattr(li, "_accuracy", lambda *a: next(wiggle))
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"target": 0.9, "grid_points": 11}})
    assert r.info["alpha_search"].startswith("grid") and not r.info["alpha_curve_monotone"]
    assert r.info["alpha_evaluations"] >= 11


def test_best_robust_needs_test_and_records_robust_accuracy(setup):
    model, es, test = setup
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "best_robust", "robust_samples": 64,
                                                              "grid_points": 6}}, reference={"test": test})
    assert all("test.adv.pgd.accuracy" in p["metrics"] for p in r.info["alpha_curve"] if p["alpha"] >= r.info["alpha"])
    with pytest.raises(ValueError, match="test set"):
        run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "best_robust"}})


def test_a_target_already_met_returns_alpha_zero(setup):
    model, es, test = setup
    r = run_edit("interpolate", model, TensorDataset(test.x[:32], test.y[:32]), ["fc"],
                 {"alpha": {"mode": "min_alpha", "target": 0.5}})
    assert r.info["alpha"] == 0.0 and r.info["alpha_search"] == "target met at alpha = 0"
    assert r.info["alpha_evaluations"] == 1 and r.changed == []
    assert r.audit["mli"]["smaller_alpha_excluded"].startswith("yes")


def test_the_mli_check_says_when_bisection_cannot_exclude_a_smaller_window(setup):
    model, es, _ = setup
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "min_alpha", "target": 0.9}})
    note = r.audit["mli"]["smaller_alpha_excluded"]
    assert note.startswith("no: only") and "cannot be excluded" in note


def test_the_default_threshold_is_a_share_of_the_full_edits_gain_so_1li_trades(setup):
    """An absolute 0.9 on a small edit set asks for nearly all of it, which put alpha near 1; the default asks for
    80% of what the full edit gains, so alpha is smaller and the model moves less."""
    model, es, test = setup
    absolute = run_edit("interpolate", model, es, ["fc"], {"alpha": {"target": 0.9}}, reference={"test": test})
    default = run_edit("interpolate", model, es, ["fc"], {}, reference={"test": test})
    curve = {p["alpha"]: p["metrics"] for p in default.info["alpha_curve"]}
    a0, a1 = curve[0.0]["edit.accuracy"], curve[1.0]["edit.accuracy"]
    n = len(es)  # the threshold is the smallest k/n at or above 80% of the gain
    assert default.info["alpha_target"]["threshold"] == math.ceil((a0 + 0.8 * (a1 - a0)) * n - 1e-6) / n
    assert curve[round(default.info["alpha"], 6)]["edit.accuracy"] >= default.info["alpha_target"]["threshold"]
    assert default.info["alpha"] < absolute.info["alpha"]
    # the trade along the path is stored: evenly spaced alphas with edit, test and PGD accuracy at each
    for a in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert {"edit.accuracy", "test.accuracy", "test.adv.pgd.accuracy"} <= set(curve[a])
    assert default.audit["mli"]["target_split"] == "edit" and default.audit["mli"]["evaluations"] < len(curve)


def test_auto_target_split_is_the_generalization_set_when_there_is_one(setup):
    model, es, test = setup
    gen = TensorDataset(test.x[:200], test.y[:200])
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"curve_robust": False}},
                 reference={"generalization": gen})
    assert r.audit["mli"]["target_split"] == "generalization"
    assert all("generalization.accuracy" in p["metrics"] for p in r.info["alpha_curve"])


def test_a_threshold_on_the_k_over_n_grid_is_reachable():
    """0.3 + 1.0 * (0.9 - 0.3) is 0.9000000000000001 in floats: compared as is, 9 of 10 would not reach it."""
    from editaudit.worker.ml.edits.interpolate import AlphaSearch

    class Stub(AlphaSearch):
        def __init__(self):
            self.threshold, self.target_ds, self.points = None, [0] * 10, {}
            self.pol = type("P", (), {"gain_share": 1.0})()

        def score(self, alpha):
            return {0.0: 0.3, 1.0: 0.9}[alpha]

    assert Stub().resolve_threshold() == 0.9


def test_fixed_mode_curve_shows_a_dip_and_monotone_says_so(setup, monkeypatch):
    from editaudit.worker.ml.edits import interpolate as li

    model, es, _ = setup
    falls = iter([0.125, 0.125, 0.0, 0.0, 0.0, 0.0] + [0.0] * 10)  # alpha 1 first (fixed), then 0, .25, .5, .75
    monkeypatch.setattr(li, "_accuracy", lambda *a: next(falls))
    r = run_edit("interpolate", model, es, ["fc"], {"alpha": {"mode": "fixed", "alpha": 1.0}})
    assert r.audit["mli"]["monotone"] is False and r.audit["mli"]["smaller_alpha_excluded"] is None
