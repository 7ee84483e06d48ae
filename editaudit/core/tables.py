"""Plain-text tables for the terminal (no extra dependency)."""

from __future__ import annotations

from editaudit.contracts import metrics


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

    def line(vals):
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def audit_table(audit: dict, headline_only: bool = False) -> str:
    """baseline / candidate / delta [95% CI] / p for every metric of an audit (or the headline ones)."""
    base, cand, deltas = audit["metrics"]["baseline"], audit["metrics"]["candidate"], audit.get("deltas", {})
    rows = []
    for name in metrics.headline(set(base) | set(cand)) if headline_only else sorted(set(base) | set(cand)):
        d = deltas.get(name) or {}
        ci = d.get("ci95")
        rows.append([name, base.get(name), cand.get(name),
                     None if d.get("value") is None else f"{d['value']:+.4f}",
                     None if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]",
                     None if d.get("p_value") is None else f"{d['p_value']:.3g}"])
    return render(["metric", "baseline", "candidate", "delta", "95% CI", "p"], rows)
