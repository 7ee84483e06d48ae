"""Registry of architectures by the names users type (`torchvision/resnet18`, `editaudit/smallcnn`), and of families
of them resolved by prefix (`timm/<name>`, `hf/<model_type>`): too many to list, or built from a config the spec
carries. Only ARCHS go into the API's manifest (`signatures.py`); a family's models are checked by a worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# A builder takes (num_classes, input_shape) and returns an un-normalised nn.Module whose state_dict is what users
# upload (torchvision's own key names, no wrapper prefix).
Builder = Callable[[int, Sequence[int]], nn.Module]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Builder
    channels: int | None  # required input channels, or None when any channel count works


ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, channels: int | None = None):
    def deco(fn: Builder) -> Builder:
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHS[name] = ArchSpec(name, fn, channels)
        return fn

    return deco


def list_archs() -> list[str]:
    return sorted(ARCHS)


@dataclass(frozen=True)
class Family:
    """Architectures named `<prefix><name>`, resolved when used rather than registered one by one.

    build(name, spec): the un-normalised network for `spec` (num_classes and input_shape set; the family's own
    fields such as a Hugging Face `config` as the user gave them); KeyError (an unknown name) / ValueError say why
    not.
    exists(name): whether `name` is one of the family's. defaults(name, spec): what the family knows of the spec
    (input_shape, num_classes, mean, std, class_names, preprocess), each key only where known. load(net, state):
    load a checkpoint strictly (default `load_state_dict_strict`; Hugging Face also reads its older key layouts).
    save(net, state): the network's state_dict in the layout its checkpoints have (default: as it is)."""

    prefix: str
    build: Callable[[str, dict], nn.Module]
    exists: Callable[[str], bool]
    defaults: Callable[[str, dict], dict] | None = None
    load: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None
    save: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    about: str = ""


FAMILIES: dict[str, Family] = {}


def register_family(prefix: str, build: Callable[[str, dict], nn.Module], *, exists: Callable[[str], bool],
                    defaults: Callable[[str, dict], dict] | None = None,
                    load: Callable[[nn.Module, dict[str, torch.Tensor]], None] | None = None,
                    save: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                    about: str = "") -> Family:
    if not prefix.endswith("/") or prefix in FAMILIES or any(a.startswith(prefix) for a in ARCHS):
        raise ValueError(f"family prefix {prefix!r} must end with '/' and be new")
    FAMILIES[prefix] = Family(prefix, build, exists, defaults, load, save, about)
    return FAMILIES[prefix]


def family_of(arch: str) -> tuple[Family, str] | None:
    """(family, name within it) for an arch outside ARCHS, by the longest matching prefix."""
    if arch in ARCHS:
        return None
    for prefix in sorted(FAMILIES, key=len, reverse=True):
        if arch.startswith(prefix):
            return FAMILIES[prefix], arch[len(prefix):]
    return None


def is_known(arch: str) -> bool:
    found = family_of(arch)
    return arch in ARCHS or (found is not None and found[0].exists(found[1]))


def _unknown(arch: str) -> KeyError:
    families = "".join(f"; {f.prefix}<name>: {f.about}" for f in FAMILIES.values())
    return KeyError(f"unknown architecture {arch!r}; valid names: {list_archs()}{families}")


def build_inner(arch: str, num_classes: int, input_shape: Sequence[int], spec: dict | None = None) -> nn.Module:
    """The un-normalised network. `spec` (the model's whole spec) matters only to families that read more of it
    (a Hugging Face `config`)."""
    if arch not in ARCHS:
        found = family_of(arch)
        if found is None:
            raise _unknown(arch)
        family, name = found
        if not name:
            raise _unknown(arch)
        return family.build(name, {**(spec or {}), "arch": arch, "num_classes": int(num_classes),
                                   "input_shape": [int(d) for d in input_shape]})
    spec_ = ARCHS[arch]
    if spec_.channels is not None and input_shape[0] != spec_.channels:
        raise ValueError(f"{arch} takes {spec_.channels}-channel inputs, input_shape has {input_shape[0]}")
    return spec_.builder(num_classes, input_shape)


def family_defaults(spec: dict) -> dict:
    """What the arch's family knows of the spec (timm's pretrained config, a Hugging Face config.json and
    preprocessor_config.json); {} for registered archs."""
    found = family_of(spec["arch"])
    if found is None or found[0].defaults is None:
        return {}
    return found[0].defaults(found[1], spec)


