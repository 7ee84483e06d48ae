"""Device preparation for the audit's native path: fp32 eager on CPU; on CUDA channels_last, bf16 autocast (in the
attacks) and, for large audits, `torch.compile`. Parameters are frozen, so attacks compute input gradients only.
Optionally (`fold_bn`) each BatchNorm that directly follows a convolution is folded into it first: the frozen
model computes the same function with one layer fewer per block, forward and backward."""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import fx, nn

from editaudit.worker.ml.archs.registry import Normalized

log = logging.getLogger(__name__)
COMPILE_MIN_SAMPLES = 2048


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def prepare_model(model: nn.Module, device: torch.device, compile_mode: str, n_samples: int,
                  fold_bn: bool = False):
    """(eager, fast): the frozen eval-mode model, and the same possibly compiled for the native path. With
    `fold_bn`, both are a copy with its conv->BatchNorm pairs folded (`fold_batchnorm`; `model` itself is then left
    as it is, unless it cannot be traced, when it is used as without `fold_bn`)."""
    if fold_bn:
        model, folded = fold_batchnorm(model)
        log.info("folded %d BatchNorm layer(s) into their convolutions", folded)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type != "cuda":
        return model, model
    model = model.to(memory_format=torch.channels_last)
    want = compile_mode == "on" or (compile_mode == "auto" and n_samples >= COMPILE_MIN_SAMPLES)
    if not want:
        return model, model
    try:
        return model, CompiledOrEager(torch.compile(model), model)
    except Exception as e:  # noqa: BLE001 - compile is an optimisation; eager is always correct
        log.warning("torch.compile unavailable (%s); running eager", e)
        return model, model


class CompiledOrEager:
    """torch.compile is lazy: its errors (no triton, no compiler) surface at the first call. Fall back to eager
    then, once, instead of failing the audit."""

    def __init__(self, compiled, eager: nn.Module):
        self.compiled, self.eager, self.failed = compiled, eager, False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(x)
            except Exception as e:  # noqa: BLE001
                log.warning("torch.compile failed at run time (%s); running eager", e)
                self.failed = True
        return self.eager(x)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """(a copy of `model` in eval mode with every BatchNorm2d that directly follows a Conv2d folded into it, the
    number folded). The conv's weight and bias are rewritten as w * g / sqrt(v + eps), (b - m) * g / sqrt(v + eps)
    + beta (computed in float64) and the BatchNorm becomes an `nn.Identity`; the copy keeps `model`'s class, forward
    and module names. `model` itself is never modified.

    Pairs are found on a torch.fx trace (of the wrapped network for a `Normalized`, whose own forward does not
    trace), so a conv whose output is used anywhere besides its BatchNorm is left alone; so are modules called more
    than once or reachable under two names, convs whose weights are shared, modules with hooks, subclasses (timm's
    StdConv2d standardises its weight, BatchNormAct2d adds an activation) and BatchNorms without running statistics.
    A model that fx cannot trace (data-dependent control flow: some timm and Hugging Face models) is returned as it
    is, with 0, and a log line: folding is an optimisation, never a reason to fail."""
    try:
        copied = copy.deepcopy(model).eval()
        root, prefix = (copied.net, "net.") if isinstance(copied, Normalized) else (copied, "")
        graph = fx.Tracer().trace(root)
    except Exception as e:  # noqa: BLE001 - anything fx (or a deepcopy) cannot handle: run the model unfolded
        log.info("BatchNorm folding skipped: %s is not fx-traceable (%s: %s)", type(model).__name__,
                 type(e).__name__, e)
        return model, 0
    modules = dict(root.named_modules())
    names = Counter(id(m) for _, m in copied.named_modules(remove_duplicate=False))
    params = Counter(id(p) for _, p in copied.named_parameters(remove_duplicate=False))
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    attrs = [str(n.target) for n in graph.nodes if n.op == "get_attr"]

    def foldable_module(name: str, kind: type[nn.Module]) -> bool:
        m = modules.get(name)
        return (type(m) is kind and calls[name] == 1 and names[id(m)] == 1  # exact type: subclasses may differ
                and not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
                and not any(a.startswith(name + ".") for a in attrs))

    pairs: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        conv_name, bn_name = str(src.target), str(node.target)
        if not (foldable_module(conv_name, nn.Conv2d) and foldable_module(bn_name, nn.BatchNorm2d)):
            continue
        conv, bn = modules[conv_name], modules[bn_name]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        if (bn.running_mean is None or bn.running_var is None or bn.num_features != conv.out_channels
                or params[id(conv.weight)] != 1 or (conv.bias is not None and params[id(conv.bias)] != 1)):
            continue
        pairs.append((conv_name, bn_name))

    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        _fold_into(conv, bn)
        parent, _, child = bn_name.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, child, nn.Identity())
    if pairs:
        log.debug("folded BatchNorm into conv: %s", ", ".join(prefix + b for _, b in pairs))
    return copied, len(pairs)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite `conv` so that conv(x) equals bn(conv(x)) in eval mode (float64 arithmetic, stored in conv's dtype)."""
    assert bn.running_mean is not None and bn.running_var is not None
    w = conv.weight

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=w.device, dtype=torch.float64)

    mean, var = f64(bn.running_mean), f64(bn.running_var)
    gamma = f64(bn.weight) if bn.weight is not None else torch.ones_like(mean)
    beta = f64(bn.bias) if bn.bias is not None else torch.zeros_like(mean)
    bias = f64(conv.bias) if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    conv.weight = nn.Parameter((f64(w) * scale.view(-1, 1, 1, 1)).to(w.dtype), requires_grad=w.requires_grad)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(w.dtype), requires_grad=w.requires_grad)
