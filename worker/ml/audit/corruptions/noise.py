"""Noise family: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise, per value, as in ImageNet-C.

No spatial parameters, so nothing scales with the image size. Gaussian and impulse noise reuse the same draws for
every severity under one seed, so a higher severity is the same noise, stronger; so does shot noise, whose counts
are the Poisson inverse CDF of one uniform per value.
"""

from __future__ import annotations

import functools
import math

import torch

from editaudit.worker.ml.audit.corruptions.base import rand, randn, register_corruption

_GAUSSIAN = [0.08, 0.12, 0.18, 0.26, 0.38]  # standard deviation
_SHOT = [60, 25, 12, 5, 3]  # photons per unit intensity (fewer: noisier)
_IMPULSE = [0.03, 0.06, 0.09, 0.17, 0.27]  # fraction of values replaced by 0 or 1

# Poisson inverse-CDF table (`_poisson_table`): intensity cells per unit and uniform buckets, both powers of two so
# that x * _CELLS and u * _BUCKETS are exact.
_CELLS = 2048
_BUCKETS = 2048
_AMBIGUOUS = 128  # flag bit of a table entry whose cell holds more than one count
_GAUSS_LEGENDRE = [(-1 / math.sqrt(3), 1.0), (1 / math.sqrt(3), 1.0)]  # nodes, weights on [-1, 1]


@functools.cache
def _poisson_table(c: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The Poisson inverse CDF for rates x * c, x in [0, 1], as a table over (x cell, u bucket), and the CDF rows.

    Row j holds the rate lam_j = c * j / _CELLS (j = 0.._CELLS, and a last row repeating lam = c for x = 1). With
    X(u, lam) = min{k : u < F(k; lam)}, which grows with u and with lam, every (x, u) in the cell j, bucket g has
    lo <= X <= hi, lo = X(g / B, lam_j), hi = X((g + 1) / B - 0, lam_(j+1)). Entry [j, g] is lo, plus _AMBIGUOUS
    where hi > lo. Counts are histograms of the CDF values' buckets (no search); F is computed in float64.
    """
    cells, buckets = _CELLS, _BUCKETS
    top = math.ceil(c + 14 * math.sqrt(c) + 30)  # F(top - 1; c) is 1.0 in float64
    lam = c * torch.arange(cells + 2, dtype=torch.float64).clamp(max=cells) / cells
    cdf = torch.special.gammaincc(torch.arange(1, top + 1, dtype=torch.float64), lam[:, None])  # [J+2, top]
    if float(cdf[-1, -1]) != 1.0:
        raise AssertionError(f"Poisson CDF table for c={c} ends below 1")
    scaled = cdf * buckets  # exact: buckets is a power of two

    def below(edge: torch.Tensor) -> torch.Tensor:
        """[rows, buckets]: per row, the number of k whose bucket index `edge` (0..B) is <= g, for g = 0..B-1."""
        hist = torch.zeros(edge.shape[0], buckets + 1, dtype=torch.int32)
        hist.scatter_add_(1, edge.long(), torch.ones_like(edge, dtype=torch.int32))
        return hist.cumsum(1, dtype=torch.int32)[:, :buckets]

    lo = below(torch.ceil(scaled[:-1]))  # #{k : F(k; lam_j) <= g / B}
    hi = below(torch.floor(scaled[1:]).clamp(max=buckets))  # #{k : F(k; lam_(j+1)) < (g + 1) / B}
    if int(lo.max()) >= _AMBIGUOUS:
        raise AssertionError(f"Poisson table for c={c} needs more than 7 bits")
    table = (lo + _AMBIGUOUS * (hi > lo)).to(torch.uint8).flatten()
    return table.to(device), cdf[:-1].flatten().to(device)


def _poisson_cdf(k: torch.Tensor, lam: torch.Tensor, row: torch.Tensor, c: float, cdf: torch.Tensor) -> torch.Tensor:
    """F(k; lam) in float64 (k, lam float64; row the rate's table row), from the table's F(k; lam_row) minus the
    integral of the pmf over [lam_row, lam] (dF/dlam = -pmf) by 2-point Gauss-Legendre: the interval is at most
    c / _CELLS wide (0.03 at c = 60), so the error, below (c / _CELLS)^5 / 4320 times the pmf's 4th derivative
    (1e-11), is far below the uniforms' resolution (2^-24)."""
    top = cdf.shape[0] // (_CELLS + 1)
    start = row.double() * (c / _CELLS)
    half = (lam - start) / 2
    log_fact = torch.lgamma(k + 1)
    area: torch.Tensor | float = 0.0
    for node, weight in _GAUSS_LEGENDRE:
        s = start + half * (1 + node)
        area = area + weight * torch.exp(torch.xlogy(k, s) - s - log_fact)
    return cdf[row.long() * top + k.long().clamp(max=top - 1)] - half * area


def poisson_counts(x: torch.Tensor, c: float, u: torch.Tensor) -> torch.Tensor:
    """Poisson(x * c) counts in x's dtype for x in [0, 1], by inversion of the uniforms `u` (x's shape, device and
    dtype): X = min{k : u < F(k; x * c)}, exact up to float64 rounding of F (and the uniforms' resolution). Almost
    every value is one table lookup; values whose table cell holds more than one count are resolved against the
    CDF at their own rate (`_poisson_cdf`)."""
    table, cdf = _poisson_table(float(c), x.device)
    cell = x.clamp(0, 1).mul_(_CELLS).floor_().mul_(_BUCKETS)  # whole numbers below 2^23: exact in float32
    cell.add_((u * _BUCKETS).floor_())
    idx = cell.flatten().to(torch.int32)
    entry = table.index_select(0, idx)
    counts = entry.to(x.dtype)
    hard = (entry >= _AMBIGUOUS).nonzero().squeeze(1)
    if hard.numel():
        k = (entry[hard] - _AMBIGUOUS).double()
        row = idx[hard] // _BUCKETS
        lam, uh = x.flatten()[hard].double().clamp(0, 1) * c, u.flatten()[hard].double()
        todo, block = torch.arange(hard.numel(), device=x.device), 1
        while todo.numel():  # step k up while u >= F(k): mostly once or not at all, up to ~30 in extreme buckets
            ks = k[todo, None] + torch.arange(block, device=x.device, dtype=k.dtype)
            f = _poisson_cdf(ks, lam[todo, None], row[todo, None], c, cdf)
            steps = (uh[todo, None] >= f).cumprod(1).sum(1)
            k[todo] += steps
            todo, block = todo[steps == block], min(4 * block, 64)
        counts[hard] = k.to(x.dtype)
    return counts.view_as(x)


@register_corruption("gaussian_noise", "noise")
def gaussian_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    return x + _GAUSSIAN[severity - 1] * randn(gen, tuple(x.shape), x)


@register_corruption("shot_noise", "noise")
def shot_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """Poisson(x * c) / c per value, drawn by inversion of one uniform per value (`poisson_counts`): the same
    uniforms at every severity under one seed, and several times faster than torch.poisson on a CPU."""
    c = _SHOT[severity - 1]
    return poisson_counts(x, c, rand(gen, tuple(x.shape), x)).div_(c)


@register_corruption("impulse_noise", "noise")
def impulse_noise(x: torch.Tensor, severity: int, gen: torch.Generator) -> torch.Tensor:
    """skimage's 's&p' mode: each value is replaced with probability `amount`, half by 0 and half by 1."""
    hit = rand(gen, tuple(x.shape), x) < _IMPULSE[severity - 1]
    salt = (rand(gen, tuple(x.shape), x) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)
