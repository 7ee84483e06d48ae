"""The study grid (editaudit.contracts.studies) and the summary's defences, tried as a hostile submitter or a
careless statistician would: a grid is counted before it is built; repeats and reserved keys are refused; a group
with a failed, canceled or running seed is never recommended; seeds that agree do not shrink an interval below what
each audit measured; what a submitter writes stays text in the reports."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from editaudit.contracts import studies
from editaudit.contracts.studies import MAX_STUDY_RUNS, StudyGrid, count, expand
from editaudit.study import render
from editaudit.study.summary import summarise
from tests.unit.test_study_summary import run, seeds


@pytest.mark.parametrize("grid", [
    {"methods": ["finetune"], "seeds": [0, 1]},
    {"methods": ["finetune_layer", "low_rank", "rewrite", "enn"], "layers": ["fc", "fc1", "features.*"],
     "hyperparams": {"low_rank": {"rank": [1, 2, 4]}, "enn": {"steps": [5, 10]}}, "seeds": [0, 1, 2]},
    {"methods": ["finetune_layer", "interpolate"], "layers": ["fc"], "interpolate": True},
    {"methods": ["low_rank"], "layers": ["fc"], "hyperparams": {"low_rank": {"rank": [1, 2]}}, "interpolate": False},
])
def test_count_is_the_number_of_runs_expand_builds(grid):
    g = StudyGrid.model_validate(grid)
    assert count(g) == len(expand(g))


def test_a_huge_grid_is_refused_from_its_count_without_building_it(monkeypatch):
    def built(*_):
        raise AssertionError("the grid was expanded before its size was checked")

    monkeypatch.setattr(studies, "expand", built)
    values = list(range(32))
    with pytest.raises(ValidationError, match=f"expands to {32 ** 3 * 10} runs; a study holds at most "
                                              f"{MAX_STUDY_RUNS}"):
        StudyGrid(methods=["finetune"], hyperparams={"finetune": {"lr": values, "steps": values, "batch_size": values}},
                  seeds=list(range(10)))
    with pytest.raises(ValidationError, match="33 values; give 1 to 32"):
        StudyGrid(methods=["finetune"], hyperparams={"finetune": {"lr": list(range(33))}})


@pytest.mark.parametrize(("hyperparams", "words"), [
    ({"low_rank": {"rank": [1, 1]}}, "repeats a value"),
    ({"low_rank": {"seed": [5, 6]}}, "seeds are the grid's"),
    ({"low_rank": {"base": [{"method": "finetune_layer"}]}}, "1-LI runs interpolate"),
    ({"low_rank": {"rank": []}}, "0 values"),
])
def test_repeats_and_reserved_keys_are_refused(hyperparams, words):
    with pytest.raises(ValidationError, match=words):
        StudyGrid(methods=["low_rank"], layers=["fc"], hyperparams=hyperparams)


def test_a_glob_layer_entry_gets_no_interpolation_run():
    """1-LI edits exactly one layer: a glob may name several, so only a layer named by its path gets a 1-LI run."""
    g = StudyGrid(methods=["finetune_layer"], layers=["fc", "features.*"])
    assert [(c.method, c.layers) for c in expand(g)] == [
        ("finetune_layer", ["fc"]), ("interpolate", ["fc"]), ("finetune_layer", ["features.*"])]


def test_a_group_with_a_seed_that_did_not_succeed_is_never_recommended():
    """Group A passed on its one surviving seed (two failed) and beats B on accuracy; B passed on all three."""
    a = [run(0, seed=0, gen=0.95), run(1, seed=1, status="failed"), run(2, seed=2, status="canceled")]
    b = seeds(3, -0.02, method="finetune_layer", gen=0.7)
    summary = summarise(a + b, "default")
    assert summary["policy"]["groups"]["low_rank fc1"] == "incomplete"
    assert summary["policy"]["recommended"] == "finetune_layer fc1"
    queued = [run(0, seed=0, gen=0.95), run(1, seed=1, status="queued")]
    only = summarise(queued, "default")["policy"]
    assert only["recommended"] is None and "running" in only["reason"]


def test_seeds_that_agree_do_not_narrow_the_interval_below_each_audits():
    """A closed-form edit and an attack without random start give the same delta at every seed: the t band is 0
    wide, but each audit measured −0.003 ± 0.01 on a finite test set. One seed is inconclusive; two such seeds must
    not be more certain than that."""
    one = summarise([run(0, robust=-0.003)])
    two = summarise([run(0, seed=0, robust=-0.003), run(1, seed=1, robust=-0.003)])
    for s in (one, two):
        g = s["groups"][0]["robust_delta"]
        assert g["lo"] < 0 < g["hi"], g
        assert s["findings"][0]["verdict"] != "holds", s["findings"][0]


def test_what_a_submitter_writes_stays_text_in_the_reports():
    rows = seeds(0, -0.05, varied={"x": "$\\frac{1}{0$"}) + seeds(3, -0.01, method="finetune_layer")
    summary = summarise(rows, "default")
    meta = {"id": "s1", "name": "\n## Recommendation\nShip it <!--", "status": "succeeded"}
    md = render.markdown(summary, meta)
    assert not re.search(r"^Ship it", md, re.M) and "<!--" not in md, "the name is one line of inert text"
    assert len(re.findall(r"^## Recommendation$", md, re.M)) == 1
    html = render.html(summary, meta)  # a `$` in a label is text to matplotlib, not TeX that fails to parse
    assert "data:image/png;base64," in html and "<!--" not in html
