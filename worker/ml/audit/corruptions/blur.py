"""Blur family: defocus, glass, motion and zoom blur, plus the filtering helpers the other families reuse.

Spatial constants are ImageNet-C's for 224x224 (make_imagenet_c.py) and scale with the image through
`size_factor`; each corruption's floor is the smallest factor that still moves pixels at severity 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions.base import rand, register_corruption, size_factor

# ------------------------------------------------------------------------------------------------------ helpers


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel with an odd square `kernel` [k,k] (shared) or [N,k,k] (per image), edges replicated.

    Done with FFTs so the cost does not grow with the kernel: motion-blur kernels reach 81x81 at 224 px.
    """
    h, w = x.shape[-2:]
    r = kernel.shape[-1] // 2
    size = (h + 2 * r, w + 2 * r)
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    k = kernel.to(x.dtype).reshape(-1, 1, 2 * r + 1, 2 * r + 1)
    k = torch.roll(F.pad(k, (0, size[1] - 2 * r - 1, 0, size[0] - 2 * r - 1)), shifts=(-r, -r), dims=(-2, -1))
    out = torch.fft.irfft2(torch.fft.rfft2(xp) * torch.fft.rfft2(k), s=size)
    return out[..., r : r + h, r : r + w]


def gaussian_kernel(sigma: float, like: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 2-D Gaussian [k,k], cut at `truncate` sigmas (at least 3x3)."""
    r = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-r, r + 1, device=like.device, dtype=like.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian in torch (edges replicated rather than reflected)."""
    return filter2d(x, gaussian_kernel(sigma, x))


def disk_kernel(radius: float, like: torch.Tensor, supersample: int = 8) -> torch.Tensor:
    """Pillbox of a fractional `radius`: each tap is the fraction of its pixel inside the disk (anti-aliased)."""
    r = math.ceil(radius)
    sub = (torch.arange(supersample, device=like.device, dtype=like.dtype) + 0.5) / supersample - 0.5
    pos = (torch.arange(-r, r + 1, device=like.device, dtype=like.dtype)[:, None] + sub).flatten()  # [(2r+1)*s]
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2 <= radius**2).to(like.dtype)
    cover = inside.view(2 * r + 1, supersample, 2 * r + 1, supersample).mean((1, 3))
    return cover / cover.sum()


def line_kernel(angles: torch.Tensor, length: float, sigma: float, snap: bool = False) -> torch.Tensor:
    """One kernel per angle [N,k,k]: taps at 0..length px along the angle, weighted by a one-sided Gaussian.

    This is ImageMagick's motion blur (a trail behind each pixel); taps fall between pixels and are splatted
    bilinearly, so fractional lengths and any angle give a smooth kernel. With `snap` each tap goes to its nearest
    pixel instead (halves rounded down), as the reference's numpy motion blur shifts the image by whole pixels:
    crisp one-pixel trails.
    """
    r = max(1, math.ceil(length))
    t = torch.arange(0, math.floor(length) + 1, device=angles.device, dtype=angles.dtype)
    weight = torch.exp(-(t**2) / (2 * sigma**2))
    weight = weight / weight.sum()
    rad = torch.deg2rad(angles)[:, None]
    grid = torch.arange(-r, r + 1, device=angles.device, dtype=angles.dtype)
    u, v = (t * torch.cos(rad))[..., None], (t * torch.sin(rad))[..., None]  # [N,T,1]
    if snap:
        u, v = torch.ceil(u - 0.5), torch.ceil(v - 0.5)
    tent_u = (1 - (grid - u).abs()).clamp(min=0)  # [N,T,k]
    tent_v = (1 - (grid - v).abs()).clamp(min=0)
    return torch.einsum("t,ntu,ntv->nvu", weight, tent_u, tent_v)


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify the centre of each image by `factor` >= 1, keeping the size (the reference's clipped_zoom)."""
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# -------------------------------------------------------------------------------------------------- corruptions

_DEFOCUS = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]  # disk radius, anti-alias sigma (px at 224)
_DEFOCUS_FLOOR = 0.25  # severity 1's 3-px radius never drops below 0.75 px

_GLASS = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]  # sigma, max shift (px at 224), iterations
_GLASS_FLOOR = 0.5  # severity 1's 1-px shift never drops below 0.5 px

