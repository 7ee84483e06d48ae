"""A study's report from its summary (editaudit.study.summary): Markdown that leads with the recommendation and the
findings, a standalone HTML page (offline: no external URL, plots inline as base64 PNG), the plots alone, and
versioned JSON. `meta` = {"id", "name", "model_id", "created_at", "status", "counts"}, any of them missing.
matplotlib is imported inside the plotting functions (Agg backend), as the audit reports do: rendering Markdown or
JSON never pays for it."""

from __future__ import annotations

import base64
import html as _html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from editaudit.contracts import metrics as M
from editaudit.study.stats import num, stat_text

REPORT_SCHEMA = "editaudit/study-report"
REPORT_VERSION = 1
MAX_ALPHA_PANELS = 12
ACC_LABEL = {"gen_acc": "generalization accuracy", "edit_acc": "edit accuracy"}

Summary = dict[str, Any]


@dataclass
class Section:
    """A titled block of tables, shared by the Markdown and the HTML report; `plot` names its figure in plots()."""

    key: str
    title: str
    note: str
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (caption, header, rows)
    plot: str | None = None


def as_json(summary: Summary, meta: dict[str, Any]) -> str:
    return json.dumps({"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION, "study": meta,
                       "summary": summary}, indent=2, default=str)


# ------------------------------------------------------------------------------------------------------ content


def _title(meta: dict[str, Any]) -> str:
    """One line whatever the submitter named the study (a newline in a name must not start a heading of its own)."""
    name, sid = meta.get("name"), meta.get("id")
    name = " ".join(str(name).split()) if name else None
    return "editaudit study" + (f" {name}" if name else "") + (f" ({sid})" if sid else "")


MD_SPECIAL = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<>#|!~"})


def _md(text: str) -> str:
    """Text a submitter chose, inert in Markdown (no links, HTML, comments or emphasis)."""
    return text.translate(MD_SPECIAL)


