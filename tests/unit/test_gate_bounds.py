"""The gate's non-inferiority bound (Tango's score bound on a paired drop) against an independent reference: the
constrained maximum likelihood found numerically (not the closed form), the score inverted by Brent's method (not
bisection); its coverage by exact enumeration of every outcome; and the sample sizes it plans."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import multinomial, norm

from editaudit.contracts.paired import drop_upper_bound, samples_needed


def reference_bound(b: int, c: int, n: int, alpha: float = 0.05) -> float:
    """Upper bound from first principles: for each candidate drop d0, maximise the multinomial likelihood of
    (lost=b, gained=c, same=n-b-c) over the gained-cell probability q subject to lost - gained = d0, plug it into
    the score statistic, and find where it crosses -z with Brent's method."""
    z = norm.ppf(1 - alpha)

    def q_hat(d0):
        lo, hi = max(0.0, -d0) + 1e-12, (1 - d0) / 2 - 1e-12  # lost = q + d0 >= 0, lost + gained <= 1
        if hi <= lo:
            return max(lo, 0.0)

        def nll(q):
            p_lost, p_gained = q + d0, q
            same = 1 - p_lost - p_gained
            terms = [(b, p_lost), (c, p_gained), (n - b - c, same)]
            return -sum(k * math.log(max(p, 1e-300)) for k, p in terms if k > 0)

        return minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x

    def f(d0):
        var = n * (2 * q_hat(d0) + d0 * (1 - d0))
        return (b - c - n * d0) / math.sqrt(var) + z

    d_hat = (b - c) / n
    if f(1 - 1e-9) >= 0:
        return 1.0
    return brentq(f, d_hat, 1 - 1e-9, xtol=1e-12)


EDGES = [
    (0, 0, 1), (1, 0, 1), (0, 1, 1),  # n = 1
    (0, 0, 30), (0, 0, 450),  # no discordant pair
    (50, 50, 100), (100, 0, 100), (0, 100, 100),  # every pair discordant
    (0, 7, 20),  # baseline at 0: every input wrong before, so nothing can be lost
    (9, 0, 20),  # baseline at 1: every input right before, so nothing can be gained
    (3, 0, 30), (15, 5, 1000), (6, 16, 161), (60, 10, 1000),
]


@pytest.mark.parametrize("b, c, n", EDGES)
def test_bound_matches_the_reference(b, c, n):
    ours, ref = drop_upper_bound(b, c, n), reference_bound(b, c, n)
    assert ours == pytest.approx(ref, abs=2e-6), (ours, ref)
    assert (b - c) / n <= ours <= 1.0


def test_without_discordant_pairs_the_bound_is_z2_over_n_plus_z2():
    z2 = norm.ppf(0.95) ** 2
    for n in (1, 10, 268, 10_000):
        assert drop_upper_bound(0, 0, n) == pytest.approx(z2 / (n + z2), rel=1e-9)


def test_no_drop_can_be_excluded_beyond_one():
    assert drop_upper_bound(1, 0, 1) == 1.0 and drop_upper_bound(100, 0, 100) == 1.0


@pytest.mark.parametrize("n, p_lost, p_gained", [(30, 0.05, 0.02), (30, 0.0, 0.0), (60, 0.1, 0.1), (40, 0.2, 0.0)])
def test_coverage_by_exact_enumeration(n, p_lost, p_gained):
    """P(bound >= true drop) over every possible outcome, weighted by its exact probability: at least the nominal
    95% less a little (score bounds are approximate), and never the 50% a point estimate would give."""
    true_drop = p_lost - p_gained
    coverage = 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            prob = multinomial.pmf([b, c, n - b - c], n, [p_lost, p_gained, 1 - p_lost - p_gained])
            if prob > 0 and drop_upper_bound(b, c, n) >= true_drop - 1e-12:
                coverage += prob
    assert coverage >= 0.93, coverage


def test_sample_size_planning():
    assert samples_needed(0, 0, 30, 0.01) == 268  # z^2 (1 - m) / m = 267.8
    assert drop_upper_bound(0, 0, 268) <= 0.01 < drop_upper_bound(0, 0, 267)
    m = samples_needed(3, 2, 450, 0.01)
    assert drop_upper_bound(3 * m / 450, 2 * m / 450, m) <= 0.01 \
        < drop_upper_bound(3 * (m - 1) / 450, 2 * (m - 1) / 450, m - 1)
    assert samples_needed(3, 0, 30, 0.03) is None, "an observed drop of 10 points never shows a 3-point margin"
    assert samples_needed(0, 0, 500, 0.01) == 500, "already enough"


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="n = 0"):
        drop_upper_bound(0, 0, 0)
    with pytest.raises(ValueError, match="b \\+ c <= n"):
        drop_upper_bound(3, 3, 5)
    assert np.isfinite(drop_upper_bound(0, 0, 10**9))