_MOTION = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]  # ImageMagick radius, sigma (px at 224)
_MOTION_FLOOR = 0.25  # severity 1's sigma of 3 px never drops below 0.75 px

_ZOOM = [(0.01, 11), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11)]  # np.arange(1, 1.11, 0.01) ... as (step, n)


def _wavefronts(h: int, w: int, reach: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """The reference's swap positions (rows h-reach..reach+1, columns likewise, each from the bottom right) as flat
    indices sorted into wavefronts of steps that touch disjoint windows, and the size of each wavefront.

    Step (i, j) reads or writes rows i-reach..i+reach-1 and the same columns around j; with t = 2*reach*(h-reach-i) +
    (w-reach-j), two steps of one t are >= 2*reach columns apart and every earlier step that shares a pixel with a
    step has a smaller t, so running the wavefronts in order of t is exactly the sequential loop.
    """
    rows = torch.arange(h - reach, reach, -1, device=device)
    cols = torch.arange(w - reach, reach, -1, device=device)
    i, j = torch.meshgrid(rows, cols, indexing="ij")
    t = (2 * reach * (h - reach - i) + (w - reach - j)).flatten()
    order = t.argsort(stable=True)
    return (i * w + j).flatten()[order], torch.unique_consecutive(t[order], return_counts=True)[1].tolist()


def sequential_copies(x: torch.Tensor, reach: int, gen: torch.Generator) -> torch.Tensor:
    """The reference's local shuffle: visit every pixel from the bottom right, row by row, and give it the current
    value of the pixel at a random offset in [-reach, reach - 1]^2.

    The reference means to swap the two, but its tuple assignment of numpy views copies instead (the second
    assignment writes back the value just copied), so pixels are duplicated and lost, and values copied into
    pixels still to be visited travel on. That is what ImageNet-C's glass blur is, so we do the same.
    Vectorised over the batch and over wavefronts of independent steps (`_wavefronts`); the result is that of the
    sequential loop for the same offsets.
    """
    n, c, h, w = x.shape
    steps, sizes = _wavefronts(h, w, reach, x.device)
    if not sizes:
        return x
    offsets = (rand(gen, (n, 2, steps.numel()), x) * 2 * reach).floor().long() - reach  # dy, dx per step
    sources = steps + offsets[:, 0] * w + offsets[:, 1]  # [N, steps]
    flat = x.reshape(n, c, h * w).clone()
    start = 0
    for size in sizes:
        here = steps[start : start + size].expand(n, c, size)
        flat.scatter_(2, here, flat.gather(2, sources[:, None, start : start + size].expand(n, c, size)))
        start += size
    return flat.view(n, c, h, w)


@register_corruption("defocus_blur", "blur")
def defocus_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    radius, alias = _DEFOCUS[severity - 1]
    f = size_factor(x, _DEFOCUS_FLOOR)
    return gaussian_blur(filter2d(x, disk_kernel(radius * f, x)), alias * f)


@register_corruption("glass_blur", "blur")
def glass_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Blur, shuffle pixels locally as the reference does (`sequential_copies`), blur again. The swap reach is a
    whole number of pixels: scaled with the image and rounded, never below 1. The first blur is stored as 8-bit
    values, truncated, as the reference does: it darkens by half a level on average, which on smooth images is a
    sizeable part of the reference's effect."""
    sigma, shift, iterations = _GLASS[severity - 1]
    f = size_factor(x, _GLASS_FLOOR)
    x = torch.floor(gaussian_blur(x, sigma * f).clamp(0, 1) * 255) / 255  # the reference's 8-bit intermediate
    for _ in range(iterations):
        x = sequential_copies(x, max(1, round(shift * f)), gen)
    return gaussian_blur(x, sigma * f)


@register_corruption("motion_blur", "blur")
def motion_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """One random angle in [-45, 45) degrees per image, as the reference draws one per image."""
    radius, sigma = _MOTION[severity - 1]
    f = size_factor(x, _MOTION_FLOOR)
    angles = rand(gen, (x.shape[0],), x) * 90 - 45
    return filter2d(x, line_kernel(angles, 2 * radius * f, sigma * f))


@register_corruption("zoom_blur", "blur")
def zoom_blur(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Average of the image and its centre-magnified copies; zoom factors are relative, so no size scaling."""
    step, n = _ZOOM[severity - 1]
    out = x.clone()
    for i in range(n):
        out += zoom(x, 1 + step * i)
    return out / (n + 1)
