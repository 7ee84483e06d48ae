"""The gate's verdict as JUnit XML (one testcase per row), Markdown (a PR comment), HTML and a terminal table.
Every format shows, per drop rule, n, the bound and the threshold, and states which rules were undecided for lack
of samples and which were decided leniently."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET

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


def as_html(result: GateResult, title: str = "editaudit gate") -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(r)) + "</tr>" for r in result.rules)
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title></head><body>"
            f"<h1>{esc(title)}: {WORD[result.verdict]}</h1><table border='1'><tr>"
            + "".join(f"<th>{h}</th>" for h in HEADERS) + f"</tr>{rows}</table>"
            + (f"<ul>{notes}</ul>" if notes else "") + "</body></html>")


def as_table(result: Mapping[str, Any]) -> str:
    """A gate response (`POST /gate`) as the terminal table `editaudit gate` prints, verdict last."""
    gr = GateResult.from_dict(result)
    policy = result["policy"].get("name") or "inline"
    head = f"gate for edit {result['edit_id']} (audit {result['audit_id']}, policy {policy})\n\n"
    body = render(HEADERS, [_cells(r) for r in gr.rules], align_right={2, 3, 4, 5, 6, 7})
    notes = "".join(f"\nnote: {n}" for n in gr.notes)
    return head + body + f"\n{notes}\n\nverdict: {WORD[result['verdict']]}"
