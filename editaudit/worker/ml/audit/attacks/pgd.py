"""PGD and FGSM under L-inf and L2, batched and on-device (our native path; checked against ART in tests).

Conventions match ART's `ProjectedGradientDescentPyTorch` so robust accuracies agree: untargeted, cross-entropy
against the given labels, L-inf steps along sign(grad), L2 steps along grad/||grad||, projection onto the eps-ball
around the clean input, then clipping to [0,1]. Random start draws uniformly from the eps-ball.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.attacks.base import register_attack

_TOL = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _grad(model, x_adv, y):
    x_adv = x_adv.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), y)
    (g,) = torch.autograd.grad(loss, x_adv)
    return g


def _step(g: torch.Tensor, norm: str, size: float) -> torch.Tensor:
    if norm == "inf":
        return size * g.sign()
    return size * g / (_flat_norm(g) + _TOL)


def _project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "inf":
        return delta.clamp(-eps, eps)
    n = _flat_norm(delta)
    return delta * torch.where(n > eps, eps / (n + _TOL), torch.ones_like(n))


def _random_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator | None) -> torch.Tensor:
    if norm == "inf":
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    d = d / (_flat_norm(d) + _TOL)
    r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen, device=x.device, dtype=x.dtype)
    return d * eps * r.pow(1.0 / x[0].numel())


@register_attack("pgd")
def pgd(model, x, y, p, gen=None):
    eps, size = float(p.eps), float(p.effective_step_size)
    x = x.detach()
    delta = _random_start(x, p.norm, eps, gen) if p.random_start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(p.steps):
        x_adv = x_adv + _step(_grad(model, x_adv, y), p.norm, size)
        x_adv = (x + _project(x_adv - x, p.norm, eps)).clamp(0, 1)
    return x_adv.detach()


@register_attack("fgsm")
def fgsm(model, x, y, p, gen=None):
    x = x.detach()
    x_adv = x + _step(_grad(model, x, y), p.norm, float(p.eps))
    return (x + _project(x_adv - x, p.norm, float(p.eps))).clamp(0, 1).detach()