def _facts(summary: Summary, meta: dict[str, Any]) -> list[str]:
    counts = meta.get("counts") or summary.get("counts") or {}
    facts = [f"{k} {meta[k]}" for k in ("model_id", "created_at", "status") if meta.get(k) is not None]
    if isinstance(counts, dict) and counts:
        facts.append("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if summary["policy"].get("name"):
        facts.append(f"policy {summary['policy']['name']}")
    robust = ", ".join(summary["robustness_metrics"]) or "none measured"
    facts.append(f"robust Δ = mean Δ of {robust}")
    return facts


def _recommendation(summary: Summary) -> str:
    pol = summary["policy"]
    if pol.get("recommended"):
        return f"Ship `{pol['recommended']}`: {pol['reason']}."
    return f"No recommendation: {pol['reason']}."


def _short(metric: str) -> str:
    m = M.parse(metric)
    return f"{m.attack} Δ" if m is not None and m.attack else "corruption Δ" if m is not None else metric


def _run_delta(d: dict[str, Any]) -> str:
    if d["value"] is None:
        return "—"
    ci = d.get("ci95")
    return num(d["value"], True) + (f" [{num(ci[0], True)}, {num(ci[1], True)}]" if ci else "")


def _sections(summary: Summary) -> list[Section]:
    key = summary["accuracy"]
    robust = summary["robustness_metrics"]
    groups = Section("groups", "Groups", "mean [95% interval] over seeds (Student t, widened to the runs' own "
                     "audit interval where that is wider: †); with one seed, that run's audit 95% CI (clustered by "
                     "image). Δ = edited − original on the same test images.")
    groups.tables.append(("", ["group", "runs ok", "edit acc", "gen. acc", "clean Δ", "robust Δ",
                               *(_short(n) for n in robust), "collapse", "cost s", "passed", "front"],
                          [[g["group"], f"{g['n_succeeded']}/{g['n_runs']}", stat_text(g["edit_acc"]),
                            stat_text(g["gen_acc"]), stat_text(g["clean_delta"], True),
                            stat_text(g["robust_delta"], True), *(stat_text(g["robust"][n], True) for n in robust),
                            stat_text(g["collapse"]), num(g["cost_s"]["mean"], digits=1),
                            f"{g['policy']['pass']}/{g['n_succeeded']}",
                            {True: "yes", False: "no"}.get(g["on_front"], "—")] for g in summary["groups"]]))
    par = summary["pareto"]
    pareto = Section("pareto", "Pareto front", f"{ACC_LABEL[key]} (higher is better) against robust Δ (higher is "
                     f"better); front: {', '.join(f'`{g}`' for g in par['front']) or 'empty'}.", plot="pareto")
    points = sorted(par["points"], key=lambda p: (not p["on_front"], -p["robust_delta"]["mean"]))
    if points:
        pareto.tables.append(("", ["group", ACC_LABEL[key], "robust Δ", "on front"],
                              [[p["group"], stat_text(p["accuracy"]), stat_text(p["robust_delta"], True),
                                "yes" if p["on_front"] else "no"] for p in points]))
    depth = Section("by_depth", "Robustness change by layer depth", "per method and layer, every hyperparameter "
                    "set and seed pooled; depth 0 = the first module, 1 = the last.", plot="by_depth")
    if summary["by_depth"]:
        depth.tables.append(("", ["depth", "method", "layer", "robust Δ"],
                             [[num(e["depth"], digits=2), e["method"], e["layer"],
                               stat_text(e["robust_delta"], True)] for e in summary["by_depth"]]))
    alpha = Section("alpha_curves", "1-LI alpha curves", "the path W0 + α(W1 − W0), averaged over the seeds at the "
                    "α every seed evaluated (seeds = how many).", plot="alpha_curves")
    for c in summary["alpha_curves"]:
        chosen = ", ".join(f"seed {x['seed']}: {num(x['alpha'])}" for x in c["chosen"]) or "—"
        caption = (f"`{c['group']}` (base `{c['base']}`); chosen α {chosen}"
                   + (f"; threshold {num(c['threshold'])}" if c["threshold"] is not None else ""))
        robust_col = (f"path robust acc (1-LI's check: {c['robust_metric'] or '—'} at alpha.robust_eps, on a test "
                      "subset)")
        alpha.tables.append((caption, ["α", "seeds", "test acc", robust_col, "edit acc", "gen. acc"],
                             [[num(p["alpha"]), str(p["n"]), num(p["test_acc"]), num(p["robust_acc"]),
                               num(p["edit_acc"]), num(p["gen_acc"])] for p in c["points"]]))
    runs = Section("runs", "Every run", "failed and canceled runs are listed and left out of every statistic.")
    runs.tables.append(("", ["#", "group", "seed", "status", "edit acc", "gen. acc", "clean Δ [CI]",
                             "robust Δ [CI]", "collapse", "cost s", "gate", "α", "error"],
                        [[str(r["index"]), str(r["group"]), str(r["seed"]), str(r["status"]), num(r["edit_acc"]),
                          num(r["gen_acc"]), _run_delta(r["clean_delta"]), _run_delta(r["robust_delta"]),
                          num(r["collapse"]), num(r["cost_s"], digits=1),
                          (r["verdict"] or "—") + (f" ({', '.join(r['failed'])})" if r["failed"] else ""),
                          num(r["alpha"]), r["error"] or ""] for r in summary["runs"]]))
    return [groups, pareto, depth, alpha, runs]


# ----------------------------------------------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    """A table cell: one line, no column break, no HTML (labels carry what the submitter wrote)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown(summary: Summary, meta: dict[str, Any]) -> str:
    lines = [f"# {_md(_title(meta))}", "", "; ".join(_facts(summary, meta)) + ".", "", "## Recommendation", "",
             _recommendation(summary), "", "## Findings (Brown et al. 2023, *Robustness of edited neural networks*)",
             ""]
    for i, f in enumerate(summary["findings"], 1):
        lines += [f"{i}. **{f['verdict']}** — {f['claim']}", f"   {f['evidence']}"]
    for s in _sections(summary):
        lines += ["", f"## {s.title}", "", s.note]
        if not s.tables:
            lines += ["", "None in this study."]
        for caption, header, rows in s.tables:
            lines += [""] + ([caption, ""] if caption else [])
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------- HTML


def html(summary: Summary, meta: dict[str, Any]) -> str:
    esc = _html.escape
    figures = plots(summary)
    body = [f"<h1>{esc(_title(meta))}</h1><p>{esc('; '.join(_facts(summary, meta)))}.</p>",
            f"<h2>Recommendation</h2><p><b>{esc(_recommendation(summary))}</b></p>",
            "<h2>Findings (Brown et al. 2023)</h2><ol>"]
    body += [f"<li><b>{esc(f['verdict'])}</b> — {esc(f['claim'])}<br><small>{esc(f['evidence'])}</small></li>"
             for f in summary["findings"]]
    body.append("</ol>")
    for s in _sections(summary):
        body.append(f"<h2>{esc(s.title)}</h2><p>{esc(s.note)}</p>")
        if not s.tables:
            body.append("<p>None in this study.</p>")
        for caption, header, rows in s.tables:
            body.append((f"<p>{esc(caption)}</p>" if caption else "") + "<table><tr>"
                        + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                        + "</table>")
        if s.plot and s.tables:
            src = "data:image/png;base64," + base64.b64encode(figures[s.plot]).decode()
            body.append(f"<figure><img alt='{esc(s.title)}' src=\"{src}\"></figure>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(_title(meta))}</title>
<link rel="icon" href="data:,">
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left;font-family:monospace}}
figure{{margin:1em 0}}small{{color:#444}}</style></head><body>
{"".join(body)}
</body></html>"""


# -------------------------------------------------------------------------------------------------------- plots


def plots(summary: Summary) -> dict[str, bytes]:
    """PNG figures: `pareto` (accuracy vs robust Δ with error bars, the front connected, groups labelled),
    `by_depth` (robust Δ vs depth per method), `alpha_curves` (test, robust and edit accuracy vs α, chosen α
    marked). Always all three; a study without the runs a figure needs gets a figure that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for name, draw in (("pareto", _pareto), ("by_depth", _by_depth), ("alpha_curves", _alpha)):
        fig = draw(plt, summary)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        out[name] = buf.getvalue()
    return out


def _err(stats: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars (below, above the mean); 0 without an interval."""
    return [[max(0.0, s["mean"] - s["lo"]) if s["lo"] is not None else 0.0 for s in stats],
            [max(0.0, s["hi"] - s["mean"]) if s["hi"] is not None else 0.0 for s in stats]]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _pareto(plt: Any, summary: Summary) -> Any:
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    par = summary["pareto"]
    points = par["points"]
    if not points:
        _empty(ax, "no group has both an accuracy and a robust Δ")
        return fig
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        xs, ys = [p["robust_delta"] for p in mine], [p["accuracy"] for p in mine]
        ax.errorbar([s["mean"] for s in xs], [s["mean"] for s in ys], xerr=_err(xs), yerr=_err(ys), fmt="o",
                    capsize=3, label=method)
    front = sorted((p for p in points if p["on_front"]), key=lambda p: p["robust_delta"]["mean"])
    ax.plot([p["robust_delta"]["mean"] for p in front], [p["accuracy"]["mean"] for p in front], "k--", lw=1,
            label="Pareto front")
    for p in front:  # the front's groups by name (the rest by their method's colour: names would overlap)
        ax.annotate(p["group"], (p["robust_delta"]["mean"], p["accuracy"]["mean"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points", parse_math=False)  # `$` in a label is text
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("robust Δ (edited − original, mean over robustness metrics)")
    ax.set_ylabel(ACC_LABEL[par["accuracy"]])
    ax.legend(fontsize=7)
    ax.set_title("which edit to ship: accuracy vs robustness")
    return fig


def _by_depth(plt: Any, summary: Summary) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    entries = [e for e in summary["by_depth"] if e["robust_delta"]["mean"] is not None]
    if not entries:
        _empty(ax, "no run edited a layer at a known depth")
        return fig
    for method in dict.fromkeys(e["method"] for e in entries):
        mine = [e for e in entries if e["method"] == method]
        stats = [e["robust_delta"] for e in mine]
        ax.errorbar([e["depth"] for e in mine], [s["mean"] for s in stats], yerr=_err(stats), fmt="o-", capsize=3,
                    label=method)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("depth of the edited layer (0 = first module, 1 = last)")
    ax.set_ylabel("robust Δ")
    ax.legend(fontsize=7)
    ax.set_title("robustness change by layer depth")
    return fig


def _alpha(plt: Any, summary: Summary) -> Any:
    curves = [c for c in summary["alpha_curves"] if c["points"]][:MAX_ALPHA_PANELS]
    if not curves:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        _empty(ax, "no 1-LI run with an alpha path")
        return fig
    cols = min(3, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False)
    for ax, c in zip(axes.flat, curves, strict=False):
        xs = [p["alpha"] for p in c["points"]]
        for k, label in (("test_acc", "test"), ("robust_acc", f"robust ({c['robust_metric']})"), ("edit_acc", "edit"),
                         ("gen_acc", "generalization")):
            ys = [math.nan if p[k] is None else p[k] for p in c["points"]]
            if any(not math.isnan(y) for y in ys):
                ax.plot(xs, ys, "o-", ms=3, label=label)
        for i, x in enumerate(ch["alpha"] for ch in c["chosen"] if ch["alpha"] is not None):
            ax.axvline(x, color="grey", ls="--", lw=0.8, label="chosen α" if i == 0 else None)
        if c["threshold"] is not None:
            ax.axhline(c["threshold"], color="grey", ls=":", lw=0.8, label="threshold (α search's split)")
        ax.set_xlabel("α")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(c["group"][:48], fontsize=8, parse_math=False)  # a `$` in a label is text, not TeX
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
