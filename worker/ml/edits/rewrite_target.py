"""What a rewrite matches: the layer's output, or the output of the residual block the layer ends (`archs.graph`).

For a block layer (conv -> BatchNorm -> + skip -> ReLU) a change c of the layer's output moves the block's
pre-activation by s * c (s: BatchNorm's per-channel scale) and leaves the skip branch as it is. So the closed form
asks the layer for the corrected target (pre_orig - pre_x) / s — the skip's difference mapped back through the norm —
and the iterative solver minimises the error of the block's output itself, ReLU included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from editaudit.worker.ml.archs.graph import NORMS, Topology, _is_add, _single_user

INNER_WALK = 12  # ops followed past a plain layer when looking for a residual add behind another layer


class _Stop(Exception):
    pass


def net_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `model.net` receives when `model` runs on `x` (the wrapper's normalisation applied), without running
    the network itself."""
    seen = []

    def hook(_mod, args):
        seen.append(args[0])
        raise _Stop

    net = model.net  # the wrapper's network (editaudit's Normalized, or any module wrapping one as `net`)
    assert isinstance(net, nn.Module), net
    handle = net.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, names: set[str]):
        super().__init__(gm)
        self.names = names
        self.seen: dict[str, torch.Tensor] = {}

    def run_node(self, n: torch.fx.Node):
        out = super().run_node(n)
        if n.name in self.names:  # clone: a later in-place op (ReLU(inplace=True), +=) would overwrite it
            self.seen[n.name] = out.detach().clone()
        return out


@torch.no_grad()
def capture(model: nn.Module, gm: torch.fx.GraphModule, x: torch.Tensor, names: list[str], device: torch.device,
            batch_size: int = 128) -> dict[str, torch.Tensor]:
    """The values of the named graph nodes when `model` runs on images `x`, concatenated over batches."""
    names = list(dict.fromkeys(names))
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(0, len(x), batch_size):
        rec = _Recorder(gm, set(names))
        rec.run(net_input(model, x[i : i + batch_size].to(device)))
        for n in names:
            parts[n].append(rec.seen[n])
    return {n: torch.cat(v) for n, v in parts.items()}


def norm_scale(norm: nn.Module) -> torch.Tensor:
    """BatchNorm's per-channel scale in eval mode: weight / sqrt(running_var + eps)."""
    assert isinstance(norm, NORMS), norm  # topology() found it among the norms
    if norm.running_var is None:
        raise ValueError(f"{norm} normalises with batch statistics even in eval mode; rewrite cannot map a target "
                         "back through it")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    return scale * norm.weight.detach() if norm.weight is not None else scale


@dataclass
class Target:
    """Per key location ([M, C] rows, channels last): `base` the pre-activation on x, `pre_goal` and `goal` the
    pre-activation and the output on x_orig, `scale` [C] how a change of the layer's output moves the
    pre-activation, `relu` whether the output is ReLU(pre-activation)."""

    base: torch.Tensor
    pre_goal: torch.Tensor
    goal: torch.Tensor
    scale: torch.Tensor
    relu: bool

    def residual(self) -> torch.Tensor:
        """The change of the layer's output that makes the pre-activation on x equal the one on x_orig."""
        safe = torch.where(self.scale.abs() < 1e-6, torch.full_like(self.scale, 1e-6).copysign(self.scale),
                           self.scale)
        return (self.pre_goal - self.base) / safe

    def output(self, change: torch.Tensor) -> torch.Tensor:
        """The matched output on x when the layer's output changes by `change`."""
        pre = self.base + change * self.scale
        return pre.clamp_min(0) if self.relu else pre

    def select(self, rows: torch.Tensor) -> Target:
        return Target(self.base[rows], self.pre_goal[rows], self.goal[rows], self.scale, self.relu)


def matched_nodes(topo: Topology) -> tuple[str, str]:
    """(pre-activation node, output node) the target reads."""
    pre = topo.add or topo.layer_node
    return pre, topo.out


def describe(topo: Topology) -> str:
    return "layer output" if topo.kind == "layer" else topo.describe().replace("block: ", "block output: ")


def block_end_after(gm: torch.fx.GraphModule, topo: Topology) -> str | None:
    """For a layer matched at its own output ("layer"): the Linear / Conv2d through which its output reaches a
    residual add, when it does (ResNet's conv1 -> bn1 -> ReLU -> conv2 -> bn2 -> + skip, a transformer MLP's first
    Linear); None otherwise. Such an "inner" layer only moves the block's residual branch: the skip carries the
    block's input, and with it what the edit should remove, past it, so matching its output exactly leaves the
    block's output still off (bench/rewrite_keys.py: on resnet18 an exact match fixed 0-6 of 8 edit images). The
    walk follows single users only: an output read by several ops (the stem before a block, DenseNet) is not inner."""
    if topo.kind != "layer" or not topo.layer_node:
        return None
    node = next(n for n in gm.graph.nodes if n.name == topo.layer_node)
    last = None
    for _ in range(INNER_WALK):
        nxt = _single_user(node)
        if nxt is None or nxt.op == "output":
            return None
        if _is_add(nxt):
            return last
        if nxt.op == "call_module" and isinstance(gm.get_submodule(str(nxt.target)), (nn.Linear, nn.Conv2d)):
            last = str(nxt.target)
        node = nxt
    return None
