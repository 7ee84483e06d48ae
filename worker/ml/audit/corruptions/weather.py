"""Weather family: snow, frost and fog, generated per image from the generator.

Fog's plasma fractal and snow's flakes follow the reference; the reference pastes frost photographs, which we do not
ship, so frost is procedural with the photographs' colour and contrast (see docs/corruptions.md). On RGB the layers
are added to every channel or tinted; on other channel counts they are their luminance equivalent.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions.base import (
    REFERENCE_SIZE,
    luminance,
    rand,
    randn,
    register_corruption,
    size_factor,
)
from editaudit.worker.ml.audit.corruptions.blur import filter2d, gaussian_blur, line_kernel

# loc, scale of the flake noise, flake zoom (px at 224), threshold, motion radius, motion sigma (px at 224), blend.
# Severity 3's blend is 0.675, not the reference's 0.7: with 0.7 severities 2 and 3 change images equally.
_SNOW = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.675),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)]
_SNOW_FLOOR = 0.5  # the smallest flakes (zoom 2 at 224 px) never drop below 1 px

_FROST = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]  # weight of the image, of the frost
# One plate per reference photograph the reference draws from (frost1..frost5; frost2 and frost3 are the same
# picture, hence its weight 2/5): mean RGB and in-crop grey standard deviation of 224-px crops of the photograph
# rescaled by 1.1, as the reference crops them (bench/corruptions_fidelity.py --frost-plates recomputes them).
_FROST_PLATES = [((0.317, 0.590, 0.653), 0.059), ((0.773, 0.790, 0.826), 0.076), ((0.773, 0.790, 0.826), 0.076),
                 ((0.565, 0.623, 0.673), 0.099), ((0.405, 0.449, 0.495), 0.144)]
_CRYSTAL_LENGTH = 0.08  # crystal streak length, fraction of the shorter side
_CRYSTAL_COVER = 0.05  # expected fraction of pixels on a streak, per orientation
_ICE_SMOOTHING = 0.7  # Gaussian sigma of the ice structure, px at 224

_FOG = [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)]  # strength, plasma "wibble decay" (higher: smoother)


@functools.lru_cache(maxsize=64)
def _bicubic_matrix(cells: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[size, cells]: F.interpolate's bicubic upsampling (align_corners=True) of `cells` samples to `size`, as a
    matrix (the interpolation of each unit vector), so that a 2-D upsampling is M_h @ c @ M_w^T."""
    eye = torch.eye(cells, dtype=dtype)[:, None, None, :]
    m = F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=True)[:, 0, 0, :]
    return m.T.contiguous().to(device)


