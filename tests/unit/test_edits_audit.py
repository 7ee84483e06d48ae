"""Edit methods and the audit runner on the digits model (CPU, seconds)."""

import copy

import pytest
import torch

from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.worker.ml.audit.runner import run_audit, stratified_indices
from editaudit.worker.ml.data import TensorDataset, digits_arrays, load_bytes
from editaudit.worker.ml.edits import EditMethod, edit_method, run_edit


@pytest.fixture(scope="module")
def setup(digits_wrapped, failures_npz):
    te = digits_arrays("test")
    test = TensorDataset(torch.from_numpy(te.x), torch.from_numpy(te.y))
    return digits_wrapped, load_bytes(failures_npz, "f.npz"), test


def test_every_method_has_a_spec_and_an_implementation():
    for name, cls in EDIT_PARAMS.items():
        assert issubclass(edit_method(cls), EditMethod), name


def test_finetune_layer_fixes_the_edit_set_and_changes_only_that_layer(setup):
    model, edit_set, _ = setup
    r = run_edit("finetune_layer", model, edit_set, ["fc"], {})
    with torch.no_grad():
        acc = float((r.model(edit_set.x).argmax(1) == edit_set.y).float().mean())
    assert acc >= 0.9
    assert set(r.changed) == {"fc.weight", "fc.bias"}
    # the original model is untouched
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(),
                                                 copy.deepcopy(setup[0]).net.state_dict().values(), strict=True))


def test_finetune_is_deterministic(setup):
    model, edit_set, _ = setup
    a = run_edit("finetune", model, edit_set, [], {"steps": 5}).model.net.state_dict()
    b = run_edit("finetune", model, edit_set, [], {"steps": 5}).model.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_during_editing_fails_readably(setup):
    model, edit_set, _ = setup
    with pytest.raises(FloatingPointError, match="smaller lr|NaN"):
        run_edit("finetune", model, edit_set, [], {"lr": 10.0, "steps": 50, "optimizer": "sgd"})


def test_unknown_layer_is_refused(setup):
    model, edit_set, _ = setup
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        run_edit("finetune_layer", model, edit_set, ["fc9"], {})


def test_unchanged_candidate_gives_zero_deltas(setup):
    model, edit_set, test = setup
    cfg = {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.05, "steps": 3}], "max_samples": 100,
           "corruptions": {"names": ["gaussian_noise", "glass_blur", "fog"], "severities": [1, 5]}}
    out = run_audit(model, copy.deepcopy(model), {"test": test, "edit": edit_set}, cfg).result
    for name, d in out.deltas.items():  # a success rate is undefined where a model gets nothing right
        assert d.value == 0.0 or (d.value is None and name.endswith(".success_rate")), name
        if d.p_value is not None:
            assert d.p_value == 1.0
    assert out.metrics.candidate["test.agreement"] == 1.0
    assert out.metrics.candidate["test.corruption.mean.ce"] == 1.0
    for name in ("test.corruption.fog.5.accuracy", "test.corruption.fog.mean.accuracy",
                 "test.corruption.mean.1.accuracy", "test.corruption.mean.accuracy", "edit.corruption.glass_blur.ce"):
        assert name in out.metrics.candidate, name
    assert out.samples["test"].n == 100 and len(out.samples["test"].ids) == 100


def test_damaged_candidate_is_detected(setup):
    model, edit_set, test = setup
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        damaged.net.fc.weight.mul_(-1.0)
    out = run_audit(model, damaged, {"test": test, "edit": edit_set},
                    {"attacks": [], "corruptions": {"names": ["contrast"], "severities": [1]}}).result
    d = out.deltas["test.accuracy"]
    assert d.value < -0.5 and d.p_value < 1e-6 and d.ci95[1] < 0
    assert out.metrics.candidate["test.drawdown"] == pytest.approx(-d.value)
    lo, hi = out.intervals.candidate["test.accuracy"]
    assert lo <= out.metrics.candidate["test.accuracy"] <= hi
    assert out.deltas["test.corruption.mean.accuracy"].p_value < 1e-6
    assert out.metrics.candidate["test.corruption.contrast.ce"] > 1.2


def test_stratified_subset_keeps_class_shares():
    import numpy as np

    y = np.array([0] * 80 + [1] * 20)
    idx = stratified_indices(y, 10, seed=0)
    assert len(idx) == 10 and (y[idx] == 1).sum() == 2


def test_corruption_error_is_left_out_when_the_baseline_makes_no_errors():
    from editaudit.worker.ml.audit.runner import Evaluation, compare

    key = "test.corruption.fog.1.accuracy"
    base = Evaluation(preds={"test.accuracy": [0, 1], key: [0, 1]}, labels={"test": [0, 1]})
    cand = Evaluation(preds={"test.accuracy": [0, 1], key: [0, 0]}, labels={"test": [0, 1]})
    out = compare(base, cand)
    assert "test.corruption.fog.ce" not in out["metrics"]["candidate"]
    assert out["metrics"]["candidate"][key] == 0.5


