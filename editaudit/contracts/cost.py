"""What an edit request will cost, in model passes over one image, computed before it is accepted.

A spec that would run for months must be refused at the door (422 naming the cost and the limit), not discovered
by a worker. The estimate counts what dominates: every attack's iterations x restarts x radii on every audited
image (baseline and candidate), every corruption cell (one forward pass each), the clean passes, the edit's own
optimisation steps on its batch, and one audit per layer of a sweep. It is an upper-bound-style count, not a time.
"""

from __future__ import annotations

from editaudit.contracts.audit import AuditConfig
from editaudit.contracts.edits import EditParams

MODELS_AUDITED = 2  # baseline and candidate (the baseline's share may come from the cache; counted anyway)


def audit_passes(cfg: AuditConfig, images: int) -> int:
    """Passes of one audit over `images` images in all (every split, after max_samples)."""
    per_image = 1 + sum(a.passes_per_image() for a in cfg.attacks)
    if cfg.corruptions is not None:
        per_image += len(cfg.corruptions.resolved_names) * len(cfg.corruptions.severities)
    return MODELS_AUDITED * per_image * images


def edit_passes(params: EditParams, edit_examples: int) -> int:
    """The edit's own optimisation: steps x the examples each step sees (nested edits, e.g. 1-LI's base, too)."""
    total = 0
    for _, p in params.scopes():
        steps = max(getattr(p, name, 0) or 0 for name in ("steps", "max_steps"))
        batch = min(getattr(p, "batch_size", edit_examples) or edit_examples, edit_examples)
        total += steps * max(batch, 1)
    return total


def estimate(params: EditParams, cfg: AuditConfig, split_sizes: dict[str, int], layers: int = 1) -> dict[str, int]:
    """{"audit", "edit", "total"} in image passes; `split_sizes` = images per audited split before max_samples."""
    images = sum(min(n, cfg.max_samples or n) for n in split_sizes.values())
    audit, edit = audit_passes(cfg, images), edit_passes(params, split_sizes.get("edit", 0))
    return {"audit": audit * layers, "edit": edit * layers, "total": (audit + edit) * layers}