def fractal_noise(shape: tuple[int, int, int], decay: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Multi-octave value noise for the frost haze: [N,1,H,W] in [0,1], one independent map per image.

    Octave k is a (2^(k+1)+1)^2 grid of uniform values in [-1,1] upsampled bicubically, with amplitude
    decay^(-2k), from two cells across the image down to about one pixel, so its features scale with the image.
    Centred on 1/2 with the first octave spanning [0,1], clipped. Coarse octaves are upsampled as matrix products
    (`_bicubic_matrix`, all of them in one product), the same interpolation as F.interpolate's and many times
    faster while the grid is well below the image size.
    """
    n, h, w = shape
    field = torch.zeros(n, 1, h, w, device=like.device, dtype=like.dtype)
    rows, cols = [], []
    for k in range(max(1, math.ceil(math.log2(max(h, w))))):
        size = 2 ** (k + 1) + 1
        cells = rand(gen, (n, 1, size, size), like) * 2 - 1
        if 5 * size <= 3 * max(h, w):
            rows.append(_bicubic_matrix(size, h, like.device, like.dtype) @ cells[:, 0])  # [N, H, size]
            cols.append(decay ** (-2 * k) * _bicubic_matrix(size, w, like.device, like.dtype))  # [W, size]
        else:
            field += decay ** (-2 * k) * F.interpolate(cells, size=(h, w), mode="bicubic", align_corners=True)
    if rows:
        field[:, 0] += torch.cat(rows, -1) @ torch.cat(cols, -1).T
    return (0.5 + 0.5 * field).clamp(0, 1)


def frost_texture(shape: tuple[int, int, int], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Ice structure [N,1,H,W], zero mean and unit standard deviation per image.

    A rough fractal haze (ice sheet) plus bright straight crystal streaks in three random directions per image,
    grown from sparse seeds with a line kernel; sizes are relative to the image. Smoothed slightly so that, as in
    the photographs, its variation lies at crystal scales (a few to tens of pixels at 224) rather than in pixel
    roughness; with the roughness left in, the same contrast disturbs a classifier less than the reference's
    frost does. Only the structure: level and contrast come from the plates (`frost_layer`).
    """
    n, h, w = shape
    haze = fractal_noise(shape, 1.3, gen, like)
    length = _CRYSTAL_LENGTH * min(h, w)
    taps = math.floor(length) + 1
    seeds, kernels = [], []
    for _ in range(3):
        seeds.append((rand(gen, (n, 1, h, w), like) < _CRYSTAL_COVER / taps).to(like.dtype))
        kernels.append(line_kernel(rand(gen, (n,), like) * 360, length, sigma=length))
    streaks = filter2d(torch.cat(seeds, 1), torch.stack(kernels, 1), sum_channels=True) * taps
    ice = gaussian_blur(haze + streaks.clamp(max=1), _ICE_SMOOTHING * min(h, w) / REFERENCE_SIZE)
    ice = ice - ice.mean((2, 3), keepdim=True)
    return ice / ice.std((2, 3), keepdim=True).clamp_min(1e-6)


def frost_layer(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Procedural stand-in for the reference's frost photographs, [N,C,H,W] in [0,1].

    Each image draws one plate, as the reference draws one photograph: its mean colour and contrast are that
    photograph's (light, pale blue, mean grey 0.48-0.81), the structure is `frost_texture`. On channel counts other
    than 3 the plate colour is its luminance, as the reference's rgb2gray.
    """
    n, _, h, w = x.shape
    pick = (rand(gen, (n,), x) * len(_FROST_PLATES)).long().clamp(max=len(_FROST_PLATES) - 1)
    level = torch.tensor([p[0] for p in _FROST_PLATES], device=x.device, dtype=x.dtype)[pick]  # [N,3]
    spread = torch.tensor([p[1] for p in _FROST_PLATES], device=x.device, dtype=x.dtype)[pick]
    level = level.view(n, 3, 1, 1) if x.shape[1] == 3 else luminance(level.view(n, 3, 1, 1))
    return (level + spread.view(n, 1, 1, 1) * frost_texture((n, h, w), gen, x)).clamp(0, 1)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The reference's `clipped_zoom` as it samples: the centre crop of ceil(size / factor) px, scipy's order-1
    zoom of it (corners to corners, so the sampling step is (crop - 1) / (round(crop * factor) - 1) px, not
    1 / factor), then the top-left size px. Which fractions of a pixel the samples fall at sets how much of the
    noise's variance survives the interpolation, and so how many flakes pass snow's threshold: sampled at pixel
    centres as `blur.zoom` does (fractions 0, 1/3, 2/3 at zoom 3; 1/4, 3/4 at zoom 2) the layer had 22% more flake
    pixels than the reference's at severity 1 and 17% fewer at severity 2."""
    h, w = x.shape[-2:]

    def coords(size: int) -> torch.Tensor:
        crop = math.ceil(size / factor)
        out = round(crop * factor)
        step = (crop - 1) / max(out - 1, 1)
        pos = (size - crop) // 2 + torch.arange(size, device=x.device, dtype=x.dtype) * step
        return pos * 2 / max(size - 1, 1) - 1  # align_corners=True coordinates

    gy, gx = coords(h), coords(w)
    grid = torch.stack([gx[None, :].expand(h, w), gy[:, None].expand(h, w)], -1)[None].expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


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
    layer = clipped_zoom(loc + scale * randn(gen, (n, 1, round(h / f), round(w / f)), x), flake)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = rand(gen, (n,), x) * 90 - 135
    layer = filter2d(layer, line_kernel(angles, 2 * radius, sigma, snap=True))
    layer = torch.round(layer * 255) / 255  # the reference stores the layer as 8-bit
    layer = F.interpolate(layer, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    x = blend * x + (1 - blend) * torch.maximum(x, luminance(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


@register_corruption("frost", "weather")
def frost(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """The reference's blend `c0 * x + c1 * frost` over a procedural frost layer (see `frost_layer`)."""
    image_weight, frost_weight = _FROST[severity - 1]
    return image_weight * x + frost_weight * frost_layer(x, gen)


def plasma_fractal(n: int, size: int, decay: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """The reference's diamond-square plasma fractal, [N,size,size] in [0,1], one map per image; `size` a power of 2.

    Each level sets square centres, then diamond midpoints, to the mean of their four (wrapped) neighbours plus a
    uniform wibble in +-w^2 (the reference's `wibble * uniform(-wibble, wibble)`), w falling by `decay` per level;
    the map is min-max normalised. The draws do not depend on `decay`, so one seed gives one haze at every severity.
    """
    m = torch.zeros(n, size, size, device=like.device, dtype=like.dtype)
    step, wibble = size, 100.0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble**2 * (rand(gen, tuple(total.shape), like) * 2 - 1)

    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = wibbled(squares + squares.roll(-1, 2))
        centres, corners = m[:, half::step, half::step], m[:, ::step, ::step]
        m[:, ::step, half::step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, ::step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)


@register_corruption("fog", "weather")
def fog(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Add a grey plasma haze (drawn at the next power of two of the longer side and cropped, as the reference
    does), then rescale so the image's brightest value maps where the reference puts it."""
    strength, decay = _FOG[severity - 1]
    n, _, h, w = x.shape
    size = 1 << max(1, (max(h, w) - 1).bit_length())
    peak = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * plasma_fractal(n, size, decay, gen, x)[:, None, :h, :w]
    return x * peak / (peak + strength)
