"""Blur family: defocus, glass, motion and zoom blur, plus the filtering helpers the other families reuse.

Spatial constants are ImageNet-C's for 224x224 (make_imagenet_c.py) and scale with the image through
`size_factor`; each corruption's floor is the smallest factor that still moves pixels at severity 1.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions.base import rand, register_corruption, size_factor

# ------------------------------------------------------------------------------------------------------ helpers


def fft_length(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= n: FFTs of such lengths are fast, while one of a length with a
    large prime factor (244 = 4 * 61) costs several times more."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def filter2d(x: torch.Tensor, kernel: torch.Tensor, sum_channels: bool = False) -> torch.Tensor:
    """Convolve each channel with an odd square `kernel` [k,k] (shared), [N,k,k] (per image) or [N,C,k,k] (per image
    and channel), edges replicated; with `sum_channels`, the sum of the channels' results [N,1,H,W] (one inverse FFT).

    Done with FFTs so the cost does not grow with the kernel: motion-blur kernels reach 81x81 at 224 px. The
    transform is zero-padded to a fast length (`fft_length`) beyond the replicated border, which is wide enough that
    the circular convolution never wraps into the kept pixels.
    """
    h, w = x.shape[-2:]
    r = kernel.shape[-1] // 2
    size = (fft_length(h + 2 * r), fft_length(w + 2 * r))
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    k = kernel.to(x.dtype)
    k = k.reshape(-1, 1, 2 * r + 1, 2 * r + 1) if k.dim() < 4 else k
    # The kernel's transform, uncentred (so the output is shifted by r): its rows first, only the 2r+1 that are not 0.
    k = torch.fft.fft(torch.fft.rfft(k, n=size[1], dim=-1), n=size[0], dim=-2)
    spectrum = torch.fft.rfft2(xp, s=size) * k
    if sum_channels:
        spectrum = spectrum.sum(1, keepdim=True)
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * r : 2 * r + h, 2 * r : 2 * r + w]


def gaussian_taps(sigma: float, like: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian [k], cut at `truncate` sigmas (at least 3 taps)."""
    r = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-r, r + 1, device=like.device, dtype=like.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_kernel(sigma: float, like: torch.Tensor, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 2-D Gaussian [k,k], cut at `truncate` sigmas (at least 3x3)."""
    g = gaussian_taps(sigma, like, truncate)
    return g[:, None] * g[None, :]


_DIRECT_TAPS = 25  # a Gaussian this wide or narrower is applied directly (2 x taps passes), a wider one by FFT


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian in torch (edges replicated rather than reflected).

    Small kernels (ImageNet-C's blurs at 224 px have 3 to 11 taps) are applied as two 1-D passes of shifted
    multiply-adds, several times faster on a CPU than the FFT of `filter2d`, which equals it up to float rounding.
    """
    g = gaussian_taps(sigma, x)
    if g.numel() > _DIRECT_TAPS:
        return filter2d(x, g[:, None] * g[None, :])
    h, w = x.shape[-2:]
    r = g.numel() // 2
    taps = g.tolist()
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    rows = xp[..., :h, :] * taps[0]
    for k in range(1, 2 * r + 1):
        rows.add_(xp[..., k : k + h, :], alpha=taps[k])
    out = rows[..., :w] * taps[0]
    for k in range(1, 2 * r + 1):
        out.add_(rows[..., k : k + w], alpha=taps[k])
    return out


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
    """Magnify the centre of each image by `factor` >= 1, keeping the size (the reference's clipped_zoom). One
    sampling grid serves the whole batch (the same for every image)."""
    theta = torch.tensor([[[1 / factor, 0, 0], [0, 1 / factor, 0]]], device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [1, *x.shape[1:]], align_corners=False).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# -------------------------------------------------------------------------------------------------- corruptions

_DEFOCUS = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]  # disk radius, anti-alias sigma (px at 224)
_DEFOCUS_FLOOR = 0.25  # severity 1's 3-px radius never drops below 0.75 px

_GLASS = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]  # sigma, max shift (px at 224), iterations
_GLASS_FLOOR = 0.5  # severity 1's 1-px shift never drops below 0.5 px

_MOTION = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)]  # ImageMagick radius, sigma (px at 224)
_MOTION_FLOOR = 0.25  # severity 1's sigma of 3 px never drops below 0.75 px

_ZOOM = [(0.01, 11), (0.01, 16), (0.02, 11), (0.02, 13), (0.03, 11)]  # np.arange(1, 1.11, 0.01) ... as (step, n)


