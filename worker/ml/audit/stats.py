"""Paired statistics for candidate-vs-baseline accuracies on the same inputs (pure Python, no torch)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b = baseline right & candidate wrong, c = the reverse."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P(X <= k), X ~ Bin(n, 1/2), summed in log space: 2**n overflows a float beyond n = 1023 discordant pairs
    log_terms, log_c = [], -n * math.log(2.0)
    for i in range(k + 1):
        log_terms.append(log_c)
        log_c += math.log(n - i) - math.log(i + 1)
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def paired_accuracy_delta(base_correct: list[bool], cand_correct: list[bool]) -> dict:
    """Delta of accuracy with a 95% Wald interval for paired proportions and the exact McNemar p-value."""
    n = len(base_correct)
    b = sum(1 for p, q in zip(base_correct, cand_correct) if p and not q)
    c = sum(1 for p, q in zip(base_correct, cand_correct) if q and not p)
    value = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    ci = [max(-1.0, value - Z95 * se), min(1.0, value + Z95 * se)]  # a difference of proportions lies in [-1, 1]
    return {"value": value, "ci95": ci, "p_value": mcnemar_exact(b, c),
            "n": n, "discordant": {"baseline_only": b, "candidate_only": c}}


def wilson(k: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + Z95**2 / n
    mid = (p + Z95**2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / den
    return [0.0 if k == 0 else max(0.0, mid - half), 1.0 if k == n else min(1.0, mid + half)]
