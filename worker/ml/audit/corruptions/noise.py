"""Noise family: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise, per value, as in ImageNet-C.

No spatial parameters, so nothing scales with the image size. Gaussian and impulse noise reuse the same draws for
every severity under one seed, so a higher severity is the same noise, stronger.
"""

from __future__ import annotations

import torch

from editaudit.worker.ml.audit.corruptions.base import rand, randn, register_corruption

_GAUSSIAN = [0.08, 0.12, 0.18, 0.26, 0.38]  # standard deviation
_SHOT = [60, 25, 12, 5, 3]  # photons per unit intensity (fewer: noisier)
_IMPULSE = [0.03, 0.06, 0.09, 0.17, 0.27]  # fraction of values replaced by 0 or 1


@register_corruption("gaussian_noise", "noise")
def gaussian_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return x + _GAUSSIAN[severity - 1] * randn(gen, tuple(x.shape), x)


@register_corruption("shot_noise", "noise")
def shot_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Poisson counts drawn on the generator's device (torch.poisson needs its rates there)."""
    c = _SHOT[severity - 1]
    counts = torch.poisson((x * c).to(gen.device, torch.float32), generator=gen)
    return counts.to(x.device, x.dtype) / c


@register_corruption("impulse_noise", "noise")
def impulse_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """skimage's 's&p' mode: each value is replaced with probability `amount`, half by 0 and half by 1."""
    hit = rand(gen, tuple(x.shape), x) < _IMPULSE[severity - 1]
    salt = (rand(gen, tuple(x.shape), x) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)
