"""Direct low-rank editing: learn dW = U V^T (rank r) for one layer from the edit set, then merge it.

Only U and V are trained; the model's own parameters stay frozen, so the edit is constrained to r directions of the
layer's weight space (the paper's point: constrained edits preserve robustness better).
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from editaudit.contracts.edits import LowRankParams, max_rank
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, numerical_rank
from editaudit.worker.ml.edits.training import train_steps


class LowRank(EditMethod[LowRankParams]):
    def apply(self, ctx: EditContext[LowRankParams]) -> EditResult:
        p, layer = ctx.params, ctx.layer
        module = dict(ctx.model.net.named_modules())[layer]
        if not isinstance(module._parameters.get("weight"), torch.Tensor):
            raise ValueError(f"low_rank edits one layer with a weight (a Linear or conv); {layer!r} is a "
                             f"{type(module).__name__} without one of its own: name one of its layers")
        key = f"net.{layer}.weight"
        w0 = dict(ctx.model.named_parameters())[key].detach()
        if w0.dim() < 2:
            raise ValueError(f"low_rank needs a linear or conv weight; {layer!r} has shape {list(w0.shape)}")
        out_dim, in_dim = w0.shape[0], math.prod(w0.shape[1:])
        if p.rank > max_rank(w0.shape):
            raise ValueError(f"rank {p.rank} exceeds what {layer!r} allows: min({out_dim}, {in_dim})")
        gen = torch.Generator().manual_seed(p.seed)
        u = torch.zeros(out_dim, p.rank, device=ctx.device, requires_grad=True)
        v = (torch.randn(in_dim, p.rank, generator=gen) / math.sqrt(in_dim)).to(ctx.device).requires_grad_(True)
        for prm in ctx.model.parameters():
            prm.requires_grad_(False)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return functional_call(ctx.model, {key: w0 + (u @ v.T).view_as(w0)}, (x,))

        info = train_steps(ctx, [u, v], p.steps, forward)
        delta = (u @ v.T).detach()
        with torch.no_grad():
            dict(ctx.model.named_parameters())[key].add_(delta.view_as(w0))
        for prm in ctx.model.parameters():
            prm.requires_grad_(True)
        rank = numerical_rank(delta)
        return EditResult(ctx.model, [], {"layer": layer, "rank": p.rank, "delta_rank": rank, **info})
