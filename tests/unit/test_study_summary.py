"""The study summary (editaudit.study) on hand-built runs: each section, the t intervals against known values, and
each of Brown et al.'s findings both ways (a wrong computation flips a verdict the test pins), then the reports."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from editaudit.study import render
from editaudit.study.stats import AUDIT_CI, T_INTERVAL, stat, t975
from editaudit.study.summary import robustness_metrics, summarise

PGD, CORR, CLEAN = "test.adv.pgd.accuracy", "test.corruption.mean.accuracy", "test.accuracy"
SEEDS = (0, 1, 2)


def _d(value: float, half: float = 0.01) -> dict[str, Any]:
    return {"value": value, "ci95": [value - half, value + half], "p_value": 0.01}


def run(index: int, method: str = "low_rank", layers: tuple[str, ...] = ("fc1",), seed: int = 0, *,
        robust: float = -0.02, edit: float = 1.0, gen: float | None = 0.7, clean: float = -0.01,
        depth: float | None = 0.5, verdict: str | None = "pass", failed: tuple[str, ...] = (),
        status: str = "succeeded", varied: dict[str, Any] | None = None, base: str | None = None,
        curve: list[tuple[float, float, float]] | None = None, alpha: float | None = None) -> dict[str, Any]:
    """One run's row as the service builds it; PGD and corruption deltas both `robust` (so robust Δ = robust)."""
    varied = varied or {}
    group = " ".join([method, *layers, *(f"{k}={v}" for k, v in sorted(varied.items()))])
    row: dict[str, Any] = {
        "index": index, "group": group, "method": method, "layers": list(layers), "varied": varied, "seed": seed,
        "base": base, "depth": depth if layers else None, "edit_id": f"e{index}", "audit_id": f"a{index}",
        "status": status, "error": None if status == "succeeded" else "CUDA out of memory",
        "baseline": {}, "candidate": {}, "deltas": {}, "durations_s": {"edit": 2.0, "audit": 3.0},
        "alpha": alpha, "alpha_curve": None, "gate": None}
    if status != "succeeded":
        return row
    cand = {"edit.accuracy": edit, CLEAN: 0.9 + clean, PGD: 0.6 + robust, CORR: 0.5 + robust,
            "test.collapse": 0.01, "test.top_class_share": 0.12, "test.edit_class_share": 0.11}
    if gen is not None:
        cand["generalization.accuracy"] = gen
    row.update(candidate=cand, deltas={CLEAN: _d(clean), PGD: _d(robust), CORR: _d(robust),
                                       "test.adv.pgd.success_rate": _d(0.1)})
    if verdict:
        row["gate"] = {"verdict": verdict, "failed": list(failed)}
    if curve:
        row["alpha_curve"] = [{"alpha": a, "metrics": {"edit.accuracy": e, PGD: r, CLEAN: 0.9}} for a, e, r in curve]
        row["threshold"] = 0.8
    return row


def seeds(start: int, robust: float, jitter: float = 0.01, **kw: Any) -> list[dict[str, Any]]:
    """One group over SEEDS: robust Δ = robust + (seed - 1) * jitter (mean `robust`, sd `jitter`)."""
    return [run(start + i, seed=s, robust=robust + (s - 1) * jitter, **kw) for i, s in enumerate(SEEDS)]


def group(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in summary["groups"] if g["group"] == name)


def finding(summary: dict[str, Any], fid: str) -> dict[str, str]:
    return next(f for f in summary["findings"] if f["id"] == fid)


HALF3 = 4.303 * 0.01 / math.sqrt(3)  # t(2) * sd / sqrt(n) for sd 0.01 over 3 seeds
LI_CURVE = [(0.0, 0.2, 0.7), (0.5, 0.7, 0.6), (1.0, 1.0, 0.5)]


def full_study() -> list[dict[str, Any]]:
    """finetune hurts (−0.15), low_rank at fc1 barely (−0.02), at conv2 more (−0.08); 1-LI of low_rank fc1 gives up
    edit accuracy for robustness; one failed run."""
    return (seeds(0, -0.15, method="finetune", layers=(), gen=0.75)
            + seeds(3, -0.02, layers=("fc1",), depth=0.8, gen=0.7)
            + seeds(6, -0.08, layers=("conv2",), depth=0.4, gen=0.72, verdict="fail", failed=("test.adv.*.accuracy",))
            + seeds(9, 0.0, method="interpolate", varied={"base": "low_rank"}, base="low_rank fc1", edit=0.9,
                    gen=0.65, curve=LI_CURVE, alpha=0.5)
            + [run(12, seed=3, status="failed")])


