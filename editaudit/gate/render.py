"""The gate's verdict as JUnit XML (one testcase per row), Markdown (a PR comment), HTML and a terminal table.
Every format shows, per drop rule, n, the bound and the threshold, and states which rules were undecided for lack
of samples and which were decided leniently."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET

from editaudit.contracts import metrics
from editaudit.core.tables import render
from editaudit.gate.evaluate import GateResult, RuleOutcome

MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}
WORD = {"pass": "PASS", "warn": "PASS with warnings", "fail": "BLOCKED"}
HEADERS = ["rule", "metric", "baseline", "candidate", "Δ", "n", "bound", "threshold", "outcome", "why"]


def _f(v: float | None, signed: bool = False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if signed else f"{v:.4f}")


def _cells(r: RuleOutcome) -> list[str]:
    outcome = r.outcome.upper() + (" (undecided)" if r.undecided else "") + (" (lenient)" if r.lenient else "")
    return [r.rule, r.metric, _f(r.baseline), _f(r.candidate), _f(r.delta, True), "—" if r.n is None else str(r.n),
            _f(r.bound, True), "—" if r.threshold is None else f"{r.threshold:g}", outcome, r.reason]


def as_junit(result: GateResult, suite: str = "editaudit gate") -> str:
    """JUnit XML: one testcase per row; fail -> <failure>, warn -> passes with a <system-out> note; the notes
    (undecided, lenient) go to the suite's <system-out>."""
    fails = sum(r.outcome == "fail" for r in result.rules)
    root = ET.Element("testsuites", name=suite, tests=str(len(result.rules)), failures=str(fails))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.rules)), failures=str(fails),
                       errors="0", skipped="0")
    for r in result.rules:
        tc = ET.SubElement(ts, "testcase", classname="editaudit.gate", name=f"{r.metric}: {r.rule}")
        detail = f"baseline={r.baseline} candidate={r.candidate} delta={r.delta} n={r.n} bound={r.bound} " \
                 f"threshold={r.threshold} p={r.p_value}"
        if r.outcome == "fail":
            ET.SubElement(tc, "failure", message=r.reason,
                          type="GateRuleUndecided" if r.undecided else "GateRuleFailed").text = detail
        elif r.outcome == "warn":
            ET.SubElement(tc, "system-out").text = f"WARNING: {r.reason}"
    if result.notes:
        ET.SubElement(ts, "system-out").text = "\n".join(result.notes)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def as_markdown(result: GateResult, title: str = "editaudit gate") -> str:
    """Short enough for a PR comment or a GitHub job summary."""
    lines = [f"### {title}: {MARK[result.verdict]}", "",
             "| rule | metric | baseline | candidate | Δ | n | bound | threshold | outcome |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result.rules:
        c = _cells(r)
        lines.append(f"| {c[0]} | `{c[1]}` | " + " | ".join(c[2:8]) + f" | {MARK[r.outcome]}"
                     + (" (undecided)" if r.undecided else "") + (" (lenient)" if r.lenient else "") + " |")
    lines += [""] + [f"- {n}" for n in result.notes] if result.notes else []
    return "\n".join(lines) + "\n"


GATE_CSS = ("body{font:14px/1.45 system-ui,sans-serif;color:#1f2328;margin:0}main{max-width:1240px;margin:0 auto;"
            "padding:16px 24px}table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:3px 8px;"
            "vertical-align:top}th{background:#f6f8fa;text-align:left}td.n{text-align:right;white-space:nowrap}"
            ".verdict{border:1px solid;border-radius:8px;padding:12px 16px;margin:12px 0}.verdict b{font-size:22px}"
            ".v-fail{background:#fde8e7;color:#b42318}.v-warn{background:#fff4d6;color:#9a6700}"
            ".v-pass{background:#e6f4ea;color:#1a7f37}.o-fail{color:#b42318;font-weight:600}"
            ".o-warn{color:#9a6700;font-weight:600}.o-pass{color:#1a7f37}code{font-size:12.5px}")
ORDER = ("fail", "warn", "pass")


def _interval(ci: Any, signed: bool = True) -> str:
    return (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f" [{ci[0]:.3f}, {ci[1]:.3f}]") if ci else ""


def changes_html(audit: Mapping[str, Any]) -> str:
    """What changed, baseline -> candidate with intervals (an audit as GET /audits/{id} serves it)."""
    esc = html.escape
    m, iv, deltas = audit.get("metrics") or {}, audit.get("intervals") or {}, audit.get("deltas") or {}
    base, cand = m.get("baseline") or {}, m.get("candidate") or {}
    attacks = [a.get("id") or a.get("name") for a in (audit.get("config") or {}).get("attacks") or []]
    rows = []
    for label, name in metrics.summary(set(base) | set(cand), attacks):
        d = deltas.get(name) or {}
        ci = d.get("ci95")
        tone = "" if d.get("value") is None else ("o-fail" if d["value"] < 0 else "o-pass") if ci and (
            ci[0] > 0 or ci[1] < 0) else ""
        cells = [f"{_f(base.get(name))}{_interval((iv.get('baseline') or {}).get(name), signed=False)}",
                 f"{_f(cand.get(name))}{_interval((iv.get('candidate') or {}).get(name), signed=False)}",
                 f"{_f(d.get('value'), True)}{_interval(ci)}"]
        rows.append(f"<tr class='{tone}'><td>{esc(label)}</td>" + "".join(f"<td class='n'>{c}</td>" for c in cells)
                    + "</tr>")
    if not rows:
        return ""
    return ("<h2>What changed</h2><table><tr><th>measure</th><th>baseline [95% CI]</th><th>candidate [95% CI]</th>"
            "<th>Δ [95% CI]</th></tr>" + "".join(rows) + "</table>")


def as_html(result: GateResult, title: str = "editaudit gate", link: str | None = None,
            audit: Mapping[str, Any] | None = None) -> str:
    """One offline page, answer first: the verdict and how many rules blocked, what changed (with `audit`, the
    audit the gate read), then the rules (what blocks first), each with its numbers and reason, then the notes;
    `link`: the audit's full report."""
    esc = html.escape
    rules = sorted(result.rules, key=lambda r: ORDER.index(r.outcome))
    failed = [r for r in rules if r.outcome != "pass"]
    rows = "".join(f"<tr><td class='o-{r.outcome}'>{esc(c[8])}</td><td>{esc(c[0])}</td><td><code>{esc(c[1])}</code>"
                   "</td>" + "".join(f"<td class='n'>{esc(v)}</td>" for v in c[2:8]) + f"<td>{esc(c[9])}</td></tr>"
                   for r in rules for c in [_cells(r)])
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    what = (f"{len(failed)} of {len(rules)} rules not passed: "
            + ", ".join(f"<code>{esc(r.metric)}</code>" for r in failed)) if failed else \
        f"all {len(rules)} rules passed"
    more = f"<p><a href='{esc(link)}'>The audit's full report</a></p>" if link else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{GATE_CSS}</style></head><body><main><h1>{esc(title)}</h1>"
            f"<section class='verdict v-{result.verdict}' data-verdict='{result.verdict}'><b>{WORD[result.verdict]}"
            f"</b><br>{what}</section>{more}{changes_html(audit) if audit else ''}<h2>Rules</h2><table><tr>"
            + "".join(f"<th>{h}</th>" for h in (
                "outcome", *HEADERS[:8], "why")) + f"</tr>{rows}</table>"
            + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "") + "</main></body></html>")


def as_table(result: Mapping[str, Any]) -> str:
    """A gate response (`POST /gate`) as the terminal table `editaudit gate` prints, verdict last."""
    gr = GateResult.from_dict(result)
    policy = result["policy"].get("name") or "inline"
    head = f"gate for edit {result['edit_id']} (audit {result['audit_id']}, policy {policy})\n\n"
    body = render(HEADERS, [_cells(r) for r in gr.rules], align_right={2, 3, 4, 5, 6, 7})
    notes = "".join(f"\nnote: {n}" for n in gr.notes)
    return head + body + f"\n{notes}\n\nverdict: {WORD[result['verdict']]}"
