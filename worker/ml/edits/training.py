"""The gradient loop the gradient methods share (`finetune`, `finetune_layer`, `enn`, `low_rank`): cross-entropy to
the edit targets, a KL term that keeps the original predictions on a locality set, a trust region on that set (a step
that changes too many of its predictions is undone and the learning rate halved), a stop once every edit example is
classified as its target, BatchNorm in eval mode.

Why the trust region: the KL term alone is a fixed weight against a cross-entropy whose size depends on the edit. An
edit whose first loss is large (a texture at full strength: 11-30 nats) pulled the whole model to the edit class
under every gradient method's defaults (bench/defaults.py, `stamp`: clean 0.99 -> 0.14 under enn, top-class share
0.12 -> 0.89). A bound on what the edit may change, checked on held-out data after every step, holds whatever the
loss scale, the method or the learning rate."""

from __future__ import annotations

import copy
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
    guard = LocalityGuard(forward, locality, ctx.device, p.max_locality_change, p.seed) \
        if locality is not None and p.max_locality_change < 1 else None
    losses: list[float] = []
    stopped, rejected = "steps", 0
    for step in range(steps):
        if stop_when_fixed:
            with torch.no_grad():
                if bool((forward(x.to(ctx.device)).argmax(1) == y.to(ctx.device)).all()):
                    stopped = "fixed"
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
        saved = guard.save(params, opt) if guard is not None else None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.progress("editing", step + 1, steps)
        if guard is not None and saved is not None and guard.exceeded():
            guard.restore(params, opt, saved)  # undo the step, then try again at half the step size
            rejected += 1
            if rejected >= p.backtracks:
                stopped = "locality"
                break
            for group in opt.param_groups:
                group["lr"] *= 0.5
    info = {"final_loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
            "steps": len(losses), "locality": None if locality is None else len(locality), "stopped": stopped}
    if guard is not None:
        info.update(locality_change=guard.change(), rejected_steps=rejected, accepted_steps=len(losses) - rejected,
                    final_lr=opt.param_groups[0]["lr"])
    if stop_when_fixed:
        info["edit_set_fixed"] = stopped == "fixed"
    return info


class LocalityGuard:
    """The trust region: the share of the locality set (at most GUARD_SAMPLES of its images, a seeded draw) whose
    prediction differs from the original model's, checked after every step against `bound`. It guards what the
    locality set shows: the default one (held out of the test split) is ordinary data; a submitter's own set could
    be chosen to miss a collapse, which is why the audit's test.collapse and clean-accuracy rules, not this loop,
    are what the gate trusts."""

    GUARD_SAMPLES = 1024

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], locality, device: torch.device,
                 bound: float, seed: int = 0):
        self.forward, self.device, self.bound = forward, device, bound
        pick = torch.randperm(len(locality), generator=torch.Generator().manual_seed(seed))[: self.GUARD_SAMPLES]
        pick = pick.sort().values  # a class-sorted set larger than the sample is still sampled across classes
        self.images = [locality.images(pick[i : i + 512], device) for i in range(0, len(pick), 512)]
        self.original = self._predict()

    @torch.no_grad()
    def _predict(self) -> torch.Tensor:
        return torch.cat([self.forward(b).argmax(1) for b in self.images])

    def change(self) -> float:
        return float((self._predict() != self.original).float().mean())

    def exceeded(self) -> bool:
        return self.change() > self.bound

    @staticmethod
    def save(params: Sequence[torch.Tensor], opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], dict]:
        return [q.detach().clone() for q in params], copy.deepcopy(opt.state_dict())

    @staticmethod
    def restore(params: Sequence[torch.Tensor], opt: torch.optim.Optimizer,
                saved: tuple[list[torch.Tensor], dict]) -> None:
        with torch.no_grad():
            for q, v in zip(params, saved[0], strict=True):
                q.copy_(v)
        lrs = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(saved[1])
        for g, lr in zip(opt.param_groups, lrs, strict=True):
            g["lr"] = lr


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


