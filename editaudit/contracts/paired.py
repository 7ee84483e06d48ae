"""Paired comparisons of two classifiers on the same inputs: one-sided confidence bounds on a drop in accuracy, and
the sample size a margin needs. Shared by the audit (its intervals) and the gate (its decisions), so both mean the
same thing by a bound.

Baseline and candidate are scored on the same n inputs. Of those, b were right before and wrong after (lost) and
c wrong before and right after (gained); the drop in accuracy is d = (b - c) / n. Its one-sided upper (1 - alpha)
bound is Tango's score bound (Tango 1998, "Equivalence test and confidence interval for the difference in
proportions for the paired-sample design", Statistics in Medicine 17:891-908): the largest d0 that the score test

    T(d0) = (b - c - n d0) / sqrt(n (2 q(d0) + d0 (1 - d0)))

does not reject at level alpha (T(d0) >= -z_{1-alpha}), where q(d0) is the maximum-likelihood estimate of the
"gained" cell probability under the constraint drop = d0:

    q(d0) = (sqrt(B^2 - 4 A C) - B) / (2 A),  A = 2n,  B = -b - c + (2n - b + c) d0,  C = -c d0 (1 - d0).

Unlike the Wald interval it is not degenerate without discordant pairs (then the bound is z^2 / (n + z^2)), and it
stays inside [-1, 1]. A drop rule passes by non-inferiority when this bound is within the margin: "the data show
the candidate is at most `margin` worse", so a small audit cannot pass by being too small to detect anything.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_EPS = 1e-12


def z_one_sided(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha)


def _constrained_gain(b: float, c: float, n: float, d0: float) -> float:
    a, bb, cc = 2 * n, -b - c + (2 * n - b + c) * d0, -c * d0 * (1 - d0)
    return (math.sqrt(max(bb * bb - 4 * a * cc, 0.0)) - bb) / (2 * a)


def score(b: float, c: float, n: float, d0: float) -> float:
    """Tango's score statistic for H0: drop = d0 (positive when the observed drop is below d0... negative above)."""
    var = n * (2 * _constrained_gain(b, c, n, d0) + d0 * (1 - d0))
    num = b - c - n * d0
    if var <= 0:
        return math.inf if num > 0 else -math.inf if num < 0 else 0.0
    return num / math.sqrt(var)


def drop_upper_bound(b: float, c: float, n: float, alpha: float = 0.05) -> float:
    """The one-sided upper (1 - alpha) bound on the paired drop (b - c) / n. Counts may be fractional (sample-size
    planning scales them). n must be positive and b + c <= n."""
    if n <= 0:
        raise ValueError("a bound needs at least one paired sample (n = 0)")
    if b < 0 or c < 0 or b + c > n + 1e-9:
        raise ValueError(f"discordant counts must satisfy 0 <= b, c and b + c <= n; got b={b}, c={c}, n={n}")
    z = z_one_sided(alpha)
    lo, hi = (b - c) / n, 1.0  # T(observed) = 0 >= -z; T decreases in d0
    if lo >= 1.0 - _EPS:
        return 1.0
    if score(b, c, n, hi - _EPS) >= -z:
        return 1.0
    for _ in range(200):  # bisection to machine precision
        mid = (lo + hi) / 2
        if score(b, c, n, mid) >= -z:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return lo


def samples_needed(b: int, c: int, n: int, margin: float, alpha: float = 0.05) -> int | None:
    """The smallest sample size at which the same rates of lost and gained inputs (b/n, c/n) would show the drop is
    within `margin`; None when no size can (the observed drop is not below the margin)."""
    if n <= 0 or (b - c) / n >= margin:
        return None

    def shows(m: int) -> bool:
        return drop_upper_bound(b * m / n, c * m / n, m, alpha) <= margin

    if shows(n):
        return n
    lo, hi = n, 2 * n
    while not shows(hi):
        lo, hi = hi, hi * 2
        if hi > 10**12:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if shows(mid) else (mid, hi)
    return hi
