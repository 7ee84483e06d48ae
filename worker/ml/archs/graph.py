"""Where a layer's output goes, read from the traced graph (torch.fx), not from the layer's name.

`rewrite` matches values at the point the rest of the network reads them. For most layers that is the layer's own
output. For a layer that feeds a residual add (ResNet's conv2 -> bn2 -> + identity -> ReLU, a transformer MLP's last
Linear -> Dropout -> + x) the next layer reads the block's output, which still carries the skip branch: matching the
layer alone leaves whatever the skip carries (e.g. a texture) in place. Such a layer is a "block" layer, and the
rewrite matches the block's output through the per-channel ops in between.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
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


def trace(net: nn.Module, input_shape: Sequence[int] | None = None) -> torch.fx.GraphModule:
    """The network's graph: torch.fx's symbolic trace, or, where that fails (a Hugging Face model; a forward that
    reads shapes in Python), a trace that runs the network on one example input alongside (`ShadowTracer`).
    `input_shape` [C, H, W] gives that input; by default it comes from the model's config (Hugging Face's
    num_channels / image_size, timm's pretrained_cfg input_size). A Hugging Face model's graph takes `pixel_values`."""
    saved = [(m, {k: dict(v) if k in _STATE_DICTS else v for k, v in m.__dict__.items()}) for m in net.modules()]
    try:
        return _trace(net, input_shape)
    finally:  # a forward that stores what it computes on the module (Swin's window size) stored proxies there
        for module, attrs in saved:
            module.__dict__.clear()
            module.__dict__.update(attrs)


_STATE_DICTS = ("_parameters", "_buffers", "_modules")


def _trace(net: nn.Module, input_shape: Sequence[int] | None) -> torch.fx.GraphModule:
    hf = _is_hf(net)
    if not hf:
        try:
            return torch.fx.symbolic_trace(net)
        except Exception as exc:  # noqa: BLE001 - any failure of the symbolic trace: try the concrete one
            first: Exception | None = exc
    else:
        first = None
    shape = list(input_shape) if input_shape is not None else example_shape(net)
    if shape is None:
        assert first is not None  # a Hugging Face model always has a config, so a shape
        raise first
    param = next(iter(net.parameters()), None)
    example = torch.zeros(2, *shape, device=param.device if param is not None else None,
                          dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    tracer = ShadowTracer({"pixel_values" if hf else "x": example}, keyword=hf)
    with torch.no_grad():
        graph = tracer.trace(net)
    for node in graph.nodes:  # the example's activations served the trace; the graph must not keep them alive
        node.meta.pop("shadow", None)
    _drop_dead_reads(graph)
    return torch.fx.GraphModule(tracer.root, graph, type(net).__name__)


_READS = {getattr, operator.getitem, len, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
          operator.ge, operator.not_, operator.truth}


def _drop_dead_reads(graph: torch.fx.Graph) -> None:
    """Remove the reads whose values the forward used in Python only (`x.shape`, `h != size`): unused in the
    graph, they would count as users of a layer's output and hide where it goes."""
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            if not node.users and ((node.op == "call_function" and node.target in _READS)
                                   or (node.op == "call_method" and node.target in ("size", "dim"))):
                graph.erase_node(node)
                changed = True


def _is_hf(net: nn.Module) -> bool:
    if "transformers" not in sys.modules:  # no Hugging Face model exists before transformers is imported
        return False
    from transformers import PreTrainedModel

    return isinstance(net, PreTrainedModel)


def example_shape(net: nn.Module) -> list[int] | None:
    """[C, H, W] an input of the model's own config has, or None when it has no config that says."""
    config = getattr(net, "config", None)
    if config is not None and hasattr(config, "image_size"):
        size = config.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return [int(getattr(config, "num_channels", 3)), int(h), int(w)]
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return [int(d) for d in cfg["input_size"]]
    return None


_MODULE_CALL = nn.Module.__call__  # the unpatched call (torch.fx patches nn.Module.__call__ while it traces)
_UNKNOWN = object()


