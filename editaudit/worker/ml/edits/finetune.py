"""Fine-tuning edits: all parameters (`finetune`) or only the named layers (`finetune_layer`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, register_edit


def _train(ctx: EditContext, params: list[torch.nn.Parameter]) -> dict:
    p = ctx.params
    gen = torch.Generator().manual_seed(p.seed)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[p.optimizer]
    opt = opt_cls(params, lr=p.lr, weight_decay=p.weight_decay)
    x, y = ctx.edit_set.x, ctx.edit_set.y
    n = len(ctx.edit_set)
    ctx.model.eval()  # BatchNorm statistics stay as trained: an edit must not drift them
    losses = []
    for step in range(p.steps):
        idx = torch.randperm(n, generator=gen)[: p.batch_size] if n > p.batch_size else torch.arange(n)
        xb, yb = x[idx].to(ctx.device), y[idx].to(ctx.device)
        loss = F.cross_entropy(ctx.model(xb), yb)
        losses.append(float(loss.detach()))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {losses[-1]} at step {step}; try a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.progress("editing", step + 1, p.steps)
    return {"final_loss": losses[-1], "first_loss": losses[0], "steps": p.steps}


@register_edit
class Finetune(EditMethod):
    name = "finetune"

    def apply(self, ctx: EditContext) -> EditResult:
        info = _train(ctx, list(ctx.model.net.parameters()))
        return EditResult(ctx.model, [], info)


@register_edit
class FinetuneLayer(EditMethod):
    name = "finetune_layer"

    def apply(self, ctx: EditContext) -> EditResult:
        modules = dict(ctx.model.net.named_modules())
        for prm in ctx.model.parameters():
            prm.requires_grad_(False)
        params = [prm for layer in ctx.layers for prm in modules[layer].parameters(recurse=False)]
        for prm in params:
            prm.requires_grad_(True)
        info = _train(ctx, params)
        for prm in ctx.model.parameters():
            prm.requires_grad_(True)
        return EditResult(ctx.model, [], info)
