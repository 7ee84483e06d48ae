"""Plain-text tables for the terminal (no extra dependency)."""

from __future__ import annotations

from collections.abc import Mapping

from editaudit.contracts.audit_result import AuditResult


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def render(headers: list[str], rows: list[list], align_right: set[int] | None = None) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    right = align_right if align_right is not None else set(range(1, len(headers)))

    def line(vals: list[str]) -> str:
        # a row has a cell per header at least (widths reads each); one with more is cut to the headers
        cols = enumerate(zip(vals, widths, strict=False))
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in cols).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def audit_table(audit, headline_only: bool = False) -> str:
    """baseline / candidate / delta [95% CI] / p for every metric of an audit (or the headline ones). `audit`: the
    contract's AuditResult, or a document in its shape (the API's audit JSON)."""
    result = AuditResult.from_document(audit) if isinstance(audit, Mapping) else audit
    base, cand = result.metrics.baseline, result.metrics.candidate
    rows = []
    for name in result.headline() if headline_only else result.metrics.names():
        d = result.deltas.get(name)
        ci = d.ci95 if d is not None else None
        rows.append([name, base.get(name), cand.get(name),
                     None if d is None or d.value is None else f"{d.value:+.4f}",
                     None if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]",
                     None if d is None or d.p_value is None else f"{d.p_value:.3g}"])
    return render(["metric", "baseline", "candidate", "delta", "95% CI", "p"], rows)
