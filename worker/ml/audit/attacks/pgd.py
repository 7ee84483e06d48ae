"""PGD and FGSM under L-inf and L2: our native path, batched, on the batch's device, no host round trips.

Conventions match ART's `ProjectedGradientDescentPyTorch` so robust accuracies agree (a test checks it):
untargeted, cross-entropy against the given labels, L-inf steps along sign(grad), L2 steps along grad/||grad||,
projection onto the eps-ball around the clean input, then clipping to [0,1]. Random start draws uniformly from the
eps-ball. Gradients are taken with respect to the input only (parameters are frozen by the audit), which skips the
weight-gradient half of every backward pass. On CUDA the forward/backward runs under bf16 autocast; on CPU in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from editaudit.contracts.attacks import FGSMParams, PGDParams
from editaudit.worker.ml.audit.attacks.base import Attack

_TOL = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _grad(model, x_adv, y):
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x_adv.is_cuda):
        logits = model(x_adv)
    loss = F.cross_entropy(logits.float(), y)
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
    dev = gen.device if gen is not None else x.device
    if norm == "inf":
        u = torch.rand(x.shape, generator=gen, device=dev, dtype=x.dtype).to(x.device)
        return (2 * u - 1) * eps
    d = torch.randn(x.shape, generator=gen, device=dev, dtype=x.dtype).to(x.device)
    d = d / (_flat_norm(d) + _TOL)
    r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=gen, device=dev, dtype=x.dtype).to(x.device)
    return d * eps * r.pow(1.0 / x[0].numel())


def _pgd_once(model, x, y, p: PGDParams, gen, random_start: bool) -> torch.Tensor:
    eps, size = float(p.eps), float(p.effective_step_size)
    delta = _random_start(x, p.norm, eps, gen) if random_start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(p.steps):
        x_adv = x_adv + _step(_grad(model, x_adv, y), p.norm, size)
        x_adv = (x + _project(x_adv - x, p.norm, eps)).clamp(0, 1)
    return x_adv.detach()


class PGD(Attack[PGDParams]):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        """With restarts, later restarts (always from a random start) only replace inputs not yet fooled."""
        p = self.params
        x = x.detach()
        best = _pgd_once(model, x, y, p, gen, p.random_start)
        for _ in range(p.restarts - 1):
            with torch.no_grad():
                robust = model(best).argmax(1) == y
            if not robust.any():
                break
            cand = _pgd_once(model, x, y, p, gen, True)
            best = torch.where(robust.view(-1, *([1] * (x.dim() - 1))), cand, best)
        return best


class FGSM(Attack[FGSMParams]):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        x = x.detach()
        x_adv = x + _step(_grad(model, x, y), p.norm, float(p.eps))
        return (x + _project(x_adv - x, p.norm, float(p.eps))).clamp(0, 1).detach()
