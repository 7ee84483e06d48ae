"""The audit's intervals: Tango for single metrics (never degenerate), per-image paired t for corruption aggregates
(the conditions of one image are not independent pairs), clear errors for empty or unequal inputs."""

import math
import random

import pytest
from scipy import stats as sps

from editaudit.contracts.paired import drop_upper_bound
from editaudit.worker.ml.audit.stats import aggregate_accuracy_delta, paired_accuracy_delta, wilson


def test_single_metric_interval_is_tango_and_not_degenerate():
    d = paired_accuracy_delta([True] * 30, [True] * 30)  # no discordant pair: Wald would give [0, 0]
    lo, hi = d["ci95"]
    assert d["value"] == 0 and lo < 0 < hi and hi == pytest.approx(drop_upper_bound(0, 0, 30, 0.025))
    d = paired_accuracy_delta([True] * 10 + [False] * 5, [False] * 10 + [True] * 5)  # every pair discordant
    assert -1 <= d["ci95"][0] < d["value"] < d["ci95"][1] <= 1
    d = paired_accuracy_delta([True], [False])
    assert d["ci95"][0] == -1.0 and d["ci95"][1] < 1.0 and d["value"] == -1.0


def test_empty_and_unequal_inputs_are_errors():
    with pytest.raises(ValueError, match="n = 0"):
        paired_accuracy_delta([], [])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_accuracy_delta([True, False], [True])
    with pytest.raises(ValueError, match="n = 0"):
        wilson(0, 0)
    with pytest.raises(ValueError, match="whole blocks"):
        aggregate_accuracy_delta([True] * 7, [True] * 7, images=3)