@functools.lru_cache(maxsize=16)  # a few MB each at 224 px: a plan per (size, severity) in use
def _shuffle_plan(h: int, w: int, reach: int, rounds: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor,
                                                                                          list[int]]:
    """The reference's swap positions and a schedule that runs `rounds` rounds of them as wavefronts of steps
    touching disjoint pixels: (positions, order, sizes).

    `positions` [S] are the flat indices of rows h-reach..reach+1 and columns likewise (each from the bottom
    right), in the order the offsets are drawn in: by 2*reach*(h-reach-i) + (w-reach-j), then row-major (the order
    this shuffle has always drawn them in, so a seed keeps its result). `order` sorts the (round, step) pairs,
    round-major, into wavefronts, `sizes` counts each wavefront's steps.

    Step (i, j) writes (i, j) and reads one pixel of rows i-reach..i+reach-1, columns j-reach..j+reach-1; a step
    that conflicts with an earlier one of its round (shares a pixel that one of them writes) lies in rows i..i+reach
    and columns j-reach..j+reach, and one that conflicts with a step of the round before lies in rows
    i-reach..i+reach, columns likewise. Wavefront t = m*T + (reach+1)*(h-reach-i) + (w-reach-j) for step (i, j)
    of round m, with T = reach*(reach+2) + 1, therefore puts every step after all the steps it conflicts with
    that ran before it in the sequential loop, and the steps of one wavefront are independent: running the
    wavefronts in order (all reads of one before its writes) is exactly the sequential loop, in about
    (reach+1)*H + W + (rounds-1)*T wavefronts where one per round of 2*reach*H + W ran before.
    """
    rows = torch.arange(h - reach, reach, -1)
    cols = torch.arange(w - reach, reach, -1)
    i, j = (a.flatten() for a in torch.meshgrid(rows, cols, indexing="ij"))
    drawn = (2 * reach * (h - reach - i) + (w - reach - j)).argsort(stable=True)
    i, j = i[drawn], j[drawn]
    period = reach * (reach + 2) + 1
    t = (torch.arange(rounds)[:, None] * period + ((reach + 1) * (h - reach - i) + (w - reach - j))[None]).flatten()
    order = t.argsort(stable=True)
    sizes = torch.unique_consecutive(t[order], return_counts=True)[1].tolist()
    return (i * w + j).to(device), order.to(device), sizes


def sequential_copies(x: torch.Tensor, reach: int, rounds: int, gen: torch.Generator) -> torch.Tensor:
    """The reference's local shuffle, `rounds` times: visit every pixel from the bottom right, row by row, and give
    it the current value of the pixel at a random offset in [-reach, reach - 1]^2.

    The reference means to swap the two, but its tuple assignment of numpy views copies instead (the second
    assignment writes back the value just copied), so pixels are duplicated and lost, and values copied into
    pixels still to be visited travel on. That is what ImageNet-C's glass blur is, so we do the same.
    Vectorised over the batch and over wavefronts of independent steps, the rounds overlapping (`_shuffle_plan`);
    the result is that of the sequential loop for the same offsets, which are drawn round by round.
    """
    n, c, h, w = x.shape
    positions, order, sizes = _shuffle_plan(h, w, reach, rounds, x.device)
    if not sizes:
        return x
    steps = positions.numel()
    offsets = torch.empty(rounds * steps, n, device=x.device, dtype=x.dtype)  # flat offset + reach * (w + 1)
    for m in range(rounds):
        d = rand(gen, (n, 2, steps), x).mul_(2 * reach).floor_().transpose(0, 2)  # dy + reach, dx + reach: [S,2,N]
        torch.add(d[:, 1], d[:, 0], alpha=w, out=offsets[m * steps : (m + 1) * steps])  # whole numbers: exact
    image = torch.arange(n, device=x.device) * (h * w)
    sorted_positions = positions.repeat(rounds)[order]
    reads = offsets.index_select(0, order).long().add_((sorted_positions - reach * (w + 1))[:, None]).add_(image)
    writes = sorted_positions[:, None] + image
    flat = x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).view(n * h * w, c)  # pixel rows
    chunks = [size * n for size in sizes]  # wavefront-major, then image
    for src, dst in zip(reads.view(-1).split(chunks), writes.view(-1).split(chunks), strict=True):
        flat.index_copy_(0, dst, flat.index_select(0, src))
    return flat.view(n, h, w, c).permute(0, 3, 1, 2).contiguous()


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
    return gaussian_blur(sequential_copies(x, max(1, round(shift * f)), iterations, gen), sigma * f)


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