def complete_spec(spec: dict) -> dict:
    """`spec` with what it leaves out taken from the family's defaults: input_shape, num_classes, and mean / std
    when the keys are absent (an explicit null means no normalisation)."""
    missing = [k for k in ("input_shape", "num_classes") if not spec.get(k)] + [k for k in ("mean", "std")
                                                                                 if k not in spec]
    if spec["arch"] in ARCHS or not missing:
        return spec
    defaults = family_defaults(spec)
    out = dict(spec)
    for key in missing:
        if defaults.get(key) is not None:
            out[key] = defaults[key]
    channels = int(out["input_shape"][0]) if out.get("input_shape") else None
    for key in ("mean", "std"):
        if key in missing and channels is not None:
            out[key] = fit_channels(out.get(key), channels)
    return out


def fit_channels(values: Sequence[float] | None, channels: int) -> list[float] | None:
    """Per-channel mean / std for `channels` inputs: as given, their average for one channel, else None."""
    if values is None:
        return None
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    if channels == 1:
        return [sum(values) / len(values)]
    return None


def load_state(arch: str, net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint into `build_inner(arch, ...)`'s network: strictly, ValueError naming the first mismatch."""
    found = family_of(arch)
    if found is not None and found[0].load is not None:
        found[0].load(net, state)
    else:
        load_state_dict_strict(net, state)


def checkpoint_state(arch: str, net: nn.Module, state: dict[str, torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
    """`state` (default: the network's own) as a checkpoint of `arch` is laid out: what to save an edited model
    as. The same dict for all but families with a layout of their own (Hugging Face models whose modules recent
    transformers renamed are saved as `save_pretrained` writes them). `load_state` reads it back."""
    state = net.state_dict() if state is None else state
    found = family_of(arch)
    if found is None or found[0].save is None:
        return state
    return found[0].save(net, state)


class Normalized(nn.Module):
    """Wraps the user's network so that it takes inputs in [0,1] and normalises them itself.

    `mean`/`std` are non-persistent buffers, so `self.net.state_dict()` keeps the user's key names; edits and layer
    names always refer to `net`'s names (e.g. `layer4.1.conv2`).
    """

    net: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int):
        super().__init__()
        self.net = net
        mean_t = torch.tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32)
        std_t = torch.tensor(std if std is not None else [1.0] * channels, dtype=torch.float32)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, torch.Tensor):
            return out
        # a Hugging Face model answers a ModelOutput (a tuple with return_dict=False), torchvision's GoogLeNet a
        # namedtuple: the logits
        logits = getattr(out, "logits", None)
        if logits is None and isinstance(out, (tuple, list)):
            logits = out[0]
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"{type(self.net).__name__} returned {type(out).__name__}, which holds no logits")
        return logits


def dtype_kind(dtype: torch.dtype) -> str:
    """"float", "int", "bool" (or "complex"): the kind of number a tensor holds, whatever its width (the manifest
    records each key's; editaudit.core.arch_manifest checks an upload's against it)."""
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else "complex" if dtype.is_complex else "int"


def load_state_dict_strict(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load with a readable error naming the first mismatching key (missing, unexpected, wrong shape or wrong kind
    of dtype: float, int or bool)."""
    check_state_dict(net.state_dict(), state)
    net.load_state_dict(state, strict=True)


def check_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """ValueError naming the first key of `state` that does not fit `expected` (missing, unexpected, wrong shape or
    wrong kind of dtype)."""
    for key, ref in expected.items():
        if key not in state:
            raise ValueError(f"state_dict does not fit the architecture: missing key {key!r}")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"state_dict does not fit the architecture: {key!r} has shape "
                             f"{list(state[key].shape)}, expected {list(ref.shape)}")
        if dtype_kind(state[key].dtype) != dtype_kind(ref.dtype):  # a copy would convert values, not reread bytes
            raise ValueError(f"state_dict does not fit the architecture: {key!r} is {state[key].dtype}, expected "
                             f"a {dtype_kind(ref.dtype)} dtype like {ref.dtype}")
    for key in state:
        if key not in expected:
            raise ValueError(f"state_dict does not fit the architecture: unexpected key {key!r}")


def create_model(spec: dict, state: dict[str, torch.Tensor] | None = None) -> Normalized:
    """Build `spec["arch"]` (optionally loading `state`) wrapped with its input normalisation, in eval mode. For a
    family's arch what the spec leaves out comes from the family (`complete_spec`); `inspect.resolve_spec` also
    reads num_classes from a checkpoint."""
    spec = complete_spec(spec)
    shape = list(spec["input_shape"])
    net = build_inner(spec["arch"], int(spec["num_classes"]), shape, spec)
    if state is not None:
        load_state(spec["arch"], net, state)
    return Normalized(net, spec.get("mean"), spec.get("std"), shape[0]).eval()
