"""The audit report as a reviewer reads it, attacked where it could mislead: regressions ordered by significance
then size (a big insignificant wobble must not hide a small certain drop), agreement not counted as a regression,
per-class changes and the gallery computed from the per-sample outcomes (checked against counts done by hand),
the configured ε, the chosen α and the target drawn on the plots, heat maps on shared scales, and submitter text
(layer names, class names) inert in HTML and Markdown."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from editaudit.contracts.audit_result import AuditResult
from editaudit.contracts.formats import samples as samples_file
from editaudit.service.schemas.audits import AuditOut
from editaudit.service.services import reports
from editaudit.service.services.reports import gallery, markdown, plots, view

CONFIG = {"attacks": [{"name": "pgd", "eps": 0.05, "steps": 10, "eps_sweep": [0.1, 0.2]}], "max_samples": 100}


def audit(metrics: dict[str, tuple[float, float]], deltas: dict | None = None, **parts) -> AuditOut:
    result = AuditResult.model_validate({
        "metrics": {"baseline": {k: b for k, (b, _) in metrics.items()},
                    "candidate": {k: c for k, (_, c) in metrics.items()}},
        "deltas": deltas or {k: {"value": c - b} for k, (b, c) in metrics.items()}, **parts})
    row = SimpleNamespace(id="a1", status="succeeded", edit_id="e1", config=CONFIG, profile=None, versions={},
                          created_at="2026-12-01T00:00:00Z", finished_at="2026-12-01T00:01:00Z")
    return AuditOut.of(row, AuditResult.from_stored(result.stored(), CONFIG, None))


def test_regressions_put_a_significant_drop_before_a_larger_noisy_one():
    a = audit({"test.accuracy": (0.9, 0.88), "test.adv.pgd.accuracy": (0.5, 0.3), "edit.agreement": (1.0, 0.0),
               "test.collapse": (0.0, 0.1), "edit.accuracy": (0.0, 1.0)},
              deltas={"test.accuracy": {"value": -0.02, "ci95": [-0.03, -0.01], "p_value": 0.001},
                      "test.adv.pgd.accuracy": {"value": -0.2, "ci95": [-0.5, 0.1], "p_value": 0.3},
                      "edit.agreement": {"value": -1.0, "ci95": [-1.0, -0.9]},
                      "test.collapse": {"value": 0.1},
                      "edit.accuracy": {"value": 1.0, "ci95": [0.6, 1.0], "p_value": 0.001}})
    v = view.build(a)
    assert [r.metric for r in v.regressions] == ["test.accuracy", "test.adv.pgd.accuracy", "test.collapse"], \
        "significant first; agreement describes the edit and is no regression; collapse is lower-is-better"
    assert [r.css for r in v.regressions] == ["worse-sig", "worse", "worse"]
    assert [r.metric for r in v.summary] == ["test.accuracy", "test.adv.pgd.accuracy", "edit.accuracy"]
    assert v.summary[-1].css == "better-sig"


def _outcomes() -> bytes:
    label = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    base = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    cand = np.array([0, 1, 0, 2, 1, 2, 1, 1])
    blocks = [samples_file.Block("test", "clean", np.arange(10, 18), label, base, cand),
              samples_file.Block("test", "adv.pgd", np.arange(10, 18), label, cand, cand)]
    return samples_file.write(blocks)


def test_the_gallery_and_per_class_changes_count_what_the_edit_flipped():
    names = ["cat", "<img src=x onerror=alert(1)>", "ship"]
    images = samples_file.read_images(samples_file.write_images([
        {"split": "test", "condition": "clean", "index": 11, "position": 1, "direction": "broken", "png": b"\x89PNG"}]))
    g = gallery.build(samples_file.read(_outcomes()), images, names)
    assert [c.condition for c in g.conditions] == ["clean"], "adv.pgd flipped nothing: not shown"
    clean = g.conditions[0]
    # broken: positions 1 (true 0: 0->1), 3 (true 1: 1->2), 6 (true 2: 2->1); fixed: 2 (true 0), 4 (true 1)
    assert (clean.broken, clean.fixed) == (3, 2)
    assert [t.index for t in clean.broken_thumbs] == [11, 13, 16] and [t.index for t in clean.fixed_thumbs] == [12, 14]
    assert clean.broken_thumbs[0].src and clean.broken_thumbs[0].src.startswith("data:image/png;base64,")
    assert clean.broken_thumbs[1].src is None, "an input the audit did not keep shows as not kept, not as another"
    by = {c.name: c for c in g.classes}
    assert (by["cat"].baseline, by["cat"].candidate) == (2 / 3, 2 / 3)
    assert (by["ship"].baseline, by["ship"].candidate, by["ship"].n) == (2 / 3, 1 / 3, 3)
    assert g.classes[0].name == "ship", "the biggest loss first"
    assert ("<img src=x onerror=alert(1)>", 0, 2) in by["ship"].confusions
    page = reports.as_html(view.build(audit({"test.accuracy": (0.6, 0.5)}), gallery=g))
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_markdown_keeps_submitter_text_inert():
    a = audit({"test.accuracy": (0.9, 0.8)}, deltas={"test.accuracy": {"value": -0.1, "ci95": [-0.2, -0.05]}})
    edit = view.EditFacts("e1", "finetune_layer", ["fc`\n# pwned | x"], [], {}, "succeeded", "m1")
    md = markdown.render(view.build(a, edit, view.Gate("fail", "team`](http://evil) v1", [], [])))
    assert "\n# pwned" not in md and "`fc' # pwned \\| x`" in md
    assert "`team'](http://evil) v1`" in md and md.splitlines()[0].startswith("### ❌ editaudit: **BLOCKED**")


@pytest.fixture()
def drawn(monkeypatch):
    """Each figure's axes (titles, lines and their labels, images' colour limits) instead of its PNG."""
    seen = []

    def capture(fig):
        seen.append([{"title": ax.get_title(), "labels": [ln.get_label() for ln in ax.lines],
                      "clim": [im.get_clim() for im in ax.images]} for ax in fig.axes])
        return "data:image/png;base64,"

    monkeypatch.setattr(plots, "png", capture)
    return seen


def test_plots_mark_what_was_configured(drawn):
    a = audit({"test.accuracy": (0.9, 0.9)},
              curves={"test.adv.pgd": {"eps": [0.05, 0.1, 0.2], "baseline": [0.5, 0.3, 0.1],
                                       "candidate": [0.4, 0.2, 0.0]}},
              alpha_curve=[{"alpha": x, "metrics": {"edit.accuracy": x}} for x in (0.0, 0.5, 1.0)],
              mli={"monotone": True, "alpha": 0.5, "threshold": 0.45, "target_split": "edit"})
    plots.figures(a)
    labels = [lab for fig in drawn for ax in fig for lab in ax["labels"]]
    assert "configured ε = 0.05" in labels
    assert "chosen α = 0.5" in labels and "target: edit accuracy ≥ 0.45" in labels


def test_heat_maps_share_their_scales_across_panels_and_splits(drawn):
    cells = {f"{s}.corruption.{t}.{k}.accuracy": (0.9, 0.9 - d * k)
             for s, d in (("test", 0.01), ("edit", 0.1)) for t in ("fog", "snow") for k in (1, 3)}
    plots.heat_maps(audit(cells))
    limits = [ax["clim"][0] for fig in drawn for ax in fig if ax["clim"]]
    assert len(drawn) == 2 and len(limits) == 6, "baseline, candidate, difference for each split"
    assert {limits[0], limits[1], limits[3], limits[4]} == {(0.0, 1.0)}
    assert limits[2] == limits[5] == pytest.approx((-0.3, 0.3)), \
        "one symmetric difference scale for every split (the largest)"


def test_a_full_corruption_grid_renders_as_three_heat_maps_without_drawing_every_cell_as_a_row():
    """75 corruption cells x 3 splits: one figure per split; the page's regression table stops at 25 rows."""
    types = [f"c{i:02d}" for i in range(15)]
    cells = {f"{s}.corruption.{t}.{k}.accuracy": (0.9 - 0.02 * k, 0.88 - 0.03 * k)
             for s in ("test", "edit", "generalization") for t in types for k in range(1, 6)}
    v = view.build(audit(cells))
    v.figures = plots.heat_maps(v.audit)
    page = reports.as_html(v)
    assert len(v.figures) == 3 and len(v.regressions) == 225
    assert page.count('<tr class="worse') >= 25 and "200 more in “All metrics” below." in page


