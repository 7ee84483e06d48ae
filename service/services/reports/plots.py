"""The report's plots, as PNG data URIs (the HTML stays one offline file). Each marks what was configured: the
attack's ε on its curve, the chosen α and the target on 1-LI's path. Corruption heat maps show baseline, candidate
and their difference side by side, the two accuracies on one 0..1 scale and every split's difference on one
symmetric scale, so colours compare across panels and splits."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from editaudit.contracts import metrics as M
from editaudit.service.schemas.audits import AuditOut

DPI = 100


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _nan(values: list) -> list[float]:
    """None (undefined, or NaN as stored) plots as a gap."""
    return [float("nan") if v is None else v for v in values]


def _cells(audit: AuditOut, split: str) -> dict[tuple[str, int], tuple[float, float]]:
    out = {}
    for name in audit.metrics.names():
        cell = M.corruption_cell(name, split)
        if cell:
            b, c = audit.metrics.baseline.get(name), audit.metrics.candidate.get(name)
            out[cell] = (float("nan") if b is None else b, float("nan") if c is None else c)
    return out


def heat_maps(audit: AuditOut) -> list[tuple[str, str]]:
    plt = _plt()
    per_split = {split: cells for split in M.SPLITS if (cells := _cells(audit, split))}
    diffs = [c - b for cells in per_split.values() for b, c in cells.values() if not math.isnan(c - b)]
    lim = max(0.02, max((abs(d) for d in diffs), default=0.0))
    out = []
    for split, cells in per_split.items():
        types = list(dict.fromkeys(t for t, _ in cells))
        sevs = sorted({s for _, s in cells})
        grids = [[[cells.get((t, s), (float("nan"),) * 2)[k] for s in sevs] for t in types] for k in (0, 1)]
        grids.append([[c - b for b, c in zip(rb, rc, strict=True)] for rb, rc in zip(*grids, strict=True)])
        width = 0.55 * len(sevs) + 1.6
        fig, axes = plt.subplots(1, 3, figsize=(3 * width + 1.6, 0.3 * len(types) + 1.4), sharey=True)
        for ax, grid, title, diff in zip(axes, grids, ("baseline", "candidate", "candidate − baseline"),
                                         (False, False, True), strict=True):
            im = ax.imshow(grid, cmap="RdBu" if diff else "viridis", vmin=-lim if diff else 0.0,
                           vmax=lim if diff else 1.0, aspect="auto")
            ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
            ax.set_xlabel("severity")
            ax.set_title(f"{split}: {title}" if not diff and title == "baseline" else title, fontsize=10)
            for i, r in enumerate(grid):
                for j, v in enumerate(r):
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:+.2f}" if diff else f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                                color=("white" if abs(v) > 0.6 * lim else "black") if diff else
                                ("black" if v > 0.55 else "white"))
            fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        axes[0].set_yticks(range(len(types)), types, fontsize=8)
        out.append((f"{split}: corruption heat map (baseline, candidate, difference)", png(fig)))
    return out


def eps_curves(audit: AuditOut) -> list[tuple[str, str]]:
    plt = _plt()
    configured = {a.id: (a.radii() or [None])[0] for a in audit.config.attacks}
    out = []
    for key, curve in (audit.curves or {}).items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(curve.eps, _nan(curve.baseline), "o-", label="baseline")
        ax.plot(curve.eps, _nan(curve.candidate), "s-", label="candidate")
        eps = configured.get(key.rsplit(".", 1)[-1])
        if eps is not None:
            ax.axvline(eps, color="grey", ls="--", lw=1, label=f"configured ε = {eps:g}")
        ax.set_xlabel("ε")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.set_title(f"{key}: accuracy vs ε")
        out.append((f"{key}: accuracy vs ε", png(fig)))
    return out


def alpha_curve(audit: AuditOut) -> list[tuple[str, str]]:
    points = audit.alpha_curve
    if not points:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    pts = sorted(points, key=lambda p: p.alpha)
    xs = [p.alpha for p in pts]
    for metric in sorted({k for p in pts for k in p.metrics}):
        ax.plot(xs, _nan([p.metrics.get(metric) for p in pts]), "o-", ms=4, label=metric)
    mli = audit.mli
    if mli is not None:
        ax.axvline(mli.alpha, color="black", ls="--", lw=1, label=f"chosen α = {mli.alpha:.3g}")
        if mli.threshold is not None:
            ax.axhline(mli.threshold, color="crimson", ls=":", lw=1.2,
                       label=f"target: {mli.target_split or 'edit'} accuracy ≥ {mli.threshold:.3g}")
    ax.set_xlabel("α  (W = W0 + α (W1 − W0))")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("1-layer interpolation: metrics along α")
    return [("alpha curve: 1-LI path, chosen α and target", png(fig))]


def sweep(audit: AuditOut) -> list[tuple[str, str]]:
    table = audit.sweep
    if not table or not table.rows:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(table.rows) + 2), 3.4))
    layers = [r.layer for r in table.rows]
    for metric in [m for m in table.metrics if m.endswith(".accuracy")]:
        ax.plot(layers, _nan([r.metrics.get(metric) for r in table.rows]), "o-", label=metric)
    ax.set_xlabel("edited layer")
    ax.set_ylabel("candidate accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("layer sweep: the layer chosen matters")
    return [("layer sweep", png(fig))]


def figures(audit: AuditOut) -> list[tuple[str, str]]:
    return [*alpha_curve(audit), *eps_curves(audit), *heat_maps(audit), *sweep(audit)]
