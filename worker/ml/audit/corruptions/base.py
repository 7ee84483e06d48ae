"""Corruption registry and the contract every corruption keeps.

A corruption is `fn(x, severity, gen) -> x'` on a batch `x` [N,C,H,W] in [0,1], on x's device, torch ops only.
Registration wraps it so that callers always get the same shape and dtype back, clipped to [0,1], and so that a bad
severity is refused in one place. Random numbers are drawn on the generator's device and then moved to x's device,
so a CPU generator and a CUDA generator both work (and a seed means the same corruption on either path).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from editaudit.contracts import audit as contract
from editaudit.contracts.audit import CORRUPTION_NAMES

CorruptionFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

CORRUPTIONS: dict[str, CorruptionFn] = {}
FAMILIES: dict[str, str] = {}

REFERENCE_SIZE = 224  # the ImageNet-C constants are for 224x224 images


def check_severity(severity: int) -> None:
    """Severities are the integers 1..5 of ImageNet-C; anything else is a caller bug, not a milder corruption."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")


def register_corruption(name: str, family: str) -> Callable[[CorruptionFn], CorruptionFn]:
    """Register `fn` under `name`; the stored function validates, computes in float and returns x's dtype in [0,1]."""
    if name not in contract.CORRUPTIONS:
        raise ValueError(f"corruption {name!r} is not a name of editaudit.contracts.audit.CORRUPTIONS "
                         "(register_corruption_name adds one)")

    def deco(fn: CorruptionFn) -> CorruptionFn:
        @functools.wraps(fn)
        def run(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
            check_severity(severity)
            if x.dim() != 4:
                raise ValueError(f"expected a batch [N,C,H,W], got shape {tuple(x.shape)}")
            work = x if x.dtype in (torch.float32, torch.float64) else x.float()
            return fn(work, severity, gen).clamp(0, 1).to(x.dtype)

        CORRUPTIONS[name] = run
        FAMILIES[name] = family
        return run

    return deco


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Apply the named corruption at `severity` (1..5) to the batch `x`, seeded by `generator`."""
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTION_NAMES)}")
    return CORRUPTIONS[name](x, severity, generator)


# ------------------------------------------------------------------------------------ helpers shared by families


def rand(gen: torch.Generator, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uniform [0,1) on the generator's device, moved to `like`'s device and dtype."""
    return torch.rand(shape, generator=gen, device=gen.device).to(like.device, like.dtype)


def randn(gen: torch.Generator, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Standard normal on the generator's device, moved to `like`'s device and dtype."""
    return torch.randn(shape, generator=gen, device=gen.device).to(like.device, like.dtype)


def size_factor(x: torch.Tensor, floor: float) -> float:
    """Factor from 224-px parameters to this image: proportional to its shorter side, but never below `floor`.

    One factor for all severities keeps their order; the floor keeps the weakest severity visible on small images
    (a 3-px blur radius at 224 would be a no-op at 8x8). Each corruption documents its floor.
    """
    return max(min(x.shape[-2:]) / REFERENCE_SIZE, floor)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Grey level [N,1,H,W] (ITU-R 601 weights, as cv2.COLOR_RGB2GRAY); a 1-channel image is its own grey."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