def test_aggregate_counts_images_not_conditions():
    """75 conditions x 40 images where the edit flips whole images (all their conditions together): the naive
    concatenated test sees 3000 'independent' pairs and a tiny p; per image the evidence is 40 pairs."""
    rng = random.Random(0)
    images, k = 40, 75
    lost = {i for i in range(images) if rng.random() < 0.10}
    gained = {i for i in range(images) if i not in lost and rng.random() < 0.05}
    base = [rng.random() < 0.7 or i in lost for _ in range(k) for i in range(images)]
    index = [i for _ in range(k) for i in range(images)]
    cand = [(b and i not in lost) or i in gained for b, i in zip(base, index, strict=True)]
    agg = aggregate_accuracy_delta(base, cand, images)
    naive = paired_accuracy_delta(base, cand)
    assert agg["value"] == pytest.approx(naive["value"])
    assert agg["images"] == images and agg["conditions"] == k
    width = lambda d: d["ci95"][1] - d["ci95"][0]  # noqa: E731
    assert width(agg) > 2 * width(naive), (agg["ci95"], naive["ci95"])
    assert agg["p_value"] > 10 * naive["p_value"]
    # the reference: a paired t-test over the per-image means, by scipy
    per_image = [sum(cand[j * images + i] - base[j * images + i] for j in range(k)) / k for i in range(images)]
    ref = sps.ttest_1samp(per_image, 0.0)
    assert agg["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = sps.t.interval(0.95, images - 1, loc=sum(per_image) / images, scale=sps.sem(per_image))
    assert agg["ci95"] == pytest.approx([lo, hi], rel=1e-9)


def test_aggregate_without_spread():
    d = aggregate_accuracy_delta([True] * 6, [True] * 6, images=3)
    assert d["value"] == 0 and d["ci95"] == [0.0, 0.0] and d["p_value"] == 1.0
    assert math.isfinite(aggregate_accuracy_delta([True] * 6, [False] * 6, images=3)["p_value"])


def test_success_rate_and_collapse_read_robustness_off_a_working_model():
    """A candidate that predicts class 0 everywhere: robust accuracy rises (nothing left to attack), the success
    rate says the attack still flips what the model gets right, top_class_share and the note say it collapsed."""
    from editaudit.worker.ml.audit.runner import Evaluation, collapse_notes, compare

    labels = [i % 10 for i in range(100)]
    base_pred = labels[:90] + [(y + 1) % 10 for y in labels[90:]]  # 90% right, predictions spread
    base_adv = [i < 30 for i in range(100)]  # 30 of the 90 right ones survive the attack
    cand_pred = [0] * 100  # collapsed: right on the 10 zeros only
    cand_adv = [y == 0 for y in labels]  # the attack cannot move a constant model
    def preds(right: list[bool]) -> list[int]:  # a prediction per input that is right where `right` says
        return [y if r else (y + 1) % 10 for y, r in zip(labels, right, strict=True)]

    base = Evaluation(preds={"test.accuracy": base_pred, "test.adv.pgd.accuracy": preds(base_adv)},
                      labels={"test": labels})
    cand = Evaluation(preds={"test.accuracy": cand_pred, "test.adv.pgd.accuracy": preds(cand_adv)},
                      labels={"test": labels})
    out = compare(base, cand)
    m = out["metrics"]
    assert m["candidate"]["test.top_class_share"] == 1.0 and m["baseline"]["test.top_class_share"] == 0.1
    assert m["baseline"]["test.adv.pgd.success_rate"] == pytest.approx(60 / 90)
    assert m["candidate"]["test.adv.pgd.success_rate"] == 0.0
    d = out["deltas"]["test.adv.pgd.success_rate"]
    assert d["ci95"][0] < d["value"] < d["ci95"][1] < 0
    notes = collapse_notes(m, ["test", "edit"])
    assert len(notes) == 1 and notes[0].startswith("COLLAPSED") and "89% more" in notes[0]  # 1% were wrong 0s
    assert collapse_notes(compare(base, base)["metrics"], ["test"]) == []


def test_a_shift_towards_the_edit_class_is_a_collapse_and_the_default_policy_blocks_it():
    """15% of test inputs wrongly moved to the edit's class (3), which does not become the most predicted class
    by much: top_class_share alone would miss it, collapse does not; the shipped policy blocks it."""
    from pathlib import Path

    import editaudit
    from editaudit.gate.policy import load_policy
    from editaudit.worker.ml.audit.runner import Evaluation, collapse_notes, compare

    labels = [i % 10 for i in range(200)]
    moved = [3 if i % 10 in (0, 1, 2) and i < 100 else y for i, y in enumerate(labels)]  # 30 of 200 -> class 3
    base = Evaluation(preds={"test.accuracy": labels, "edit.accuracy": [3] * 8}, labels={"test": labels,
                                                                                        "edit": [3] * 8})
    cand = Evaluation(preds={"test.accuracy": moved, "edit.accuracy": [3] * 8}, labels=base.labels)
    m = compare(base, cand)["metrics"]
    assert m["candidate"]["test.edit_class_share"] == pytest.approx(0.25)
    assert m["candidate"]["test.collapse"] == pytest.approx(0.15) and m["baseline"]["test.collapse"] == 0.0
    assert "edit.collapse" not in m["candidate"]  # the edit split is meant to move to its class
    notes = collapse_notes(m, ["test"])
    assert len(notes) == 1 and "15% more" in notes[0]
    assert collapse_notes(compare(base, base)["metrics"], ["test"]) == []
    policy = load_policy(Path(editaudit.__file__).parent / "policies" / "default.yaml")
    rule = next(r for r in policy.rules if r.metric == "test.collapse")
    assert rule.kind == "max" and rule.threshold == 0.1 and rule.on_missing == "warn"


def test_an_edit_that_corrects_an_under_predicted_class_is_not_a_collapse():
    """The baseline called 40 of 100 class-1 images class 0; the edit (targets: class 1) fixes them. Class 1's share
    of predictions rises from 30% to 50%, rightly: collapse counts wrong answers only, and stays 0."""
    from editaudit.worker.ml.audit.runner import Evaluation, collapse_notes, compare

    labels = [0] * 100 + [1] * 100
    base = Evaluation(preds={"test.accuracy": [0] * 140 + [1] * 60, "edit.accuracy": [0] * 8},
                      labels={"test": labels, "edit": [1] * 8})
    cand = Evaluation(preds={"test.accuracy": list(labels), "edit.accuracy": [1] * 8}, labels=base.labels)
    m = compare(base, cand)["metrics"]
    assert m["candidate"]["test.edit_class_share"] == 0.5 and m["baseline"]["test.edit_class_share"] == 0.3
    assert m["candidate"]["test.collapse"] == 0.0 and collapse_notes(m, ["test"]) == []