class ShadowTracer(torch.fx.Tracer):
    """torch.fx's tracer, run on real example inputs alongside: every node also holds the value it computes
    (`node.meta["shadow"]`), so where the forward reads a value in Python (`if x.shape[-1] != size`, `len(...)`,
    `for d in x.shape`, `int(...)`) the trace takes that value, as Hugging Face's tracer did with meta tensors. Values
    read that way are fixed in the graph (the branch taken, a size): the graph is for inputs of the example's shape.
    Leaf modules (torch.nn's) stay `call_module` nodes under their own names, as in `torch.fx.symbolic_trace`."""

    def __init__(self, inputs: dict[str, torch.Tensor], keyword: bool):
        super().__init__()
        self.inputs, self.keyword = inputs, keyword
        self._shadowing = False

    # the root's arguments: one placeholder per example input, passed by keyword (HF) or position
    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        proxies = {name: self.create_proxy("placeholder", name, (), {}) for name in self.inputs}
        if self.keyword:
            return (lambda root, *args: root_fn(root, **dict(zip(proxies, args, strict=True)))), \
                [self.root, *proxies.values()]
        return root_fn, [self.root, *proxies.values()]

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return _ShadowProxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        if self._shadowing:  # computing a leaf module's value: run it, record nothing
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self._shadowing else super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind != "output":
            node.meta["shadow"] = self._compute(node)
        return node

    def _compute(self, node: torch.fx.Node):
        if node.op == "placeholder":
            return self.inputs[cast(str, node.target)]
        if node.op == "get_attr":
            obj, self._shadowing = self.root, True  # plain attribute reads (torch.fx patches nn.Module's getattr)
            try:
                for part in cast(str, node.target).split("."):
                    obj = getattr(obj, part)
            finally:
                self._shadowing = False
            return obj
        unknown = []

        def value(n: torch.fx.Node):
            v = n.meta.get("shadow", _UNKNOWN)
            if v is _UNKNOWN:
                unknown.append(n)
            return v

        args = torch.fx.node.map_arg(node.args, value)
        kwargs = torch.fx.node.map_arg(node.kwargs, value)
        if unknown:
            return _UNKNOWN
        self._shadowing = True
        try:
            if node.op == "call_function":
                return cast(Callable, node.target)(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], cast(str, node.target))(*args[1:], **kwargs)
            return _MODULE_CALL(self.root.get_submodule(cast(str, node.target)), *args, **kwargs)
        except Exception:  # noqa: BLE001 - a value the tracer cannot compute is only an error if it is read
            return _UNKNOWN
        finally:
            self._shadowing = False

    def value_of(self, proxy: torch.fx.Proxy):
        v = proxy.node.meta.get("shadow", _UNKNOWN)
        if v is _UNKNOWN:
            raise torch.fx.proxy.TraceError(f"the forward reads the value of {proxy.node.format_node()} in Python, "
                                            "and the trace could not compute it")
        return v

    def to_bool(self, obj):
        return bool(self.value_of(obj))

    def iter(self, obj):
        return iter([obj[i] for i in range(len(self.value_of(obj)))])

    def keys(self, obj):
        return self.value_of(obj).keys()


def _value(proxy: torch.fx.Proxy):
    return cast(ShadowTracer, proxy.tracer).value_of(proxy)


class _ShadowProxy(torch.fx.Proxy):
    """What a proxy of `ShadowTracer` answers from its value: len, int, float, index, `in`; its attributes are
    such proxies too."""

    def __len__(self):
        return len(_value(self))

    def __int__(self):
        return int(_value(self))

    def __float__(self):
        return float(_value(self))

    def __index__(self):
        return operator.index(_value(self))

    def __contains__(self, item):
        return item in _value(self)

    def __getattr__(self, k: str):
        return _ShadowAttribute(self, k)


class _ShadowAttribute(_ShadowProxy, torch.fx.proxy.Attribute):
    pass


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
        if ((nxt.op == "call_module" and not _passes_through(gm, nxt)) or nxt.op == "output"
                or _is_relu(gm, nxt)):
            break
        module = _module(gm, nxt)
        walked.append(type(module).__name__ if module is not None else str(getattr(nxt.target, "__name__",
                                                                                   nxt.target)))
        if _is_add(nxt):
            return Topology("unsupported", node.name, reason="it feeds a residual add through "
                                                             f"{' -> '.join(walked[:-1])}, which rewrite does not "
                                                             "model")
        nxt = _single_user(nxt)
        if nxt is None:
            break
    return Topology("layer", node.name)


def rewrite_kinds(net: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """Every Linear / Conv2d layer's `Topology.describe()`: what the architecture manifest records for the API. A
    model that cannot be traced has every such layer "unsupported", with the reason."""
    try:
        gm: torch.fx.GraphModule | None = trace(net, input_shape)
        untraceable = ""
    except Exception as exc:  # noqa: BLE001 - whatever stops the trace, the layers are reported, not the error
        gm, untraceable = None, f"the model cannot be traced ({type(exc).__name__}: {_first_line(exc)})"
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            reason = plain_layer_problem(module) or untraceable
            out[name] = f"unsupported: {reason}" if reason or gm is None else topology(gm, name).describe()
    return out


def _first_line(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain_layer_problem(module: nn.Module) -> str | None:
    """Why rewrite's key -> value map does not fit this conv (None when it does)."""
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"
                                          or isinstance(module.padding, str)):
        return (f"a grouped or specially padded conv (groups={module.groups}, padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}); rewrite needs groups=1 and zero padding given as numbers")
    return None
