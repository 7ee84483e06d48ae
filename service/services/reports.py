"""Audit reports: versioned JSON, Markdown short enough for a PR comment, self-contained HTML with plots.
(JUnit XML comes from the gate: one testcase per policy rule.) Pure functions of the audit as the API serves it
(AuditOut, typed by editaudit.contracts.audit_result); attacks describe themselves (their parsed params)."""

from __future__ import annotations

import base64
import html
import io
import json
import threading
from collections import OrderedDict

from editaudit.contracts import metrics
from editaudit.core.tables import fmt
from editaudit.service.schemas.audits import AuditOut

REPORT_SCHEMA = "editaudit/audit-report"
REPORT_VERSION = 1


def as_json(audit: AuditOut) -> str:
    return json.dumps({"schema": REPORT_SCHEMA, "schema_version": REPORT_VERSION,
                       "audit": audit.model_dump(mode="json", by_alias=True)}, indent=2)


def headline(audit: AuditOut) -> list[str]:
    """Metric names worth a glance: everything but the per-type and per-severity corruption detail."""
    return metrics.headline(audit.metrics.names())


def attacks(audit: AuditOut) -> list[str]:
    """What each attack was, in its own words (its params' describe(): norm, radius, steps, travel)."""
    return [a.describe() for a in audit.config.attacks]


def _row(audit: AuditOut, name: str) -> list[str]:
    b, c = audit.metrics.baseline.get(name), audit.metrics.candidate.get(name)
    d = audit.deltas.get(name)
    delta = "—" if d is None or d.value is None else f"{d.value:+.4f}"
    ci = "—" if d is None or not d.ci95 else f"[{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]"
    p = "—" if d is None or d.p_value is None else f"{d.p_value:.3g}"
    return [name, fmt(b), fmt(c), delta, ci, p]


def sweep_rows(audit: AuditOut) -> tuple[list[str], list[list[str]]]:
    """A layer sweep as a table: one row per layer, each metric as `candidate (Δ vs baseline)`; the best layer of
    each metric marked with *."""
    sweep = audit.sweep
    if sweep is None:
        return ["layer", "status", "edit"], []
    rows = []
    for r in sweep.rows:
        cells = []
        for n in sweep.metrics:
            v, d = r.metrics.get(n), (r.deltas[n].value if n in r.deltas else None)
            mark = "*" if sweep.best.get(n) == r.layer else ""
            cells.append("—" if v is None else f"{fmt(v)}{mark}" + ("" if d is None else f" ({d:+.3f})"))
        rows.append([r.layer, r.status, r.edit_id] + cells)
    return ["layer", "status", "edit"] + sweep.metrics, rows