def test_what_an_edit_must_move_is_not_a_regression():
    """A one-class edit raises the target's share on its own splits, and the drawdown restates the clean loss."""
    a = audit({"edit.top_class_share": (0.3, 1.0), "edit.collapse": (0.0, 1.0), "generalization.edit_class_share":
               (0.2, 0.9), "test.drawdown": (0.0, 0.05), "test.accuracy": (0.9, 0.85), "test.top_class_share":
               (0.1, 0.4)})
    assert {r.metric for r in view.build(a).regressions} == {"test.accuracy", "test.top_class_share"}, \
        "on the test split a class taking over is a regression; on the edit's own, the point"


def test_gate_reasons_cannot_inject_markdown():
    a = audit({"test.accuracy": (0.9, 0.8)})
    reason = "no attack named [click](http://evil) ![x](http://evil/p.png) <img src=x> # h\r\n| a |"
    md = markdown.render(view.build(a, gate=view.Gate("fail", "p v1", [
        {"outcome": "fail", "metric": "audit", "reason": reason}], [])))
    line = next(ln for ln in md.splitlines() if ln.startswith("- ❌"))
    assert "](http" not in line and "<img" not in line.replace("\\<img", "") and "\r" not in md
    assert "\\[click\\]\\(http://evil\\)" in line and "\\|" in line


def test_the_class_table_keeps_the_biggest_moves_of_many_classes():
    label = np.repeat(np.arange(200), 5)
    base, cand = label.copy(), label.copy()
    cand[:50] = (label[:50] + 1) % 200  # classes 0..9 lose everything
    base[-25:] = (label[-25:] + 1) % 200  # classes 195..199 were wrong, now right
    g = gallery.build(samples_file.read(samples_file.write([samples_file.Block(
        "test", "clean", np.arange(1000), label, base, cand)])), None, None)
    assert len(g.classes) == gallery.CLASS_ROWS and g.more_classes == 170
    shown = {c.label for c in g.classes}
    assert set(range(10)) <= shown and set(range(195, 200)) <= shown
    assert g.missing, "no kept inputs: the page says so"