# ------------------------------------------------------------------------------------------------ statistics


def test_t_interval_matches_known_values():
    s = stat([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["interval"] == T_INTERVAL
    assert s["hi"] - 2.0 == pytest.approx(4.303 / math.sqrt(3)) and 2.0 - s["lo"] == pytest.approx(4.303 / 3 ** .5)
    assert t975(1) == 12.706 and t975(9) == 2.262 and t975(30) == 2.042 and t975(40) == pytest.approx(2.021, abs=2e-3)
    one = stat([0.5], [(0.4, 0.7)])
    assert (one["mean"], one["lo"], one["hi"], one["interval"]) == (0.5, 0.4, 0.7, AUDIT_CI)
    assert stat([None, 1.0, None])["n"] == 1 and stat([])["mean"] is None


def test_robustness_metrics_are_test_attacks_and_the_corruption_mean():
    r = run(0)
    r["deltas"].update({"edit.adv.pgd.accuracy": _d(0.1), "test.corruption.fog.mean.accuracy": _d(0.1),
                        "test.adv.fgsm.accuracy": _d(0.0)})
    assert robustness_metrics([r]) == ["test.adv.fgsm.accuracy", PGD, CORR]


# --------------------------------------------------------------------------------------------------- sections


def test_runs_and_groups_with_a_failed_run_listed_but_excluded():
    s = summarise(full_study(), policy_name="default")
    assert s["counts"] == {"succeeded": 12, "failed": 1} and s["robustness_metrics"] == [PGD, CORR]
    failed = s["runs"][-1]
    assert failed["status"] == "failed" and failed["error"] == "CUDA out of memory" and failed["edit_acc"] is None
    g = group(s, "low_rank fc1")
    assert (g["n_runs"], g["n_succeeded"], g["seeds"]) == (4, 3, [0, 1, 2])
    assert g["robust_delta"]["mean"] == pytest.approx(-0.02)
    assert g["robust_delta"]["hi"] - g["robust_delta"]["mean"] == pytest.approx(HALF3)
    assert g["robust"][PGD]["mean"] == pytest.approx(-0.02) and g["clean_delta"]["mean"] == pytest.approx(-0.01)
    assert g["cost_s"]["mean"] == 5.0 and g["depth"] == 0.8 and g["policy"]["pass"] == 3
    first = s["runs"][3]
    assert first["robust_delta"]["value"] == pytest.approx(-0.03) and first["collapse"] == 0.01
    assert first["clean_delta"]["ci95"] == pytest.approx([-0.02, 0.0]) and first["verdict"] == "pass"
    json.dumps(s, allow_nan=False)


def test_one_seed_uses_the_audit_ci_and_nan_stays_json_safe():
    r = run(0, robust=-0.1)
    r["deltas"][CORR] = {"value": float("nan"), "ci95": None, "p_value": None}
    s = summarise([r])
    rd = group(s, "low_rank fc1")["robust_delta"]
    assert (rd["mean"], rd["interval"]) == (pytest.approx(-0.1), AUDIT_CI)
    assert (rd["lo"], rd["hi"]) == (pytest.approx(-0.11), pytest.approx(-0.09))
    json.dumps(s, allow_nan=False)


def test_pareto_front_on_a_known_set():
    rows = [run(0, "finetune", (), robust=-0.10, gen=0.90), run(1, "low_rank", ("fc1",), robust=-0.02, gen=0.80),
            run(2, "low_rank", ("conv2",), robust=-0.05, gen=0.70), run(3, "rewrite", ("fc1",), robust=-0.20,
                                                                        gen=0.95)]
    s = summarise(rows)
    assert s["pareto"]["accuracy"] == "gen_acc"
    assert s["pareto"]["front"] == ["rewrite fc1", "finetune", "low_rank fc1"]
    assert [g["on_front"] for g in s["groups"]] == [True, True, False, True]
    no_gen = summarise([run(0, robust=-0.1, gen=None, edit=0.9), run(1, "rewrite", robust=-0.2, gen=None, edit=0.8)])
    assert no_gen["pareto"]["accuracy"] == "edit_acc" and no_gen["pareto"]["front"] == ["low_rank fc1"]


def test_by_depth_sorted_and_whole_model_left_out():
    s = summarise(full_study())
    assert [(e["method"], e["layer"], e["depth"]) for e in s["by_depth"]] == [
        ("low_rank", "conv2", 0.4), ("interpolate", "fc1", 0.5), ("low_rank", "fc1", 0.8)]
    assert s["by_depth"][0]["robust_delta"]["mean"] == pytest.approx(-0.08)


def test_alpha_curves_averaged_over_seeds_with_chosen_alphas():
    rows = [run(0, "interpolate", seed=0, curve=[(0.0, 0.2, 0.7), (1.0, 1.0, 0.5)], alpha=0.6, base="low_rank fc1"),
            run(1, "interpolate", seed=1, curve=[(0.0, 0.4, 0.9), (1.0, 1.0, 0.5)], alpha=0.7, base="low_rank fc1")]
    (c,) = summarise(rows)["alpha_curves"]
    assert c["robust_metric"] == PGD and c["threshold"] == 0.8
    assert c["points"][0] == {"alpha": 0.0, "n": 2, "test_acc": 0.9, "robust_acc": pytest.approx(0.8),
                              "edit_acc": pytest.approx(0.3), "gen_acc": None}
    assert [x["alpha"] for x in c["chosen"]] == [0.6, 0.7]


def test_recommendation_only_among_groups_that_pass():
    s = summarise(full_study(), policy_name="default")
    # conv2 has the better generalization (0.72) but fails; finetune (0.75) passes; 1-LI (0.65) passes
    assert s["policy"]["groups"]["low_rank conv2"] == "fail"
    assert s["policy"]["recommended"] == "finetune"
    rows = seeds(0, -0.02, gen=0.9) + seeds(3, -0.15, method="finetune", layers=(), gen=0.75)
    rows[1]["gate"] = {"verdict": "fail", "failed": [CLEAN]}  # one bad seed blocks its group
    assert summarise(rows)["policy"]["recommended"] == "finetune"


def test_no_recommendation_names_the_rule_that_blocked_most():
    rows = [run(0, verdict="fail", failed=("test.adv.*.accuracy", CLEAN)),
            run(1, seed=1, verdict="warn", failed=("test.adv.*.accuracy",)),
            run(2, "rewrite", verdict="fail", failed=(CLEAN,)), run(3, "rewrite", seed=1, verdict="pass")]
    p = summarise(rows, policy_name="strict")["policy"]
    assert p["recommended"] is None and p["blocked_by"] == {"test.adv.*.accuracy": 2, CLEAN: 2}
    assert "`test.adv.*.accuracy`" in p["reason"] and "strict" in p["reason"]
    assert "no run was gated" in summarise([run(0, verdict=None)])["policy"]["reason"]


# ---------------------------------------------------------------------------------------------------- findings


def test_edits_reduce_robustness_both_ways():
    hurt = summarise(seeds(0, -0.15, method="finetune", layers=()) + seeds(3, -0.05, layers=("fc1",)))
    assert finding(hurt, "reduces_robustness")["verdict"] == "holds"
    assert "−0.150 [" in finding(hurt, "reduces_robustness")["evidence"]
    helped = summarise(seeds(0, 0.10, method="finetune", layers=()) + seeds(3, 0.05, layers=("fc1",)))
    assert finding(helped, "reduces_robustness")["verdict"] == "does not hold"
    mixed = summarise(seeds(0, 0.0, method="finetune", layers=()))
    assert finding(mixed, "reduces_robustness")["verdict"] == "inconclusive"


def test_damage_depends_on_method_and_layer_both_ways():
    s = summarise(seeds(0, -0.10, method="finetune_layer", layers=("fc1",)) + seeds(3, -0.02, layers=("fc1",))
                  + seeds(6, -0.08, layers=("conv2",)))
    f = finding(s, "method_and_layer")
    assert f["verdict"] == "holds" and "method (same layer): 1 of 1" in f["evidence"] \
        and "layer (same method): 1 of 1" in f["evidence"], f["evidence"]
    only_layers = finding(summarise(full_study()), "method_and_layer")  # finetune is whole-model: no method pair
    assert only_layers["verdict"] == "holds in part" and "method (same layer): not tested" in only_layers["evidence"]
    same = summarise(seeds(0, -0.05, method="finetune_layer", layers=("fc1",)) + seeds(3, -0.05, layers=("fc1",))
                     + seeds(6, -0.05, layers=("conv2",)))
    assert finding(same, "method_and_layer")["verdict"] == "does not hold", "every difference within ±0.02"
    wide = summarise(seeds(0, -0.05, method="finetune_layer", layers=("fc1",))
                     + seeds(3, -0.05, jitter=0.03, layers=("fc1",)) + seeds(6, -0.06, layers=("conv2",)))
    f = finding(wide, "method_and_layer")
    assert f["verdict"] == "inconclusive" and "too wide to tell" in f["evidence"], "no difference found is not none"
    one = summarise(seeds(0, -0.05, method="finetune", layers=()))
    assert finding(one, "method_and_layer")["verdict"] == "not tested"


def test_constrained_edits_preserve_robustness_both_ways():
    better = summarise(seeds(0, -0.15, method="finetune", layers=()) + seeds(3, -0.02, layers=("fc1",)))
    f = finding(better, "constrained_better")
    assert f["verdict"] == "holds" and "+0.130 [" in f["evidence"]
    worse = summarise(seeds(0, -0.02, method="finetune", layers=()) + seeds(3, -0.15, layers=("fc1",)))
    assert finding(worse, "constrained_better")["verdict"] == "does not hold"
    # paired by seed: the shared seed effect cancels, so a noisy pair still shows the gap
    noisy = summarise(seeds(0, -0.15, jitter=0.2, method="finetune", layers=()) + seeds(3, -0.05, jitter=0.2))
    assert finding(noisy, "constrained_better")["verdict"] == "holds"
    assert finding(summarise(seeds(0, -0.02)), "constrained_better")["verdict"] == "not tested"


def test_interpolation_trades_accuracy_for_robustness_both_ways():
    s = summarise(full_study())
    assert finding(s, "interpolation_tradeoff")["verdict"] == "holds"
    broken = [(0.0, 0.2, 0.5), (0.5, 0.9, 0.7), (1.0, 0.6, 0.5)]  # edit acc falls, robust acc rises along alpha
    rows = seeds(0, -0.02) + seeds(3, 0.0, method="interpolate", varied={"base": "low_rank"}, base="low_rank fc1",
                                   edit=0.9, gen=0.65, curve=broken)
    f = finding(summarise(rows), "interpolation_tradeoff")
    assert f["verdict"] == "does not hold" and "edit acc falls 0.900→0.600" in f["evidence"]
    costly = seeds(0, -0.02) + seeds(3, -0.10, method="interpolate", varied={"base": "low_rank"},
                                     base="low_rank fc1", edit=0.9, gen=0.65)  # less robust than its base
    assert finding(summarise(costly), "interpolation_tradeoff")["verdict"] == "does not hold"
    assert finding(summarise(seeds(0, -0.02)), "interpolation_tradeoff")["verdict"] == "not tested"


# ------------------------------------------------------------------------------------------------------ reports

META = {"id": "st_1", "name": "digits texture", "model_id": "m_1", "status": "succeeded"}


def test_markdown_leads_with_recommendation_and_findings():
    s = summarise(full_study(), policy_name="default")
    text = render.markdown(s, META)
    assert text.index("Ship `finetune`") < text.index("## Findings") < text.index("## Groups")
    for f in s["findings"]:
        assert f["claim"] in text and f["evidence"] in text
    assert "## Pareto front" in text and "## Every run" in text and "CUDA out of memory" in text
    assert render.markdown(summarise([run(0, status="failed")]), {}).startswith("# editaudit study")


def test_html_is_offline_with_inline_plots_and_plots_are_pngs():
    s = summarise(full_study(), policy_name="default")
    page = render.html(s, META)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page) and "http://" not in page
    assert page.count('<img alt=') == 3 and '<img alt=' in page and 'src="data:image/png;base64,' in page
    figs = render.plots(s)
    assert set(figs) == {"pareto", "by_depth", "alpha_curves"}
    assert all(png.startswith(b"\x89PNG") for png in figs.values())
    doc = json.loads(render.as_json(s, META))
    assert (doc["schema"], doc["schema_version"], doc["study"]["id"]) == ("editaudit/study-report", 1, "st_1")


def test_method_and_layer_differences_are_paired_by_seed_and_corrected_for_many_pairs():
    """A seed effect (each seed's baseline) of ±0.2 hides a steady 0.05 gap from the groups' own intervals; paired by
    seed the gap shows. Noise without a gap, over many pairs, does not make a difference."""
    hidden = (seeds(0, -0.15, jitter=0.2, method="finetune_layer") + seeds(3, -0.10, jitter=0.2)
              + seeds(6, -0.05, jitter=0.2, layers=("conv2",)))
    s = summarise(hidden)
    assert all(g["robust_delta"]["lo"] < -0.2 for g in s["groups"]), "unpaired, every interval overlaps the others"
    f = finding(s, "method_and_layer")
    assert f["verdict"] == "holds", f["evidence"]
    assert "layer (same method): 1 of 1 paired difference(s) exclude 0" in f["evidence"], f["evidence"]
    noise = {"fc1": (-0.05, -0.02, -0.08), "conv1": (-0.07, -0.03, -0.04), "conv2": (-0.02, -0.06, -0.05),
             "conv3": (-0.04, -0.08, -0.03)}
    rows = [run(i * 3 + k, layers=(layer,), seed=k, robust=v) for i, (layer, vs) in enumerate(noise.items())
            for k, v in enumerate(vs)]
    assert finding(summarise(rows), "method_and_layer")["evidence"].startswith(
        "method (same layer): not tested"), "one method only"
    assert "layer (same method): none of 6 paired difference(s) excludes 0" in \
        finding(summarise(rows), "method_and_layer")["evidence"]


def test_one_seeds_wobble_does_not_decide_the_path_the_mean_does():
    """The path is measured on a PGD subset: one seed's +0.01 step is noise when the seeds' mean path is monotone;
    it is named, not a verdict. A path that rises on average does not hold."""
    steady = [(0.0, 0.3, 0.96), (0.5, 0.6, 0.94), (1.0, 0.9, 0.90)]
    wobble = [(0.0, 0.3, 0.95), (0.5, 0.6, 0.96), (1.0, 0.9, 0.90)]
    base = seeds(0, -0.06)
    rows = base + [run(3 + i, method="interpolate", seed=s, base="low_rank fc1", varied={"base": "low_rank"},
                       robust=-0.01, edit=0.6, gen=0.65, curve=wobble if s == 1 else steady)
                   for i, s in enumerate(SEEDS)]
    f = finding(summarise(rows), "interpolation_tradeoff")
    assert f["verdict"] == "holds" and "single seeds [1] wobble" in f["evidence"], f["evidence"]
    rising = [(0.0, 0.3, 0.90), (0.5, 0.6, 0.93), (1.0, 0.9, 0.96)]
    rows = base + [run(3 + i, method="interpolate", seed=s, base="low_rank fc1", varied={"base": "low_rank"},
                       robust=-0.01, edit=0.6, gen=0.65, curve=rising) for i, s in enumerate(SEEDS)]
    assert finding(summarise(rows), "interpolation_tradeoff")["verdict"] == "does not hold"


def test_review_cases_agreeing_seeds_identical_1li_one_metric_and_missing_seeds():
    """What a statistician signing the page checked: (3) with seeds that agree to the third digit is not a
    difference; a 1-LI run identical to its base trades nothing; (1) holds only in part when only PGD falls; a
    group missing at a seed does not move that seed's pooled mean."""
    close = summarise(seeds(0, -0.150, jitter=0.0, method="finetune", layers=()) + seeds(3, -0.149, jitter=0.0))
    assert finding(close, "constrained_better")["verdict"] == "inconclusive", "±0.01 audits, +0.001 apart"
    flat = [(0.0, 1.0, 0.9), (0.5, 1.0, 0.9), (1.0, 1.0, 0.9)]
    same = seeds(0, -0.05) + seeds(3, -0.05, method="interpolate", varied={"base": "low_rank"}, base="low_rank fc1",
                                   gen=0.7, curve=flat)
    f = finding(summarise(same), "interpolation_tradeoff")
    assert f["verdict"] != "holds" and "no trade shown" in f["evidence"], f["evidence"]
    rows = seeds(0, -0.05, method="finetune", layers=()) + seeds(3, -0.05)
    for r in rows:  # PGD falls by 0.10, the corruption mean does not move
        r["deltas"][PGD], r["deltas"][CORR] = _d(-0.10), _d(0.0)
    f = finding(summarise(rows), "reduces_robustness")
    assert f["verdict"] == "holds in part" and f"{PGD}: holds" in f["evidence"] and f"{CORR}: inconclusive" in \
        f["evidence"], f["evidence"]
    gap = seeds(0, -0.05, method="finetune", layers=()) + [r for r in seeds(3, -0.30) if r["seed"] != 2]
    pooled_at = summarise(gap)
    assert "over 2 seed(s)" in finding(pooled_at, "reduces_robustness")["evidence"], "seed 2 lacks a group"