def as_markdown(audit: AuditOut) -> str:
    lines = [f"### editaudit audit `{audit.id}` (edit `{audit.edit_id}`): {audit.status}", ""]
    if audit.sweep:
        header, rows = sweep_rows(audit)
        lines += ["Layer sweep: candidate (Δ vs baseline); * = best layer for that metric.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    lines += ["| metric | baseline | candidate | Δ | 95% CI | p |", "|---|---:|---:|---:|---:|---:|"]
    lines += ["| `" + r[0] + "` | " + " | ".join(r[1:]) + " |" for r in (_row(audit, n) for n in headline(audit))]
    hidden = len(audit.metrics.baseline) - len(headline(audit))
    samples = ", ".join(f"{k} {v.n}" for k, v in (audit.samples or {}).items())
    lines += ["", f"Samples: {samples or '—'}; device {audit.device or '—'}; "
                  f"{hidden} per-corruption cells in the HTML report."]
    if attacks(audit):
        lines.append("Attacks: " + "; ".join(attacks(audit)) + ".")
    lines += [f"- {n}" for n in audit.notes or []]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------------- HTML


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figures(audit: AuditOut) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    base, cand = audit.metrics.baseline, audit.metrics.candidate
    for split in metrics.SPLITS:
        cells = {}
        for name in base:
            cell = metrics.corruption_cell(name, split)
            if cell:
                cells[cell] = _difference(cand.get(name), base[name])
        if not cells:
            continue
        types = sorted({t for t, _ in cells}, key=lambda t: list(dict.fromkeys(k for k, _ in cells)).index(t))
        sevs = sorted({s for _, s in cells})
        grid = [[cells.get((t, s), float("nan")) for s in sevs] for t in types]
        lim = max(0.01, max((abs(v) for row in grid for v in row if v == v), default=0.0))
        fig, ax = plt.subplots(figsize=(1.1 * len(sevs) + 3, 0.35 * len(types) + 1.2))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
        ax.set_yticks(range(len(types)), types)
        ax.set_xlabel("severity")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * lim else "black")
        fig.colorbar(im, ax=ax, label="candidate − baseline accuracy")
        ax.set_title(f"{split}: corruption accuracy change")
        out.append((f"{split}: corruption heat map", _png(fig)))
        plt.close(fig)
    for key, curve in (audit.curves or {}).items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(curve.eps, _nan(curve.baseline), "o-", label="baseline")
        ax.plot(curve.eps, _nan(curve.candidate), "s-", label="candidate")
        ax.set_xlabel("eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(f"{key}: accuracy vs eps")
        out.append((f"{key}: accuracy vs eps", _png(fig)))
        plt.close(fig)
    sweep = audit.sweep
    if sweep and sweep.rows:
        fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(sweep.rows) + 2), 3.4))
        layers = [r.layer for r in sweep.rows]
        for metric in [m for m in sweep.metrics if m.endswith(".accuracy")]:
            ax.plot(layers, _nan([r.metrics.get(metric) for r in sweep.rows]), "o-", label=metric)
        ax.set_xlabel("edited layer")
        ax.set_ylabel("candidate accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.set_title("layer sweep: the layer chosen matters")
        out.append(("layer sweep", _png(fig)))
        plt.close(fig)
    alpha = audit.alpha_curve
    if alpha:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [p.alpha for p in alpha]
        for metric in sorted({k for p in alpha for k in p.metrics}):
            ax.plot(xs, _nan([p.metrics.get(metric) for p in alpha]), "o-", label=metric)
        ax.set_xlabel("alpha")
        ax.legend(fontsize=7)
        ax.set_title("1-layer interpolation: metrics along alpha")
        out.append(("alpha curve", _png(fig)))
        plt.close(fig)
    return out


def _nan(values: list) -> list[float]:
    """None (undefined, or NaN as stored) plots as a gap."""
    return [float("nan") if v is None else v for v in values]


def _difference(c: float | None, b: float | None) -> float:
    return float("nan") if c is None or b is None else c - b


def as_html(audit: AuditOut) -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _row(audit, n)) + "</tr>"
                   for n in audit.metrics.names())
    figs = "".join(f"<figure><img alt='{esc(t)}' src='{src}'><figcaption>{esc(t)}</figcaption></figure>"
                   for t, src in _figures(audit))
    notes = "".join(f"<li>{esc(n)}</li>" for n in audit.notes or [])
    notes = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    if attacks(audit):
        notes = "<h2>Attacks</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in attacks(audit)) + "</ul>" + notes
    if audit.sweep:
        header, srows = sweep_rows(audit)
        notes += ("<h2>Layer sweep</h2><p>candidate (Δ vs baseline); * = best layer for that metric</p><table><tr>"
                  + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
                  + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in srows) + "</table>")
    meta = audit.model_dump(mode="json", by_alias=True,
                            include={"status", "device", "samples", "versions", "config", "profile", "durations_s"})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>editaudit audit {esc(audit.id)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left;font-family:monospace}}
figure{{display:inline-block;margin:1em}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>editaudit audit <code>{esc(audit.id)}</code></h1><p>edit <code>{esc(audit.edit_id)}</code> —
status <b>{esc(audit.status)}</b></p>{notes}{figs}
<h2>All metrics</h2><table>\
<tr><th>metric</th><th>baseline</th><th>candidate</th><th>Δ</th><th>95% CI</th><th>p</th></tr>
{rows}</table><h2>Run</h2><pre>{esc(json.dumps(meta, indent=2, default=str))}</pre></body></html>"""


RENDERERS = {"json": as_json, "md": as_markdown, "html": as_html}
_rendered: OrderedDict[tuple, str] = OrderedDict()
_rendered_lock = threading.Lock()
CACHED_REPORTS = 128


def rendered(audit: AuditOut, fmt: str) -> str:
    """A report of a finished audit, rendered once (the HTML one draws its plots: ~1 s) and kept in a small LRU
    keyed by the audit and its finish time; an unfinished audit is rendered each time (its numbers still move)."""
    if audit.finished_at is None:
        return RENDERERS[fmt](audit)
    key = (audit.id, fmt, str(audit.finished_at), audit.status)
    with _rendered_lock:
        if key in _rendered:
            _rendered.move_to_end(key)
            return _rendered[key]
    body = RENDERERS[fmt](audit)
    with _rendered_lock:
        _rendered[key] = body
        while len(_rendered) > CACHED_REPORTS:
            _rendered.popitem(last=False)
    return body
