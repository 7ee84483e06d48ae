"""Paired statistics for candidate-vs-baseline accuracies on the same inputs (no torch).

- One metric (each input once): the delta's 95% interval is Tango's score interval (two one-sided 97.5% bounds from
  editaudit.contracts.paired, the bound the gate decides with): not degenerate without discordant pairs, inside
  [-1, 1], unlike the Wald interval; the p-value is exact McNemar.
- An aggregate over k conditions of the same images (corruption means): the k outcomes of one image are
  correlated, so the unit is the image: per-image mean differences, a paired t interval and t-test over images.
"""

from __future__ import annotations

import math

from scipy import stats as sps

from editaudit.contracts.paired import drop_upper_bound

Z95 = 1.959963984540054
SINGLE_METHOD = "Tango score interval, exact McNemar p"
AGGREGATE_METHOD = "per-image paired t over images (the conditions of one image count once)"


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


def _check_pairs(base: list, cand: list) -> int:
    if len(base) != len(cand):
        raise ValueError(f"paired outcomes need equal lengths; got {len(base)} baseline and {len(cand)} candidate")
    if not base:
        raise ValueError("no paired samples (n = 0): a delta needs at least one input")
    return len(base)


def discordant(base_correct: list[bool], cand_correct: list[bool]) -> tuple[int, int]:
    """(b, c): inputs the edit lost (right before, wrong after) and gained."""
    b = sum(1 for p, q in zip(base_correct, cand_correct, strict=True) if p and not q)
    c = sum(1 for p, q in zip(base_correct, cand_correct, strict=True) if q and not p)
    return b, c


def paired_accuracy_delta(base_correct: list[bool], cand_correct: list[bool]) -> dict:
    """candidate - baseline accuracy on the same inputs: Tango's 95% score interval and the exact McNemar p-value."""
    n = _check_pairs(base_correct, cand_correct)
    b, c = discordant(base_correct, cand_correct)
    ci = [-drop_upper_bound(b, c, n, 0.025), drop_upper_bound(c, b, n, 0.025)]
    return {"value": (c - b) / n, "ci95": ci, "p_value": mcnemar_exact(b, c), "n": n,
            "discordant": {"baseline_only": b, "candidate_only": c}, "method": SINGLE_METHOD}


def aggregate_accuracy_delta(base_correct: list[bool], cand_correct: list[bool], images: int) -> dict:
    """The same for an aggregate whose outcomes are k blocks (conditions) of the same `images` inputs, in order:
    the mean over the k conditions of each image is one paired observation."""
    n = _check_pairs(base_correct, cand_correct)
    if images <= 0 or n % images:
        raise ValueError(f"{n} outcomes are not whole blocks of {images} images")
    k = n // images
    diffs = [sum(int(cand_correct[j * images + i]) - int(base_correct[j * images + i]) for j in range(k)) / k
             for i in range(images)]
    mean = sum(diffs) / images
    b, c = discordant(base_correct, cand_correct)
    var = sum((d - mean) ** 2 for d in diffs) / (images - 1) if images > 1 else 0.0
    se = math.sqrt(var / images)
    if se > 0:
        half = sps.t.ppf(0.975, images - 1) * se
        p = float(2 * sps.t.sf(abs(mean) / se, images - 1))
    else:  # every image moved by the same amount: no spread to estimate; an exact statement about these images
        half, p = 0.0, 1.0 if mean == 0 else 0.0
    return {"value": mean, "ci95": [max(-1.0, mean - half), min(1.0, mean + half)], "p_value": p, "n": n,
            "images": images, "conditions": k, "discordant": {"baseline_only": b, "candidate_only": c},
            "method": AGGREGATE_METHOD}


def newcombe_difference(cand: tuple[float | None, int, int], base: tuple[float | None, int, int]) -> dict:
    """candidate - baseline of two proportions (rate, successes, trials) over different subsets of the inputs (an
    attack's success rate among each model's own clean-correct inputs): Newcombe's hybrid score interval from the
    two Wilson intervals (method 10 of Newcombe 1998). Treats the subsets as independent; no p-value."""
    (p1, k1, n1), (p2, k2, n2) = cand, base
    if p1 is None or p2 is None:
        return {"value": None, "ci95": None, "p_value": None, "method": "undefined: a model got no input right"}
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    ci = [d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)]
    return {"value": d, "ci95": ci, "p_value": None, "n": [n1, n2],
            "method": "Newcombe hybrid score (unpaired: each model's own clean-correct inputs)"}


def wilson(k: int, n: int) -> list[float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        raise ValueError("no samples (n = 0): a proportion needs at least one")
    p = k / n
    den = 1 + Z95**2 / n
    mid = (p + Z95**2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / den
    return [0.0 if k == 0 else max(0.0, mid - half), 1.0 if k == n else min(1.0, mid + half)]
