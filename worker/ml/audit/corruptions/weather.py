"""Weather family: snow, frost and fog, generated procedurally per image from the generator.

The reference pastes frost photographs and draws fog from a diamond-square plasma fractal; here both come from
seeded multi-octave noise (see docs/corruptions.md). All layers are grey: on RGB they are tinted or added to every
channel, on 1-channel images they are their luminance equivalent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions.base import luminance, rand, randn, register_corruption, size_factor
from editaudit.worker.ml.audit.corruptions.blur import filter2d, line_kernel, zoom

# loc, scale of the flake noise, flake zoom (px at 224), threshold, motion radius, motion sigma (px at 224), blend.
# Severity 3's blend is 0.675, not the reference's 0.7: with 0.7 severities 2 and 3 change images equally.
_SNOW = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.675),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]
_SNOW_FLOOR = 0.5  # the smallest flakes (zoom 2 at 224 px) never drop below 1 px

_FROST = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]  # weight of the image, of the frost
_FROST_TINT = (0.85, 0.93, 1.0)  # pale blue ice, RGB
_CRYSTAL_LENGTH = 0.08  # crystal streak length, fraction of the shorter side
_CRYSTAL_COVER = 0.05  # expected fraction of pixels on a streak, per orientation

_FOG = [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]  # strength, plasma "wibble decay" (higher: smoother)


def fractal_noise(shape: tuple[int, int, int], decay: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Stand-in for the reference's plasma fractal: [N,1,H,W] in [0,1], one independent map per image.

    Octave k is a (2^(k+1)+1)^2 grid of uniform values in [-1,1] upsampled bicubically, with amplitude
    decay^(-2k) (the plasma's wibble enters squared), from two cells across the image down to about one pixel.
    The map is centred on 1/2 with the first octave spanning [0,1] and clipped, not min-max normalised as the
    reference does: min-max squeezes rougher maps toward grey, so the reference's severity 4 (rougher than 3 at
    the same strength) would change images less than severity 3. The draws do not depend on `decay`.
    """
    n, h, w = shape
    field = torch.zeros(n, 1, h, w, device=like.device, dtype=like.dtype)
    for k in range(max(1, math.ceil(math.log2(max(h, w))))):
        cells = rand(gen, (n, 1, 2 ** (k + 1) + 1, 2 ** (k + 1) + 1), like) * 2 - 1
        field += decay ** (-2 * k) * F.interpolate(cells, size=(h, w), mode="bicubic", align_corners=True)
    return (0.5 + 0.5 * field).clamp(0, 1)


def frost_texture(shape: tuple[int, int, int], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Procedural stand-in for the reference's frost photographs, [N,1,H,W] in [0,1], mean about 0.27.

    Like those photographs (ice on a window at night): a dark ground with a faint rough haze, and bright straight
    crystal streaks in three random directions per image, grown from sparse seeds with a line kernel; streak length
    scales with the image. A dark ground matters: with the reference weights (image weight falling at a constant
    frost weight from severity 3 to 4) a bright layer would make severity 4 change images less than severity 3.
    """
    n, h, w = shape
    haze = fractal_noise(shape, 1.3, gen, like)
    length = _CRYSTAL_LENGTH * min(h, w)
    taps = math.floor(length) + 1
    streaks = torch.zeros_like(haze)
    for _ in range(3):
        seeds = (rand(gen, (n, 1, h, w), like) < _CRYSTAL_COVER / taps).to(like.dtype)
        streaks += filter2d(seeds, line_kernel(rand(gen, (n,), like) * 360, length, sigma=length)) * taps
    return (0.5 * haze**2 + 0.9 * streaks.clamp(max=1)).clamp(0, 1)


def _tint(x: torch.Tensor) -> torch.Tensor:
    """Frost colour per channel: the RGB tint on 3 channels, its luminance on any other channel count."""
    tint = torch.tensor(_FROST_TINT, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return tint if x.shape[1] == 3 else luminance(tint)


@register_corruption("snow", "weather")
def snow(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Thresholded, zoomed noise streaked by motion blur (angle in [-135, -45) per image), added twice (once
    rotated by 180 degrees) over an image lifted toward a whitened grey, as in the reference.

    The flake layer is drawn with the reference's constants on a canvas of the image size divided by the size
    factor (224 px for a 224-px image) and resized to the image, so its statistics do not depend on the size.
    """
    loc, scale, flake, threshold, radius, sigma, blend = _SNOW[severity - 1]
    n, _, h, w = x.shape
    f = size_factor(x, _SNOW_FLOOR)
    layer = zoom(loc + scale * randn(gen, (n, 1, round(h / f), round(w / f)), x), flake)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = rand(gen, (n,), x) * 90 - 135
    layer = filter2d(layer, line_kernel(angles, 2 * radius, sigma))
    layer = F.interpolate(layer, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    x = blend * x + (1 - blend) * torch.maximum(x, luminance(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


@register_corruption("frost", "weather")
def frost(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    image_weight, frost_weight = _FROST[severity - 1]
    n, _, h, w = x.shape
    return image_weight * x + frost_weight * _tint(x) * frost_texture((n, h, w), gen, x)


@register_corruption("fog", "weather")
def fog(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Add a grey fractal haze, then rescale so the image's brightest value maps where the reference puts it."""
    strength, decay = _FOG[severity - 1]
    n, _, h, w = x.shape
    peak = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * fractal_noise((n, h, w), decay, gen, x)
    return x * peak / (peak + strength)
