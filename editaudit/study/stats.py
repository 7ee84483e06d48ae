"""The few statistics a study needs, without scipy: means with a 95% t interval over seeds, the audit's own 95% CI
when there is one seed, and the number formats the summary's evidence strings and the reports share."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

# two-sided 95% quantiles of Student's t, df 1..30 (a seed list holds at most 10; pooled runs may hold more)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
T_INTERVAL = "t95 over seeds"
AUDIT_CI = "audit ci95"
AUDIT_FLOOR = "audit ci95 (wider than t95 over seeds)"
AUDIT_FLOOR_PREFIX = "audit ci95 ("
FLOOR_MARK = "†"  # the interval is the runs' audit CI, wider than the spread over seeds gave
MINUS = "\u2212"

Stat = dict[str, Any]  # {"mean", "lo", "hi", "n", "interval"}: JSON-safe


def t975(df: int) -> float:
    """Past df 30 the quantile is within 0.1% of 1.96 + 2.5/df (t(40) = 2.021, t(120) = 1.980)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return T975[df - 1] if df <= len(T975) else 1.96 + 2.5 / df


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df, in closed form (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, sin, cos = math.cos(theta) ** 2, math.sin(theta), math.cos(theta)
    if df % 2:
        term, total = cos, cos if df > 1 else 0.0
        for k in range(3, df - 1, 2):  # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...), up to cos^(df-2)
            term *= c2 * (k - 1) / k
            total += term
        inside = 2 / math.pi * (theta + sin * total)
    else:
        term = total = 1.0
        for k in range(2, df - 1, 2):  # 1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ..., up to cos^(df-2)
            term *= c2 * (k - 1) / k
            total += term
        inside = sin * total
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p (bisection on t_cdf; p in (0.5, 1)): the quantiles a multiple-comparison
    correction needs, which the 95% table does not hold."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def finite(v: Any) -> float | None:
    """A number the summary may carry: None for None, NaN, infinities and anything not a number (JSON-safe)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def ci(v: Any) -> tuple[float, float] | None:
    """An audit's [lo, hi] when both bounds are numbers."""
    if not isinstance(v, list | tuple) or len(v) != 2:
        return None
    lo, hi = finite(v[0]), finite(v[1])
    return None if lo is None or hi is None else (lo, hi)


def clipped(s: Stat, lo: float = 0.0, hi: float = 1.0) -> Stat:
    """An interval of a share or an accuracy kept inside [lo, hi] (a t interval near 1 reaches past it)."""
    if s.get("lo") is None or s.get("hi") is None:
        return s
    return {**s, "lo": max(lo, s["lo"]), "hi": min(hi, s["hi"])}


def stat(values: Sequence[float | None], cis: Sequence[tuple[float, float] | None] = ()) -> Stat:
    """Mean and 95% interval over seeds: Student's t with n - 1 df for n >= 2; for one seed that run's audit CI
    (clustered by image) when it has one; no interval otherwise. None values (a metric a run lacks) are left out."""
    bounds = list(cis) or [None] * len(values)
    pairs = [(v, c) for v, c in zip(values, bounds, strict=True) if v is not None]
    n = len(pairs)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "interval": None}
    vals = [v for v, _ in pairs]
    mean = statistics.fmean(vals)
    if n == 1:
        c = pairs[0][1]
        return {"mean": mean, "lo": c[0] if c else None, "hi": c[1] if c else None, "n": 1,
                "interval": AUDIT_CI if c else None}
    half = t975(n - 1) * statistics.stdev(vals) / math.sqrt(n)
    # seeds that agree (a closed-form edit, an attack without random start) leave the t band at ~0 width, though
    # each run measured its delta on a finite test set: the interval is never narrower than the runs' own (mean
    # half-width of their audit CIs, clustered by image), so agreement across seeds is not read as certainty
    audit = [(c[1] - c[0]) / 2 for _, c in pairs if c]
    if audit and statistics.fmean(audit) > half:
        half = statistics.fmean(audit)
        return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "interval": AUDIT_FLOOR}
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "interval": T_INTERVAL}


def mean_delta(ds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several deltas of one seed as one {value, ci95}: their mean, and the mean of their audit CIs when every one
    has a CI (deltas of one seed share its baseline and audit draw: they are averaged, not treated as samples)."""
    bounds = [d["ci95"] for d in ds if d.get("ci95")]
    return {"value": statistics.fmean(d["value"] for d in ds),
            "ci95": [statistics.fmean(b[0] for b in bounds), statistics.fmean(b[1] for b in bounds)]
            if len(bounds) == len(ds) else None}


def delta_stat(cells: Iterable[dict[str, Any] | None]) -> Stat:
    """`stat` over {value, ci95} cells (one per seed; None: a seed without one)."""
    present = [c for c in cells if c is not None]
    return stat([c["value"] for c in present], [tuple(c["ci95"]) if c["ci95"] else None for c in present])


def side(s: Stat) -> str | None:
    """Where an interval lies relative to 0: "below", "above", "straddles"; None without an interval."""
    if s.get("lo") is None or s.get("hi") is None:
        return None
    return "below" if s["hi"] < 0 else "above" if s["lo"] > 0 else "straddles"


def num(v: float | None, signed: bool = False, digits: int = 3) -> str:
    """`−0.155` (a true minus sign), `+0.020` when signed, `—` for None."""
    if v is None:
        return "—"
    text = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    return text.replace("-", MINUS)


def stat_text(s: Stat | None, signed: bool = False) -> str:
    """`−0.155 [−0.210, −0.100]`; the mean alone without an interval; `—` without a mean."""
    if not s or s.get("mean") is None:
        return "—"
    if s.get("lo") is None or s.get("hi") is None:
        return num(s["mean"], signed)
    mark = FLOOR_MARK if str(s.get("interval") or "").startswith(AUDIT_FLOOR_PREFIX) else ""
    return f"{num(s['mean'], signed)} [{num(s['lo'], signed)}, {num(s['hi'], signed)}]{mark}"
