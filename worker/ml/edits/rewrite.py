"""Rewriting one layer's key->value map (Bau et al. 2020; Santurkar et al. 2021).

A conv or linear layer is a linear map from keys (its input: for a conv, the unfolded patch at each output location)
to values (its output). The edit asks the layer to send the keys of the transformed exemplars `x` to the values it
produces on their untransformed twins `x_orig`, where `mask` says the transformation is. The change is confined to
the r directions spanned by C^-1 K (C: the second moment of keys over ordinary images), so keys that ordinary images
produce move as little as possible: ΔW = Λ·Dᵀ with D the top-r left singular vectors of C^-1 Kᵀ.

Keys: `patch` takes a conv's whole unfolded patch as the key, so "rank r" bounds the rank of the flattened ΔW
[out, in·kh·kw]. `pixel` (Santurkar et al.'s convention) takes the input's channel vector at each pixel as the key:
D spans r input-channel directions and ΔW is confined to them at every kernel position, so each ΔW[:, :, i, j] has
rank <= r (the flattened ΔW up to r·kh·kw). `auto` (the default) is pixel for a conv and patch for a linear layer
(whose keys are its input rows either way), chosen by measurement (bench/rewrite_keys.py). A layer that ends a
residual block is matched at the block's output (`rewrite_target`); a layer inside one (its output reaches the add
through another layer) is edited with a warning in `info`: the skip carries what the edit should remove past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from editaudit.contracts.edits import RewriteParams
from editaudit.worker.ml.archs.graph import plain_layer_problem, topology, trace
from editaudit.worker.ml.data import TensorDataset
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, numerical_rank
from editaudit.worker.ml.edits.rewrite_target import (
    Target,
    block_end_after,
    capture,
    describe,
    matched_nodes,
    norm_scale,
)


def layer_io(model: nn.Module, module: nn.Module, x: torch.Tensor, device: torch.device,
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input and output when `model` (eval mode) runs on images `x`."""
    inputs, outputs = [], []

    def hook(_mod, inp, out):  # clone: an in-place op downstream (ReLU(inplace=True)) would overwrite the output
        inputs.append(inp[0].detach().clone())
        outputs.append(out.detach().clone())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(device))
    finally:
        handle.remove()
    if not outputs:
        raise ValueError(f"the model never called {type(module).__name__}.forward (e.g. attention's out_proj is used "
                         "through its weight only): rewrite cannot see its keys and values")
    return torch.cat(inputs), torch.cat(outputs)


def _check_layer(module: nn.Module, name: str) -> None:
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        inner = next((f"{name}.{n}" if name else n for n, m in module.named_modules()
                      if isinstance(m, (nn.Linear, nn.Conv2d))), None)
        hint = f" (a block: name one of its layers, e.g. {inner!r})" if inner else ""
        raise ValueError(f"rewrite edits a Linear or Conv2d layer; {name!r} is a {type(module).__name__}{hint}")
    problem = plain_layer_problem(module)
    if problem:
        raise ValueError(f"rewrite cannot edit {name!r}: it is {problem}")


