"""Registry of architectures by the names users type (`torchvision/resnet18`, `editaudit/smallcnn`)."""

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


def build_inner(arch: str, num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; valid names: {list_archs()}")
    spec = ARCHS[arch]
    if spec.channels is not None and input_shape[0] != spec.channels:
        raise ValueError(f"{arch} takes {spec.channels}-channel inputs, input_shape has {input_shape[0]}")
    return spec.builder(num_classes, input_shape)


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
        return self.net((x - self.mean) / self.std)


def dtype_kind(dtype: torch.dtype) -> str:
    """"float", "int", "bool" (or "complex"): the kind of number a tensor holds, whatever its width (the manifest
    records each key's; editaudit.core.arch_manifest checks an upload's against it)."""
    if dtype == torch.bool:
        return "bool"
    return "float" if dtype.is_floating_point else "complex" if dtype.is_complex else "int"


def load_state_dict_strict(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load with a readable error naming the first mismatching key (missing, unexpected, wrong shape or wrong kind
    of dtype: float, int or bool)."""
    expected = net.state_dict()
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
    net.load_state_dict(state, strict=True)


def create_model(spec: dict, state: dict[str, torch.Tensor] | None = None) -> Normalized:
    """Build `spec["arch"]` (optionally loading `state`) wrapped with its input normalisation, in eval mode."""
    shape = list(spec["input_shape"])
    net = build_inner(spec["arch"], int(spec["num_classes"]), shape)
    if state is not None:
        load_state_dict_strict(net, state)
    return Normalized(net, spec.get("mean"), spec.get("std"), shape[0]).eval()
