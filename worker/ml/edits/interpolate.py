"""1-layer interpolation (1-LI, Brown et al. 2023): W(alpha) = W0 + alpha (W1 - W0) on the one edited layer.

alpha trades edit success against how much of the model moves. The default picks the smallest alpha that reaches
80% of what the full edit gains on held-out images of the concept (the generalization set; the edit set without
one): a threshold as a share of the gain, because an absolute one (90% of 8 exemplars = all 8) put alpha at 0.95-1
and 1-LI ended within a point or two of the edit it interpolates. The search exploits the (usually) monotone rise of
accuracy along the path: bisection reaches a 1% resolution in 7 evaluations; if two evaluations contradict
monotonicity it falls back to a grid. Every evaluated alpha is kept as the alpha-curve, plus evenly spaced alphas
with edit, generalization, test and PGD accuracy at each: the trade along the path, stored with the audit.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch

from editaudit.contracts import metrics
from editaudit.contracts.attacks import PGDParams
from editaudit.contracts.edits import InterpolateParams
from editaudit.worker.ml.archs.registry import Normalized
from editaudit.worker.ml.audit.attacks.pgd import PGD
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, changed_keys, edit_method

ROBUST = metrics.adv_accuracy("test", "pgd")  # best_robust: PGD-10 on a test subset


def layer_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def in_layer(key: str, layer: str) -> bool:
    """Whether state_dict key `key` belongs to `layer`, a layer or a block of them."""
    return layer == "" or key == layer or key.startswith(layer + ".")


def interpolated(model0: Normalized, model1: Normalized, layer: str, alpha: float) -> Normalized:
    """A copy of model0 whose `layer` parameters (every parameter under it, for a block) are W0 + alpha (W1 - W0);
    alpha = 0 is model0 exactly."""
    out = copy.deepcopy(model0)
    m0 = dict(model0.net.named_modules())[layer]
    m1 = dict(dict(model1.net.named_modules())[layer].named_parameters())
    mo = dict(dict(out.net.named_modules())[layer].named_parameters())
    with torch.no_grad():
        for name, w0 in m0.named_parameters():
            w1 = m1[name]
            mo[name].copy_(w0 if alpha == 0 else w1 if alpha == 1 else torch.lerp(w0, w1, alpha))
    return out


@torch.no_grad()
def _accuracy(model, ds, device) -> float:
    correct = 0
    for i in range(0, len(ds), 512):
        correct += int((model(ds.images(slice(i, i + 512), device)).argmax(1).cpu() == ds.y[i : i + 512]).sum())
    return correct / len(ds)


def _robust_accuracy(model, ds, eps, device) -> float:
    p = PGDParams(eps=eps, steps=10, step_size=2.5 * eps / 10)
    frozen = copy.deepcopy(model)
    for prm in frozen.parameters():
        prm.requires_grad_(False)
    x, y = ds.x.to(device), ds.y.to(device)
    x_adv = PGD(p).perturb(frozen, x, y)
    with torch.no_grad():
        return float((frozen(x_adv).argmax(1) == y).float().mean())


class AlphaSearch:
    """Evaluates points of the path once each and remembers them (the alpha-curve)."""

    def __init__(self, ctx: EditContext[InterpolateParams], model1: Normalized, layer: str):
        self.ctx, self.model1, self.layer = ctx, model1, layer
        pol = ctx.params.alpha
        self.pol = pol
        split = pol.target_split
        if split == "auto":
            split = "generalization" if "generalization" in ctx.reference else "edit"
        target_ds = ctx.edit_set if split == "edit" else ctx.reference.get("generalization")
        if target_ds is None:
            raise ValueError("alpha.target_split = generalization needs a generalization_set")
        self.split, self.target_ds = split, target_ds
        self.target = metrics.accuracy(split)  # the metric the search drives
        self.threshold: float | None = pol.target  # None until the path's endpoints give the share of the gain
        self.points: dict[float, dict] = {}
        test = ctx.reference.get("test")
        if pol.mode == "best_robust" and test is None:
            raise ValueError("alpha.mode = best_robust needs the test set")
        self.robust_ds = None
        if test is not None and (pol.mode == "best_robust" or pol.curve_robust):
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(test), generator=g)[: pol.robust_samples]
            self.robust_ds = test.take(idx, f"robust:0:{pol.robust_samples}")

    def score(self, alpha: float) -> float:
        alpha = round(alpha, 6)
        if alpha not in self.points:
            m = interpolated(self.ctx.model, self.model1, self.layer, alpha)
            sets = {self.target: self.target_ds, metrics.accuracy("edit"): self.ctx.edit_set,
                    **{metrics.accuracy(k): self.ctx.reference[k] for k in ("generalization", "test")
                       if k in self.ctx.reference}}
            point = {name: _accuracy(m, ds, self.ctx.device) for name, ds in sets.items()}
            if self.robust_ds is not None:
                point[ROBUST] = _robust_accuracy(m, self.robust_ds, self.pol.robust_eps, self.ctx.device)
            self.points[alpha] = point
            self.ctx.progress("alpha search", len(self.points), len(self.points) + 1)
        return self.points[alpha][self.target]

    def resolve_threshold(self) -> float:
        """`target`, or acc(0) + gain_share * (acc(1) - acc(0)) on the target split."""
        if self.threshold is None:
            a0, a1 = self.score(0.0), self.score(1.0)
            # on the k/n grid an accuracy can take, less a hair: a0 + 0.8 * (a1 - a0) computed in floats can land
            # just above the k/n it means, and then asks for one more right answer than intended
            n = len(self.target_ds)
            self.threshold = math.ceil((a0 + self.pol.gain_share * max(0.0, a1 - a0)) * n - 1e-6) / n
        return self.threshold

    def fill_curve(self) -> None:
        """The evenly spaced alphas of the curve (points the search already evaluated are not run again)."""
        n = self.pol.curve_points
        for i in range(n):
            self.score(i / (n - 1) if n > 1 else 1.0)

    def monotone(self) -> bool:
        tol = 1.0 / len(self.target_ds)  # one example
        vals = [self.points[a][self.target] for a in sorted(self.points)]
        return all(b >= a - tol for a, b in itertools.pairwise(vals))

    def window_note(self, alpha: float) -> str:
        """Whether the evaluated points exclude a smaller alpha that also reaches the target. Bisection sees a few
        points: between them a non-monotone path could hide a success window it cannot rule out."""
        below = sorted(a for a in self.points if a < alpha)
        gaps = [b - a for a, b in zip([0.0, *below], [*below, alpha], strict=True)]
        widest = max(gaps, default=0.0)
        if alpha == 0.0:
            return "yes: alpha = 0 reaches the target"
        if widest <= self.pol.resolution + 1e-9:
            return f"yes, to the resolution {self.pol.resolution:g}: every gap below alpha was evaluated"
        return (f"no: only {len(below)} points below alpha were evaluated (widest gap {widest:.3g}); on a "
                "non-monotone path a narrower success window there cannot be excluded (mode fixed or a finer "
                "grid_points would)")

    def curve(self) -> list[dict]:
        return [{"alpha": a, "metrics": self.points[a]} for a in sorted(self.points)]

    def bisect(self) -> tuple[float, str]:
        """Smallest alpha reaching the threshold: bisection, or a grid once the path shows non-monotonicity."""
        target = self.resolve_threshold()
        if self.score(0.0) >= target:  # the original model already meets it: no edit is the smallest
            gains = self.pol.target is not None or self.score(1.0) > self.score(0.0)
            return 0.0, "target met at alpha = 0" if gains else f"the full edit gains nothing on {self.split}"
        lo, hi = 0.0, 1.0
        steps = math.ceil(math.log2(1.0 / self.pol.resolution))
        for _ in range(steps):
            mid = (lo + hi) / 2
            if self.score(mid) >= target:
                hi = mid
            else:
                lo = mid
            if not self.monotone():
                return self.grid(), "grid (non-monotone path)"
        if hi == 1.0 and self.score(1.0) < target:
            return 1.0, "bisection (target not reached at alpha = 1)"
        return hi, "bisection"

    def grid(self) -> float:
        n = max(self.pol.grid_points, 2)
        alphas = [i / (n - 1) for i in range(n)]
        ok = [a for a in alphas if self.score(a) >= self.resolve_threshold()]
        return min(ok) if ok else 1.0

    def best_robust(self, alpha_min: float) -> float:
        n = max(self.pol.grid_points // 2, 3)
        alphas = sorted({alpha_min, *(alpha_min + (1 - alpha_min) * i / (n - 1) for i in range(n))})
        feasible = [a for a in alphas if self.score(a) >= self.resolve_threshold()] or [1.0]
        return max(feasible, key=lambda a: (self.points[round(a, 6)].get(ROBUST, 0.0), -a))


class Interpolate(EditMethod[InterpolateParams]):
    def apply(self, ctx: EditContext[InterpolateParams]) -> EditResult:
        p, layer = ctx.params, ctx.layer
        if "base_edit_id" in ctx.linked_models:
            model1 = ctx.linked_models["base_edit_id"]
        else:
            assert p.base is not None, "InterpolateParams sets a base when no base_edit_id is given"
            base_result = edit_method(p.base.params)().apply(EditContext(
                copy.deepcopy(ctx.model), ctx.edit_set, [layer], p.base.params, ctx.device, ctx.progress,
                ctx.reference, memo=ctx.memo))
            model1 = base_result.model
        moved = {layer_of(k) for k in changed_keys(ctx.model.net.state_dict(), model1.net.state_dict())
                 if not in_layer(k, layer)}
        if moved:
            raise ValueError(f"the base edit changed other layers than {layer!r}: {sorted(moved)}")
        search = AlphaSearch(ctx, model1, layer)
        if p.alpha.mode == "fixed":
            alpha, how = p.alpha.alpha, "fixed"
            search.score(alpha)
        else:
            alpha, how = search.bisect()
            if p.alpha.mode == "best_robust":
                alpha, how = search.best_robust(alpha), how + " + robust grid"
        searched = len(search.points)
        excluded = None if p.alpha.mode == "fixed" else search.window_note(alpha)  # what the search's points rule out
        search.fill_curve()
        monotone = search.monotone()  # on every stored point, the evenly spaced ones included
        model = interpolated(ctx.model, model1, layer, alpha)
        info = {"alpha": alpha, "alpha_search": how, "alpha_evaluations": searched,
                "alpha_curve": search.curve(), "alpha_curve_monotone": monotone, "layer": layer,
                "alpha_target": {"split": search.split, "threshold": search.threshold,
                                 "rule": "target" if p.alpha.target is not None else
                                 f"{p.alpha.gain_share:g} of the full edit's gain"}}
        audit = {"alpha_curve": info["alpha_curve"],  # the path, and whether it was monotone (an MLI check)
                 "mli": {"monotone": monotone, "alpha": alpha, "evaluations": searched, "search": how,
                         "smaller_alpha_excluded": excluded, "target_split": search.split,
                         "threshold": search.threshold}}
        return EditResult(model, [], info, audit)
