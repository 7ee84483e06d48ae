"""Digital family: brightness, contrast, elastic transform, pixelate and JPEG compression.

Brightness and contrast are exact re-statements of the reference in torch; pixelate is PIL's BOX down/up-sampling
written as two resampling matrices; JPEG is the baseline codec's lossy steps (colour conversion, 4:2:0 chroma
subsampling, 8x8 DCT, IJG quantisation) without the lossless entropy coding, which changes nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions.base import REFERENCE_SIZE, rand, register_corruption, size_factor
from editaudit.worker.ml.audit.corruptions.blur import filter2d, gaussian_kernel

_BRIGHTNESS = [0.1, 0.2, 0.3, 0.4, 0.5]  # added to the HSV value
_CONTRAST = [0.4, 0.3, 0.2, 0.1, 0.05]  # factor on the deviation from each channel's mean
_PIXELATE = [0.6, 0.5, 0.4, 0.3, 0.25]  # block count per pixel (blocks of 1/c px)
_JPEG = [25, 18, 15, 10, 7]  # IJG quality

# The reference's elastic transform (imagecorruptions' version of ImageNet-C's): uniform noise in +-0.005 * size px,
# Gaussian-smoothed with sigma 0.01 * size px, scaled by 250 * c. All three at 224 px; see elastic_transform.
_ELASTIC = [0.05, 0.065, 0.085, 0.1, 0.12]  # c
_ELASTIC_NOISE, _ELASTIC_SIGMA, _ELASTIC_GAIN = 0.005, 0.01, 250
_ELASTIC_FLOOR = 1 / 2.24  # the 2.24-px smoothing never drops below 1 px

# IJG / JPEG standard Annex K tables (quality 50), row-major 8x8.
_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA_Q = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


@register_corruption("brightness", "digital")
def brightness(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Raise the HSV value V = max over channels by c, keeping hue and saturation: exactly the reference's
    rgb2hsv -> V + c -> hsv2rgb, because with H and S fixed every channel is proportional to V (black turns grey).
    On one channel V is the pixel itself."""
    v = x.amax(1, keepdim=True)
    lifted = (v + _BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(v > 0, x * lifted / v.clamp_min(1e-12), lifted)


@register_corruption("contrast", "digital")
def contrast(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    means = x.mean((2, 3), keepdim=True)
    return (x - means) * _CONTRAST[severity - 1] + means


@register_corruption("elastic_transform", "digital")
def elastic_transform(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Warp by a smooth random displacement field (uniform noise, Gaussian-smoothed, scaled), sampled bilinearly
    with reflected borders. At other sizes the smoothing scales with the image and the amplitude is rescaled so the
    displacement, relative to the image, matches 224 px (smoothing white noise shrinks it by the kernel's norm)."""
    ref = REFERENCE_SIZE
    alpha = _ELASTIC_GAIN * _ELASTIC[severity - 1] * _ELASTIC_NOISE * ref  # px at 224, before smoothing
    sigma = _ELASTIC_SIGMA * ref
    f = size_factor(x, _ELASTIC_FLOOR)
    kernel = gaussian_kernel(sigma * f, x)
    gain = alpha * f * gaussian_kernel(sigma, x).norm() / kernel.norm()
    n, _, h, w = x.shape
    shift = filter2d(rand(gen, (n, 2, h, w), x) * 2 - 1, kernel) * gain  # px; channel 0 along x, 1 along y
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    grid = torch.stack([(2 * (xs + shift[:, 0]) + 1) / w - 1, (2 * (ys + shift[:, 1]) + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _pixelate_matrix(size: int, c: float, like: torch.Tensor) -> torch.Tensor:
    """[size,size] operator of PIL's two BOX resizes: average over blocks of 1/c px, then paint each pixel with
    the block under its centre (BOX upsampling is nearest-neighbour).

    Blocks are exactly 1/c px wide (the last one cut short), where PIL rounds to int(size * c) blocks; this keeps
    severities apart on small images, where the rounding ties them.
    """
    blocks = torch.arange(math.ceil(size * c) + 1, device=like.device, dtype=like.dtype).div(c).clamp(max=size)
    pixels = torch.arange(size + 1, device=like.device, dtype=like.dtype)
    overlap = torch.minimum(blocks[1:, None], pixels[None, 1:]) - torch.maximum(blocks[:-1, None], pixels[None, :-1])
    overlap = overlap.clamp(min=0)  # [blocks, pixels]
    down = overlap / overlap.sum(1, keepdim=True)
    owner = torch.floor((pixels[:-1] + 0.5) * c).long()
    return down[owner]


@register_corruption("pixelate", "digital")
def pixelate(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    c = _PIXELATE[severity - 1]
    rows, cols = _pixelate_matrix(x.shape[2], c, x), _pixelate_matrix(x.shape[3], c, x)
    return torch.einsum("hi,ncij,wj->nchw", rows, x, cols)


def _quant_table(base: list[int], quality: int, like: torch.Tensor) -> torch.Tensor:
    """IJG quality scaling of a standard table (libjpeg's jpeg_quality_scaling + baseline clamp to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # integer, as in libjpeg
    table = torch.tensor(base, device=like.device, dtype=like.dtype).view(8, 8)
    return torch.floor((table * scale + 50) / 100).clamp(1, 255)


def _dct_matrix(like: torch.Tensor) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix: coefficients = D @ block @ D.T."""
    k = torch.arange(8, device=like.device, dtype=like.dtype)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _quantize_blocks(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """DCT, quantise and dequantise every 8x8 block of `plane` [N,H,W] (H, W multiples of 8, level-shifted)."""
    n, h, w = plane.shape
    d = _dct_matrix(plane)
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # [N, H/8, W/8, 8, 8]
    coef = d @ blocks @ d.T
    blocks = d.T @ (torch.round(coef / table) * table) @ d
    return blocks.transpose(2, 3).reshape(n, h, w)


def _jpeg_rgb(x: torch.Tensor, luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr, chroma averaged over 2x2 (4:2:0, PIL's default) and upsampled bilinearly like libjpeg's
    'fancy' upsampling; x is [N,3,H,W] in 0..255 with H, W multiples of 16."""
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    y = _quantize_blocks(y - 128, luma) + 128
    sub = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    sub = torch.stack([_quantize_blocks(sub[:, i], chroma) for i in range(2)], 1)
    cb, cr = F.interpolate(sub, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    return torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)


@register_corruption("jpeg_compression", "digital")
def jpeg_compression(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Baseline JPEG's losses at the reference quality; 3 channels as colour, any other count as grey planes.
    Edges are padded by replication to whole blocks (as libjpeg does) and cropped back."""
    quality = _JPEG[severity - 1]
    n, c, h, w = x.shape
    unit = 16 if c == 3 else 8
    xp = F.pad(x * 255, (0, -w % unit, 0, -h % unit), mode="replicate")
    luma = _quant_table(_LUMA_Q, quality, x)
    if c == 3:
        out = _jpeg_rgb(xp, luma, _quant_table(_CHROMA_Q, quality, x))
    else:
        out = (_quantize_blocks(xp.flatten(0, 1) - 128, luma) + 128).view(xp.shape)
    return out[..., :h, :w] / 255
