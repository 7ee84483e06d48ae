"""Does this checkpoint fit its spec, and what is in it? What an ingest job runs on an uploaded model before any edit.

`inspect_model(spec, state)` resolves what the spec leaves out (num_classes from the spec, else from the checkpoint's
classifier, else the family's defaults; input_shape from the spec, else timm's pretrained config or the Hugging Face
config; mean / std and preprocessing likewise), builds the network, loads the checkpoint strictly (ValueError naming
the first mismatching tensor), runs one forward pass on zeros and returns the resolved spec and the layer table.
Everything returned is plain JSON.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from editaudit.worker.ml.archs.graph import rewrite_kinds
from editaudit.worker.ml.archs.registry import (
    Normalized,
    build_inner,
    family_defaults,
    fit_channels,
    is_known,
    load_state,
)

_A = {"num_classes": 1013, "in_channels": 7}  # sentinel sizes: a dimension that follows one of them is that one
_B = {"num_classes": 17, "in_channels": 5}
NO_PREPROCESS = {"resize": None, "resize_exact": None, "crop": None, "interpolation": "bilinear"}


def _meta_state(arch: str, spec: dict, num_classes: int, shape: Sequence[int]) -> dict[str, list[int]]:
    from editaudit.worker.ml.archs.signatures import _params_on_meta  # builders that compute in __init__

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                net = build_inner(arch, num_classes, shape, spec)
        except NotImplementedError:
            with _params_on_meta():
                net = build_inner(arch, num_classes, shape, spec)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def from_checkpoint(spec: dict, state: dict[str, torch.Tensor], shape: Sequence[int]) -> dict[str, int]:
    """num_classes and in_channels as the checkpoint has them: the first key whose shape follows each (found by
    building the architecture twice on the meta device, with different sizes; with the channels of `shape` where
    the architecture fixes them). {} for what nothing follows."""
    arch = spec["arch"]
    for vary_channels in (True, False):
        try:
            a, b = (_meta_state(arch, spec, cfg["num_classes"],
                                [cfg["in_channels"] if vary_channels else shape[0], *shape[1:]]) for cfg in (_A, _B))
            break
        except Exception:  # noqa: BLE001 - not at these sizes (fixed channels, a config that says): try fewer
            continue
    else:
        return {}
    tokens = [t for t in _A if vary_channels or t != "in_channels"]
    found: dict[str, int] = {}
    for key, sa in a.items():
        sb = b.get(key)
        if key not in state or sb is None or len(sa) != len(sb) or state[key].dim() != len(sa):
            continue
        for dim, (da, db) in enumerate(zip(sa, sb, strict=True)):
            for token in tokens:
                if da == _A[token] and db == _B[token]:
                    found.setdefault(token, int(state[key].shape[dim]))
    return found


def resolve_spec(spec: dict, state: dict[str, torch.Tensor] | None = None) -> tuple[dict, list[str]]:
    """The spec with every field set (see the module docstring) and the notes on what was dropped or guessed."""
    arch = spec.get("arch")
    if not isinstance(arch, str) or not is_known(arch):
        try:
            build_inner(str(arch), 1, [3, 32, 32], spec)  # the family's own message says why
        except (KeyError, ValueError) as exc:
            raise ValueError(exc.args[0] if exc.args else str(exc)) from exc
        raise ValueError(f"unknown architecture {arch!r}")
    notes: list[str] = []
    defaults = family_defaults(spec)
    shape = spec.get("input_shape") or defaults.get("input_shape")
    if not shape:
        raise ValueError(f"{arch} has no default input size: the spec needs input_shape [C, H, W]")
    shape = [int(d) for d in shape]
    inferred = from_checkpoint(spec, state, shape) if state is not None else {}
    if not spec.get("input_shape") and "in_channels" in inferred and inferred["in_channels"] != shape[0]:
        notes.append(f"input channels {inferred['in_channels']} read from the checkpoint (the default is {shape[0]})")
        shape[0] = inferred["in_channels"]
    num_classes = spec.get("num_classes") or inferred.get("num_classes") or defaults.get("num_classes")
    if not num_classes:
        raise ValueError(f"{arch}: num_classes is neither in the spec nor readable from the checkpoint")
    num_classes = int(num_classes)
    out = dict(spec)
    out.update(arch=arch, num_classes=num_classes, input_shape=shape)
    for key in ("mean", "std"):
        given = key in spec
        values = fit_channels(spec[key] if given else defaults.get(key), shape[0])
        if not given and defaults.get(key) is not None and values is None:
            notes.append(f"the default {key} has {len(defaults[key])} values for {shape[0]} channels: not used")
        out[key] = values
    names = spec.get("class_names", defaults.get("class_names"))
    if names is not None and len(names) != num_classes:
        if "class_names" in spec:
            raise ValueError(f"class_names has {len(names)} names, the model has {num_classes} classes")
        notes.append(f"the default class names ({len(names)}) do not match the {num_classes} classes: not used")
        names = None
    out["class_names"] = [str(n) for n in names] if names is not None else None
    out["preprocess"] = {**NO_PREPROCESS, **(defaults.get("preprocess") or {}), **(spec.get("preprocess") or {})}
    return out, notes


def _kind(module: nn.Module) -> tuple[str, list[int] | None]:
    """The layer table's type (as editaudit.core.arch_manifest.layer_table names it from the weight's rank)."""
    weight = module._parameters.get("weight")
    if weight is None:
        return "Other", None
    shape = [int(d) for d in weight.shape]
    if "running_mean" in module._buffers:
        return "BatchNorm", shape
    return {1: "Norm/Scale", 2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}.get(len(shape), "Other"), shape


def layer_table(net: nn.Module, input_shape: Sequence[int] | None = None,
                aliases: dict[str, str] | None = None) -> list[dict]:
    """Every module that owns a parameter itself: name, type, weight_shape (None without a weight), parameters
    (its own), for each Linear / Conv2d what `rewrite` matches there (`graph.rewrite_kinds`), and `checkpoint_name`
    where the checkpoint's layout names the module otherwise (`aliases`)."""
    kinds = rewrite_kinds(net, input_shape)
    aliases = aliases or {}
    rows = []
    for name, module in net.named_modules():
        own = [p for p in module._parameters.values() if p is not None]
        if not own:
            continue
        kind, weight_shape = _kind(module)
        row = {"name": name, "type": kind, "weight_shape": weight_shape, "parameters": sum(p.numel() for p in own)}
        if name in kinds:
            row["rewrite"] = kinds[name]
        if name in aliases:
            row["checkpoint_name"] = aliases[name]
        rows.append(row)
    return rows


