"""The gate's verdict as JUnit XML (one testcase per rule), Markdown (a PR comment) and a terminal table."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from editaudit.core.tables import render
from editaudit.gate.evaluate import GateResult


def as_junit(result: GateResult, suite: str = "editaudit gate") -> str:
    """JUnit XML: one testcase per evaluated rule; fail -> <failure>, warn -> passes with a <system-out> note."""
    fails = sum(r.outcome == "fail" for r in result.rules)
    root = ET.Element("testsuites", name=suite, tests=str(len(result.rules)), failures=str(fails))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.rules)), failures=str(fails),
                       errors="0", skipped="0")
    for r in result.rules:
        tc = ET.SubElement(ts, "testcase", classname="editaudit.gate", name=f"{r.metric}: {r.rule}")
        if r.outcome == "fail":
            ET.SubElement(tc, "failure", message=r.reason, type="GateRuleFailed").text = (
                f"baseline={r.baseline} candidate={r.candidate} delta={r.delta} p={r.p_value}")
        elif r.outcome == "warn":
            ET.SubElement(tc, "system-out").text = f"WARNING: {r.reason}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


MARK = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}


def _f(v, signed=False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if signed else f"{v:.4f}")


def as_markdown(result: GateResult, title: str = "editaudit gate") -> str:
    """Short enough for a PR comment or a GitHub job summary."""
    lines = [f"### {title}: {MARK[result.verdict]}", "",
             "| rule | metric | baseline | candidate | Δ | p | outcome |", "|---|---|---:|---:|---:|---:|---|"]
    for r in result.rules:
        p = "—" if r.p_value is None else f"{r.p_value:.3g}"
        lines.append(f"| {r.rule} | `{r.metric}` | {_f(r.baseline)} | {_f(r.candidate)} | {_f(r.delta, True)} | {p} "
                     f"| {MARK[r.outcome]} |")
    return "\n".join(lines) + "\n"


def as_table(result: dict) -> str:
    """A gate response (`POST /gate`) as the terminal table `editaudit gate` prints, verdict last."""
    rows = [[r["rule"], r["metric"], r["baseline"], r["candidate"],
             None if r["delta"] is None else f"{r['delta']:+.4f}",
             None if r["p_value"] is None else f"{r['p_value']:.3g}", r["outcome"].upper(), r["reason"]]
            for r in result["rules"]]
    policy = result["policy"].get("name") or "inline"
    head = f"gate for edit {result['edit_id']} (audit {result['audit_id']}, policy {policy})\n\n"
    word = {"pass": "PASS", "warn": "PASS with warnings", "fail": "BLOCKED"}[result["verdict"]]
    return head + render(["rule", "metric", "baseline", "candidate", "delta", "p", "outcome", "why"], rows,
                         align_right={2, 3, 4, 5}) + f"\n\nverdict: {word}"
