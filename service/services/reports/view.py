"""What an audit report says, in the order a reviewer reads it: the verdict, what changed (baseline -> candidate
with intervals), the edit itself, the regressions by significance and size, then everything else. A pure function of
the audit as the API serves it and the facts around it (its edit, model lineage, gate result), so the HTML page, the
Markdown comment and the console's audit page cannot disagree."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from editaudit.contracts import metrics as M
from editaudit.contracts.audit_result import Delta
from editaudit.service.schemas.audits import AuditOut

VERDICT_WORD = {"pass": "PASS", "warn": "PASS with warnings", "fail": "BLOCKED"}


@dataclass(frozen=True)
class EditFacts:
    """The edit that made the candidate: the request's fields, its hyperparameters beside the method's defaults."""

    id: str
    method: str
    layers: list[str]
    hyperparams: list[tuple[str, Any, bool]]  # (name, value, is the method's default)
    datasets: dict[str, str]  # split -> dataset ref
    status: str
    model_id: str
    edited_model_id: str | None = None
    lineage: list[str] = field(default_factory=list)  # model ids, root first, ending with the edited model
    model_name: str | None = None
    study_id: str | None = None


@dataclass(frozen=True)
class Row:
    """One metric, baseline -> candidate, with the paired delta and whether it is a regression."""

    label: str
    metric: str
    baseline: float | None
    candidate: float | None
    baseline_ci: tuple[float, float] | None
    candidate_ci: tuple[float, float] | None
    delta: float | None
    ci: tuple[float, float] | None
    p: float | None
    tone: str  # worse | better | same | unknown: the direction that matters for this metric
    significant: bool  # the interval excludes zero

    @property
    def css(self) -> str:
        """worse-sig | worse | better-sig | better | same: the colour a reader sees."""
        if self.tone in ("worse", "better"):
            return f"{self.tone}-sig" if self.significant else self.tone
        return "same"


@dataclass(frozen=True)
class Gate:
    verdict: str | None  # pass | warn | fail; None: not gated (why says so)
    policy: str
    rules: list[dict]
    notes: list[str]
    why: str | None = None

    @property
    def word(self) -> str:
        return VERDICT_WORD.get(self.verdict or "", "not gated")

    @property
    def ordered(self) -> list[dict]:
        """fail, then warn, then pass: what blocks first."""
        return sorted(self.rules, key=lambda r: ("fail", "warn", "pass").index(r["outcome"]))

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rules if r["outcome"] != "pass"]


@dataclass
class ReportView:
    audit: AuditOut
    edit: EditFacts | None
    gate: Gate | None
    summary: list[Row]
    regressions: list[Row]
    rows: list[Row]
    attacks: list[str]
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, data: URI)
    gallery: Any = None  # reports.gallery.Gallery, or None when the audit has no per-sample results
    link: str | None = None  # the HTML report's URL, for the Markdown one

    @property
    def title(self) -> str:
        return f"editaudit audit {self.audit.id}"

    @property
    def sweep_table(self) -> tuple[list[str], list[list[str]]]:
        return sweep_rows(self.audit)


def row(audit: AuditOut, name: str, label: str | None = None) -> Row:
    base, cand = audit.metrics.baseline.get(name), audit.metrics.candidate.get(name)
    d: Delta | None = audit.deltas.get(name)
    value = d.value if d is not None and d.value is not None else (
        cand - base if cand is not None and base is not None else None)
    ci = tuple(d.ci95) if d is not None and d.ci95 else None
    iv = audit.intervals
    tone = "unknown"
    if value is not None and not math.isnan(value):
        signed = -value if M.lower_is_better(name) else value
        tone = "worse" if signed < -1e-9 else "better" if signed > 1e-9 else "same"
    significant = ci is not None and (ci[0] > 0 or ci[1] < 0)
    return Row(label or name, name, base, cand,
               tuple(iv.baseline[name]) if iv and name in iv.baseline else None,  # type: ignore[arg-type]
               tuple(iv.candidate[name]) if iv and name in iv.candidate else None,  # type: ignore[arg-type]
               value, ci, d.p_value if d is not None else None, tone, significant)  # type: ignore[arg-type]


def summary_names(audit: AuditOut) -> list[tuple[str, str]]:
    """(label, metric) of what changed, in reading order: clean, each attack, corruption, the edit's own splits."""
    return M.summary(set(audit.metrics.names()), [a.id for a in audit.config.attacks])


def regression_key(r: Row) -> tuple:
    """Significant first, then smaller p, then larger drop."""
    return (not r.significant, r.p if r.p is not None else 1.0, -abs(r.delta or 0.0), r.metric)


EDIT_SPLITS = ("edit", "generalization")
SHARES = ("top_class_share", "edit_class_share", "collapse")


def _descriptive(name: str) -> bool:
    """Not a regression however it moves: agreement with the baseline (it must fall where the edit works), the
    drawdown (the clean accuracy's loss again, listed once as that), and on the edit's own splits the share of the
    target class (a working edit to one class raises it)."""
    m = M.parse(name)
    return m is not None and (m.stat in ("agreement", "drawdown") or (m.split in EDIT_SPLITS and m.stat in SHARES))


def build(audit: AuditOut, edit: EditFacts | None = None, gate: Gate | None = None, gallery: Any = None,
          link: str | None = None) -> ReportView:
    rows = [row(audit, n) for n in audit.metrics.names()]
    regressions = sorted((r for r in rows if r.tone == "worse" and not _descriptive(r.metric)), key=regression_key)
    return ReportView(audit=audit, edit=edit, gate=gate,
                      summary=[row(audit, n, label) for label, n in summary_names(audit)],
                      regressions=regressions, rows=rows, attacks=[a.describe() for a in audit.config.attacks],
                      gallery=gallery, link=link)


def fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def fmt_ci(ci: tuple[float, float] | None, signed: bool = True) -> str:
    return "" if ci is None else f"[{fmt(ci[0], signed)}, {fmt(ci[1], signed)}]"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


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