SIZE_SLACK = 1_000_000  # numbers a model may hold beyond its checkpoint's (buffers a checkpoint may leave out)


def check_size(arch: str, num_classes: int, shape: list[int], resolved: dict, state: dict[str, torch.Tensor]) -> None:
    """Refuse, before allocating it, a model much larger than the checkpoint meant to fill it: a config.json (or a
    num_classes) asking for billions of parameters next to a small file would otherwise exhaust the worker's memory
    on random initialisation. Built on the meta device (no memory); a builder that cannot run there is not probed."""
    have = sum(t.numel() for t in state.values())
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            probe = build_inner(arch, num_classes, shape, resolved)
    except Exception:  # noqa: BLE001 - e.g. builders that compute with real tensors in __init__
        return
    need = sum(t.numel() for t in probe.state_dict().values())
    if need > have + SIZE_SLACK:
        raise ValueError(f"{arch} as configured holds {need:,} numbers but the checkpoint only {have:,}: it does not "
                         "fit (refused before building it)")


def inspect_model(spec: dict, state: dict[str, torch.Tensor]) -> dict:
    """{"spec": the resolved spec, "modules": the layer table, "notes": [...]} or ValueError saying why the
    checkpoint does not fit (the first mismatching tensor, a forward pass that fails, logits of the wrong width)."""
    resolved, notes = resolve_spec(spec, state)
    arch, shape, num_classes = resolved["arch"], resolved["input_shape"], resolved["num_classes"]
    check_size(arch, num_classes, shape, resolved, state)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # random init must not move the job's RNG
        warnings.simplefilter("ignore")
        net = build_inner(arch, num_classes, shape, resolved)
    load_state(arch, net, state)
    model = Normalized(net, resolved["mean"], resolved["std"], shape[0]).eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure of the forward pass is the checkpoint's or the spec's
        raise ValueError(f"{arch} does not run on an input of shape {shape}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (1, num_classes):
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{arch} answers {got} on one input, expected logits of shape [1, {num_classes}]")
    # through JSON: what the job stores is what it gets back (config.json's id2label keys are strings)
    aliases = {}
    if arch.startswith("hf/"):
        from editaudit.worker.ml.archs.hf_family import module_aliases

        aliases = module_aliases(net)
    return json.loads(json.dumps({"spec": resolved, "modules": layer_table(net, shape, aliases), "notes": notes}))
