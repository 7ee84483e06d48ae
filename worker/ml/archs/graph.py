"""Where a layer's output goes, read from the traced graph (torch.fx), not from the layer's name.

`rewrite` matches values at the point the rest of the network reads them. For most layers that is the layer's own
output. For a layer that feeds a residual add (ResNet's conv2 -> bn2 -> + identity -> ReLU, a transformer MLP's last
Linear -> Dropout -> + x) the next layer reads the block's output, which still carries the skip branch: matching the
layer alone leaves whatever the skip carries (e.g. a texture) in place. Such a layer is a "block" layer, and the
rewrite matches the block's output through the per-channel ops in between.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import cast

import torch
import torch.fx
from torch import nn
from torchvision.ops import StochasticDepth, stochastic_depth

PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.Identity, StochasticDepth)  # the identity in eval mode
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)  # per-channel affine maps in eval mode
ADDS = {operator.add, operator.iadd, torch.add}
RELUS = {torch.relu, nn.functional.relu}
MAX_WALK = 6  # ops followed past the layer when looking for a residual add behind unmodelled ops


@dataclass(frozen=True)
class Topology:
    """kind: "layer" (match the layer's output), "block" (match `out` through `norm`, the residual `add` and an
    optional `relu`) or "unsupported" (`reason` says why). Node names are the traced graph's."""

    kind: str
    layer_node: str = ""
    norm: str | None = None  # module name of the BatchNorm between the layer and the add
    add: str | None = None
    relu: str | None = None
    reason: str = ""

    @property
    def out(self) -> str:
        return self.relu or self.add or self.layer_node

    def describe(self) -> str:
        if self.kind != "block":
            return self.kind if not self.reason else f"{self.kind}: {self.reason}"
        return "block: " + " -> ".join(["layer"] + (["BatchNorm"] if self.norm else []) + ["+ skip"]
                                       + (["ReLU"] if self.relu else []))


def trace(net: nn.Module) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(net)


def _module(gm: torch.fx.GraphModule, node: torch.fx.Node) -> nn.Module | None:
    return gm.get_submodule(cast(str, node.target)) if node.op == "call_module" else None  # a module's path


def _is_add(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target in ADDS) or (node.op == "call_method"
                                                                     and node.target in ("add", "add_"))


def _is_relu(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return (isinstance(_module(gm, node), nn.ReLU) or (node.op == "call_function" and node.target in RELUS)
            or (node.op == "call_method" and node.target in ("relu", "relu_")))


def _passes_through(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    return isinstance(_module(gm, node), PASS_THROUGH + NORMS) or (node.op == "call_function"
                                                                  and node.target is stochastic_depth)


def _single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def topology(gm: torch.fx.GraphModule, layer: str) -> Topology:
    """How `layer`'s output reaches the rest of the network (see the module docstring)."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if not calls:
        return Topology("unsupported", reason="its forward is never called (the model uses its weight directly), so "
                                               "its keys and values cannot be observed")
    if len(calls) > 1:
        return Topology("unsupported", reason=f"it is called {len(calls)} times per forward pass (shared weights)")
    node = calls[0]
    nxt = _single_user(node)
    if nxt is None:  # read whole by several ops (e.g. DenseNet's concatenations) is fine; added to a skip is not
        if any(_is_add(u) for u in node.users):
            return Topology("unsupported", node.name, reason=f"its output feeds {len(node.users)} operations, one "
                                                             "of them a residual add")
        return Topology("layer", node.name)
    norm = None
    while _passes_through(gm, nxt):
        if isinstance(_module(gm, nxt), NORMS):
            if norm is not None:
                return Topology("layer", node.name)
            norm = cast(str, nxt.target)  # a call_module node (a norm): its target is the module's path
        after = _single_user(nxt)
        if after is None:
            return Topology("layer", node.name)
        nxt = after
    if _is_add(nxt):
        after = _single_user(nxt)
        relu = after.name if after is not None and _is_relu(gm, after) else None
        return Topology("block", node.name, norm, nxt.name, relu)
    walked = []
    for _ in range(MAX_WALK):  # an add behind ops we do not model (layer scale, permutes) must not be ignored
        if nxt.op == "call_module" or nxt.op == "output" or _is_relu(gm, nxt):
            break
        walked.append(str(getattr(nxt.target, "__name__", nxt.target)))
        if _is_add(nxt):
            return Topology("unsupported", node.name, reason="it feeds a residual add through "
                                                             f"{' -> '.join(walked[:-1])}, which rewrite does not "
                                                             "model")
        nxt = _single_user(nxt)
        if nxt is None:
            break
    return Topology("layer", node.name)


def rewrite_kinds(net: nn.Module) -> dict[str, str]:
    """Every Linear / Conv2d layer's `Topology.describe()`: what the architecture manifest records for the API."""
    gm = trace(net)
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            reason = plain_layer_problem(module)
            out[name] = f"unsupported: {reason}" if reason else topology(gm, name).describe()
    return out


def plain_layer_problem(module: nn.Module) -> str | None:
    """Why rewrite's key -> value map does not fit this conv (None when it does)."""
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"
                                          or isinstance(module.padding, str)):
        return (f"a grouped or specially padded conv (groups={module.groups}, padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}); rewrite needs groups=1 and zero padding given as numbers")
    return None
