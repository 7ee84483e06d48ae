"""The audit as a CI comment: verdict, what changed, the top regressions and a link to the full report; short
enough for a pull request. Every value that came from a submitter (ids are ours; layer names, hyperparameters and
policy names are not) is put in code spans with backticks removed, so it cannot open a heading or a link."""

from __future__ import annotations

import re
from dataclasses import replace

from editaudit.service.services.reports.view import ReportView, Row, fmt, fmt_ci, fmt_p, sweep_rows

TOP_REGRESSIONS = 5
MARK = {"pass": "✅", "warn": "⚠️", "fail": "❌"}
TONE = {"worse-sig": "🔻", "worse": "↓", "better-sig": "🔺", "better": "↑", "same": "", "unknown": ""}


def code(v: object) -> str:
    return "`" + " ".join(str(v).replace("`", "'").split()).replace("|", "\\|") + "`"


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def plain(v: object) -> str:
    """Text (a gate rule's reason, which quotes a policy author's strings) that renders as itself: one line, every
    Markdown and HTML special character escaped."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(v).split()))


def _cells(r: Row) -> str:
    return (f"| {r.label} | {fmt(r.baseline)} | {fmt(r.candidate)} | {TONE[r.css]} {fmt(r.delta, True)} "
            f"{fmt_ci(r.ci)} | {fmt_p(r.p)} |")


def render(v: ReportView) -> str:
    a = v.audit
    lines = []
    if v.gate is not None:
        lines.append(f"### {MARK.get(v.gate.verdict or '', '…')} editaudit: **{v.gate.word}** "
                     f"(policy {code(v.gate.policy)})")
    else:
        lines.append("### editaudit audit")
    e = v.edit
    what = f"{code(e.method)} on {', '.join(code(x) for x in e.layers)} of model `{e.model_id}`" if e else ""
    lines += ["", f"Audit `{a.id}` of edit `{a.edit_id}` ({a.status}){': ' + what if what else ''}.", ""]
    if v.gate is not None and v.gate.why:
        lines += [f"Not gated: {v.gate.why}", ""]
    if a.sweep:
        return "\n".join(lines + _sweep(v)) + "\n"
    if v.summary:
        lines += ["| what changed | baseline | candidate | Δ [95% CI] | p |", "|---|---:|---:|---:|---:|"]
        lines += [_cells(r) for r in v.summary]
    failed = v.gate.failed if v.gate else []
    if failed:
        lines += ["", "**Gate rules not passed**", ""]
        lines += [f"- {MARK[r['outcome']]} {code(r['metric'])}: {plain(r['reason'])}"
                  for r in failed[:TOP_REGRESSIONS]]
    top = v.regressions[:TOP_REGRESSIONS]
    if top:
        lines += ["", f"**Top regressions** ({len(v.regressions)} metrics got worse; significant first)", "",
                  "| metric | baseline | candidate | Δ [95% CI] | p |", "|---|---:|---:|---:|---:|"]
        lines += [_cells(replace(r, label=code(r.metric))) for r in top]
    if v.attacks:
        lines += ["", "Attacks: " + "; ".join(v.attacks) + "."]
    samples = ", ".join(f"{k} {s.n}" for k, s in (a.samples or {}).items())
    lines.append(f"Samples: {samples or '—'}; device {a.device or '—'}.")
    if v.link:
        lines += ["", f"[Full report: plots, heat maps, the images the edit broke and fixed]({v.link})"]
    return "\n".join(lines) + "\n"


def _sweep(v: ReportView) -> list[str]:
    header, rows = sweep_rows(v.audit)
    out = ["Layer sweep: candidate (Δ vs baseline); * = best layer for that metric.", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + (["", f"[Full report]({v.link})"] if v.link else [])