def keys_of(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """[M, d] keys: one row per output location; `weight.flatten(1) @ key + bias` is the layer's output there."""
    if isinstance(module, nn.Conv2d):
        padding = cast(tuple[int, ...], module.padding)  # numbers: plain_layer_problem refuses "same" / "valid"
        cols = F.unfold(inp, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return inp.reshape(-1, inp.shape[-1])


def pixel_keys(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """[M, C_in] keys of the `pixel` convention: the input's channel vector at each pixel (a linear layer's input
    rows, as for `patch`)."""
    if isinstance(module, nn.Conv2d):
        return inp.permute(0, 2, 3, 1).reshape(-1, inp.shape[1])
    return keys_of(module, inp)


def per_position(d_pix: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Input-channel directions [C_in, r] as patch directions [C_in·kh·kw, r·kh·kw]: the same r directions at every
    kernel position (unfold orders a patch channel-major, so this is D ⊗ I; orthonormal columns stay orthonormal)."""
    if not isinstance(module, nn.Conv2d):
        return d_pix
    positions = module.kernel_size[0] * module.kernel_size[1]
    out = d_pix.new_zeros(d_pix.shape[0] * positions, d_pix.shape[1] * positions)
    for pos in range(positions):  # rows c·P + pos, columns j·P + pos
        out[pos::positions, pos::positions] = d_pix
    return out


KEY_FUNCTIONS = {"patch": keys_of, "pixel": pixel_keys}


def values_of(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """[M, out] values, rows in the same order as `keys_of`."""
    if isinstance(module, nn.Conv2d):
        return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    return out.reshape(-1, out.shape[-1])


def location_weights(module: nn.Module, grid: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One weight per location of `grid` (a conv's output for patch keys, its input for pixel keys): the mask
    area-resampled onto it (the share of each cell the mask covers); 1 without a mask (or for a linear layer, which
    has no spatial layout)."""
    if mask is None or not isinstance(module, nn.Conv2d):
        return torch.ones(values_of(module, grid).shape[0], device=grid.device)
    small = F.interpolate(mask.to(grid.device, torch.float32), size=grid.shape[2:], mode="area")
    return small.permute(0, 2, 3, 1).reshape(-1)


def second_moment(model: nn.Module, module: nn.Module, images: torch.Tensor, device: torch.device,
                  batch_size: int = 128,
                  key_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = keys_of) -> torch.Tensor:
    """C = E[k kᵀ] over every key the images produce (float64, on CPU)."""
    total: torch.Tensor | None = None
    count = 0
    for i in range(0, len(images), batch_size):
        inp, _ = layer_io(model, module, images[i : i + batch_size], device, batch_size)
        k = key_fn(module, inp).double()
        total = k.T @ k if total is None else total + k.T @ k
        count += k.shape[0]
    assert total is not None, "no images"
    return (total / count).cpu()


def _regularised(m: torch.Tensor, ridge: float) -> torch.Tensor:
    """m + ridge * (mean eigenvalue) * I: the ridge is relative, so one value suits every layer's scale."""
    return m + ridge * (torch.trace(m) / m.shape[0] + 1e-12) * torch.eye(m.shape[0], dtype=m.dtype)


def edit_directions(c: torch.Tensor, keys: torch.Tensor, w: torch.Tensor, rank: int, ridge: float) -> torch.Tensor:
    """D [d, r]: orthonormal top-r left singular vectors of C^-1 Kᵀ (keys weighted by sqrt(w))."""
    whitened = torch.linalg.solve(_regularised(c, ridge), (keys * w.sqrt()[:, None]).T)  # [d, m]
    u, _, _ = torch.linalg.svd(whitened, full_matrices=False)
    return u[:, : min(rank, u.shape[1])]


def weighted_l1(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i |err_i|₁ / Σ w: the masked L1 error the iterative solver minimises and `info` reports."""
    return (err.abs().sum(1) * w).sum() / w.sum()


def solve_closed_form(keys: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, d_mat: torch.Tensor,
                      ridge: float) -> torch.Tensor:
    """Λ = argmin Σ w_i |Λ Dᵀk_i − r_i|² (ridge-regularised): one r×r solve."""
    z = keys @ d_mat  # [m, r]
    gram = _regularised(z.T @ (z * w[:, None]), ridge)
    return torch.linalg.solve(gram, z.T @ (residual * w[:, None])).T  # [out, r]


def solve_iterative(keys: torch.Tensor, target: Target, w: torch.Tensor, d_mat: torch.Tensor, steps: int,
                    lr: float, progress) -> tuple[torch.Tensor, float]:
    """The original code's variant: Adam against the mask-weighted L1 error of the matched output (through the
    block's norm, skip and ReLU for a block layer), the update confined to span(D).

    The original optimises a full ΔW and projects it onto the subspace; here Adam runs on ΔW's coordinates in that
    subspace (every iterate lies in it), rescaled so that `lr` means the same on every layer: coordinates in units
    of the residuals' RMS per unit key projection. The learning rate is cosine-annealed (L1 gradients never shrink).
    Returns ΔW [out, d] and the final loss."""
    z = keys @ d_mat  # [m, r]
    z_scale = z.pow(2).mean().sqrt().clamp_min(1e-12)
    r_scale = target.residual().pow(2).mean().sqrt().clamp_min(1e-12)
    theta = torch.zeros(target.goal.shape[1], d_mat.shape[1], dtype=keys.dtype, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = torch.tensor(0.0)
    for step in range(steps):
        loss = weighted_l1(target.output((z / z_scale) @ theta.T * r_scale) - target.goal, w)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}; try a smaller lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        progress("editing", step + 1, steps)
    return (theta.detach() * (r_scale / z_scale)) @ d_mat.T, float(loss.detach())


def inner_warning(layer: str, block_end: str | None) -> str | None:
    """What the edit's info says when `layer` sits inside a residual block (`block_end_after`), else None."""
    if block_end is None:
        return None
    return (f"{layer!r} is inside a residual block: its output reaches the block's add through {block_end!r}, while "
            "the skip carries the block's input, and what this edit should remove, past it; matching this layer's "
            "output cannot correct the skip's share, so the edit may fix few of its examples (bench/rewrite_keys.py, "
            "resnet18: inner convs fixed 0-3 of 8 on average where the blocks' last convs fixed 6-8). "
            f"{block_end!r} ends the block and is matched at its output")


class _Clock:
    """Wall time per phase (keys, second moment, directions, solve), recorded in the edit's info."""

    def __init__(self):
        self.laps, self._t = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self._t = now - self._t, now


class Rewrite(EditMethod[RewriteParams]):
    def apply(self, ctx: EditContext[RewriteParams]) -> EditResult:
        p, layer = ctx.params, ctx.layer
        module = dict(ctx.model.net.named_modules())[layer]
        _check_layer(module, layer)
        es = ctx.edit_set
        x_orig = es.x_orig
        if x_orig is None:
            raise ValueError("rewrite needs the edit set's x_orig (the untransformed twin of each x): the values are "
                             "the layer's outputs on x_orig")
        ctx.model.eval()  # BatchNorm statistics stay as trained
        ctx.progress("keys", 0, 3)
        clock = _Clock()
        try:  # the shape of the edit images: a concrete trace's example input
            gm = trace(ctx.model.net, input_shape=list(es.images(slice(0, 1)).shape[1:]))
        except Exception as exc:  # noqa: BLE001 - the graph is how rewrite finds what to match: say why it has none
            raise ValueError(f"rewrite cannot edit {layer!r}: the model cannot be traced "
                             f"({type(exc).__name__}: {exc})") from exc
        topo = topology(gm, layer)
        if topo.kind == "unsupported":
            raise ValueError(f"rewrite cannot edit {layer!r}: {topo.reason}")
        keys_used = p.keys_for(tuple(module.weight.shape))
        warning = inner_warning(layer, block_end_after(gm, topo))
        in_name = next(n for n in gm.graph.nodes if n.name == topo.layer_node).args[0].name
        pre, out = matched_nodes(topo)
        on_x = capture(ctx.model, gm, es.x, [in_name, pre], ctx.device)
        on_orig = capture(ctx.model, gm, x_orig, [pre, out], ctx.device)
        inp = on_x[in_name]
        rows = lambda t: values_of(module, t).double().cpu()  # noqa: E731 - [M, C], channels last
        base = rows(on_x[pre])
        scale = (norm_scale(gm.get_submodule(topo.norm)).double().cpu() if topo.norm
                 else torch.ones(base.shape[1], dtype=torch.float64))
        target = Target(base, rows(on_orig[pre]), rows(on_orig[out]), scale, topo.relu is not None)
        mask = es.mask if p.use_mask else None
        keys = keys_of(module, inp).double().cpu()
        w = location_weights(module, on_x[pre], mask).double().cpu()
        sel = w > 0
        if not bool(sel.any()):
            raise ValueError("the edit set's mask is empty at this layer's resolution: no key to rewrite")
        keys, target, w = keys[sel], target.select(sel), w[sel]
        clock.lap("keys")

        ref_name, images, identity = self._reference(ctx, p)
        ctx.progress("second moment", 1, 3)
        key_fn = KEY_FUNCTIONS[keys_used]
        # the memo key names the reference data by its identity where known (the job sets it), else by its role
        c = ctx.memo(f"rewrite-second-moment/{layer}/{keys_used}/{identity or ref_name}/{len(images)}/seed{p.seed}",
                     lambda: second_moment(ctx.model, module, images, ctx.device, key_fn=key_fn))
        clock.lap("second_moment")
        if keys_used == "pixel":
            pw = location_weights(module, inp, mask).double().cpu()
            d_mat = per_position(edit_directions(c, pixel_keys(module, inp).double().cpu()[pw > 0], pw[pw > 0],
                                                 p.rank, p.ridge), module)
        else:
            d_mat = edit_directions(c, keys, w, p.rank, p.ridge)
        clock.lap("directions")
        ctx.progress("solve", 2, 3)
        if p.solver == "closed_form":
            delta = solve_closed_form(keys, target.residual(), w, d_mat, p.ridge) @ d_mat.T
            loss = float(weighted_l1(target.output(keys @ delta.T) - target.goal, w))
        else:
            delta, loss = solve_iterative(keys, target, w, d_mat, p.steps, p.lr, ctx.progress)
        clock.lap("solve")
        before = float(weighted_l1(target.output(torch.zeros_like(target.base)) - target.goal, w))
        weight = module.weight
        with torch.no_grad():
            weight.add_(delta.to(weight.dtype).view_as(weight).to(weight.device))
        ctx.progress("solve", 3, 3)
        info = {
            "layer": layer, "rank": p.rank, "keys_convention": keys_used, "keys_requested": p.keys,
            "matched": describe(topo), "directions": int(d_mat.shape[1]), "delta_rank": numerical_rank(delta),
            "solver": p.solver, "keys": int(keys.shape[0]), "key_dim": int(keys.shape[1]),
            "reference": ref_name, "reference_images": len(images),
            "l1_error_before": before, "l1_error_after": loss, "seconds": clock.laps}
        if warning:
            info["warning"] = warning
        return EditResult(ctx.model, [], info)

    @staticmethod
    def _reference(ctx: EditContext[RewriteParams], p: RewriteParams) -> tuple[str, torch.Tensor, str | None]:
        """Ordinary images for C: `reference_set`, else the test split, else (running the ML core on its own) the
        edit set's untransformed twins. A seeded subset of `reference_samples` images; with the data's identity."""
        for name in ("reference", "test"):
            if name in ctx.reference:
                ds, identity = ctx.reference[name], ctx.reference[name].identity
                break
        else:
            es = ctx.edit_set
            assert es.orig_pixels is not None  # apply() refused an edit set without x_orig
            name, ds, identity = "edit.x_orig", TensorDataset(es.orig_pixels, es.y, preprocess=es.preprocess), None
        if len(ds) > p.reference_samples:  # only the subset is converted to float (uploads may be uint8)
            gen = torch.Generator().manual_seed(p.seed)
            pick = torch.randperm(len(ds), generator=gen)[: p.reference_samples].sort().values
            return name, ds.images(pick), identity
        return name, ds.x, identity