def test_finetune_from_layer_moves_only_that_layer_and_after(setup):
    model, edit_set, _ = setup
    r = run_edit("finetune", model, edit_set, [], {"from_layer": "fc1"})
    assert set(r.changed) == {"fc1.weight", "fc1.bias", "fc.weight", "fc.bias"}


def test_locality_term_keeps_more_predictions(setup):
    model, edit_set, test = setup
    loc = TensorDataset(test.x[1::2], test.y[1::2])  # half for the locality term, the other half to measure
    held = TensorDataset(test.x[::2], test.y[::2])
    params = {"steps": 60, "lr": 3e-3}
    plain = run_edit("finetune_layer", model, edit_set, ["fc"], params)
    local = run_edit("finetune_layer", model, edit_set, ["fc"], {**params, "locality_set": "x", "locality_weight": 5},
                     reference={"locality": loc})
    with torch.no_grad():
        base = model(held.x).argmax(1)
        agree = [float((m.model(held.x).argmax(1) == base).float().mean()) for m in (plain, local)]
    assert local.info["locality"] and agree[1] > agree[0], agree


def test_enn_stops_once_the_edit_set_is_fixed(setup):
    model, edit_set, _ = setup
    r = run_edit("enn", model, edit_set, ["fc1", "fc"], {"max_steps": 200})
    assert r.info["edit_set_fixed"] and r.info["steps"] < 200
    with torch.no_grad():
        assert bool((r.model(edit_set.x).argmax(1) == edit_set.y).all())
    assert {k.rsplit(".", 1)[0] for k in r.changed} <= {"fc1", "fc"}


def test_sweep_table_picks_the_best_layer_per_metric_in_the_right_direction():
    from editaudit.worker.jobs.sweep import sweep_table

    rows = [{"layer": "a", "status": "succeeded", "metrics": {"test.accuracy": 0.9, "test.drawdown": 0.05,
                                                              "test.corruption.mean.ce": 0.8}},
            {"layer": "b", "status": "succeeded", "metrics": {"test.accuracy": 0.8, "test.drawdown": 0.15,
                                                              "test.corruption.mean.ce": 1.1}},
            {"layer": "c", "status": "failed", "metrics": {}}]
    t = sweep_table(rows)
    assert t["metrics"] == ["test.accuracy", "test.corruption.mean.ce", "test.drawdown"]
    assert t["best"] == {"test.accuracy": "a", "test.drawdown": "a", "test.corruption.mean.ce": "a"}
    assert sweep_table([{"layer": "c", "status": "failed", "metrics": {}}])["best"] == {}


@pytest.mark.parametrize("method,layers,hp", [
    ("finetune", [], {"lr": 1e-3}), ("finetune_layer", ["fc"], {"lr": 3e-3, "steps": 100}),
    ("finetune_layer", ["features.7"], {"steps": 100}), ("low_rank", ["fc"], {"lr": 3e-2})])
def test_gradient_defaults_do_not_collapse_the_model_to_the_edit_class(digits_wrapped, digits_texture, method,
                                                                        layers, hp):
    """8 textured digits of one class: without a stop and a locality term, `hp` collapses the model (most of the
    test set predicted as that class); the method's defaults (both on, the locality set held out of the test split)
    keep clean accuracy on the rest within a few points."""
    from editaudit.worker.ml.data import hold_out

    model = digits_wrapped
    edit_set, test = (TensorDataset.from_arrays(digits_texture[k]) for k in ("edit", "test"))
    rest, held, _ = hold_out(test, seed=0)
    runs = {"old": run_edit(method, model, edit_set, layers, {**hp, "stop_when_fixed": False, "locality_weight": 0}),
            "default": run_edit(method, model, edit_set, layers, {}, reference={"test": rest, "locality": held})}
    with torch.no_grad():
        base = float((model(rest.x).argmax(1) == rest.y).float().mean())
        preds = {k: r.model(rest.x).argmax(1) for k, r in runs.items()}
    share = {k: float(p.bincount(minlength=10).max()) / len(p) for k, p in preds.items()}
    acc = {k: float((p == rest.y).float().mean()) for k, p in preds.items()}
    assert share["old"] > 0.4 and acc["old"] < base - 0.3, (share, acc)  # the failure the defaults prevent
    assert acc["default"] >= base - 0.03 and share["default"] < 0.2, (share, acc, base)
    assert runs["default"].info["edit_set_fixed"] and runs["default"].info["locality"] == len(held)
