"""The gradient loop the gradient methods share (`finetune`, `finetune_layer`, `enn`, `low_rank`): cross-entropy to
the edit targets, a KL term that keeps the original predictions on a locality set, a stop once every edit example is
classified as its target, BatchNorm in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from editaudit.worker.ml.edits.base import EditContext


def train_steps(ctx: EditContext, params: Sequence[torch.Tensor], steps: int,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Optimise `params` for at most `steps` steps; `forward` is the model being edited (default: ctx.model; low_rank
    passes the model with its factored update). The locality set is `ctx.reference["locality"]`."""
    p = ctx.params
    forward = forward or ctx.model
    stop_when_fixed = p.stop_when_fixed
    gen = torch.Generator().manual_seed(p.seed)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[getattr(p, "optimizer", "adam")]
    opt = opt_cls(params, lr=p.lr, weight_decay=getattr(p, "weight_decay", 0.0))
    x, y = ctx.edit_set.x, ctx.edit_set.y
    n = len(ctx.edit_set)
    ctx.model.eval()  # BatchNorm statistics stay as trained: an edit must not drift them
    locality = ctx.reference.get("locality") if p.locality_weight > 0 else None
    if locality is not None:
        with torch.no_grad():  # the original predictions the edit must keep
            ref = torch.cat([forward(locality.images(slice(i, i + 512), ctx.device)).log_softmax(1)
                             for i in range(0, len(locality), 512)])
    losses, fixed_at = [], None
    for step in range(steps):
        if stop_when_fixed:
            with torch.no_grad():
                if bool((forward(x.to(ctx.device)).argmax(1) == y.to(ctx.device)).all()):
                    fixed_at = step
                    break
        idx = torch.randperm(n, generator=gen)[: p.batch_size] if n > p.batch_size else torch.arange(n)
        loss = F.cross_entropy(forward(x[idx].to(ctx.device)), y[idx].to(ctx.device))
        if locality is not None:
            j = torch.randint(len(locality), (min(p.batch_size, len(locality)),), generator=gen)
            new = forward(locality.images(j, ctx.device)).log_softmax(1)
            loss = loss + p.locality_weight * F.kl_div(new, ref[j], log_target=True, reduction="batchmean")
        losses.append(float(loss.detach()))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {losses[-1]} at step {step}; try a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.progress("editing", step + 1, steps)
    info = {"final_loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
            "steps": len(losses), "locality": None if locality is None else len(locality)}
    if stop_when_fixed:
        info["edit_set_fixed"] = fixed_at is not None
    return info


def train_only(ctx: EditContext, params: list[torch.nn.Parameter]) -> None:
    """Freeze everything but `params` (for the duration of the edit)."""
    keep = {id(q) for q in params}
    for prm in ctx.model.parameters():
        prm.requires_grad_(id(prm) in keep)


def layer_params(ctx: EditContext) -> list[torch.nn.Parameter]:
    """The parameters of the named layers, blocks included (every parameter under them), each once: layers may
    overlap (`layer4` and `layer4.1.conv2`)."""
    modules = dict(ctx.model.net.named_modules())
    params = {id(prm): prm for layer in ctx.layers for prm in modules[layer].parameters()}
    return list(params.values())


