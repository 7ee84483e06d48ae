"""Per-sample outcomes, and every statistic of an audit computed from them (no torch).

An `Evaluation` is one model's predictions per condition (clean, each attack, each corruption cell) for a run of
consecutive samples of each split: a whole audit, or one shard's part of it (`offsets`). `merge` puts shards back
together in sample order, whatever order they finished in. `compare` turns the baseline's and the candidate's
outcomes into the metrics, intervals and deltas of editaudit.contracts.metrics. Sums over 0/1 outcomes are exact,
so the statistics depend only on the outcomes: a sharded audit gives the numbers of an unsharded one, bit for bit.

`to_blocks` / `from_blocks` convert a pair of evaluations to and from the per-sample Parquet file
(editaudit.contracts.formats.samples), which is what the job computes the stored result from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from editaudit.contracts import metrics as M
from editaudit.contracts.audit import CORRUPTION_NAMES
from editaudit.contracts.formats.samples import Block
from editaudit.worker.ml.audit.stats import (
    aggregate_accuracy_delta,
    newcombe_difference,
    paired_accuracy_delta,
    wilson,
)

PACK_FORMAT = "editaudit-evaluations/1"


@dataclass
class Evaluation:
    """One model's outcomes. `preds`: condition metric (`<split>.accuracy`, `<split>.adv.<id>.accuracy`,
    `<split>.corruption.<type>.<severity>.accuracy`) -> predicted class per sample; `labels`: split -> the labels
    (edit targets for edit sets); `offsets`: split -> the position of the first sample held here; `curves`:
    `<split>.adv.<id>` -> {"eps": radii in run order, "correct": right answers per radius}."""

    preds: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)

    def correct(self, name: str) -> list[bool]:
        split = M.parse(name).split  # type: ignore[union-attr]  # names come from editaudit.contracts.metrics
        return [p == y for p, y in zip(self.preds[name], self.labels[split], strict=True)]

    def correctness(self) -> dict[str, list[bool]]:
        """Every per-sample accuracy, and the corruption aggregates as concatenated outcomes (paired statistics
        then treat them like any other accuracy, with the image as the unit: stats.aggregate_accuracy_delta)."""
        out = {name: self.correct(name) for name in self.preds}
        for split in self.labels:
            cells = sorted((c for n in out if (c := M.corruption_cell(n, split))), key=_cell_order)
            if not cells:
                continue
            cell = {(n, s): out[M.corruption_accuracy(split, n, s)] for n, s in cells}
            names, sevs = list(dict.fromkeys(n for n, _ in cells)), sorted({s for _, s in cells})
            for n in names:
                out[M.corruption_accuracy(split, n, M.MEAN)] = [v for s in sevs for v in cell[n, s]]
            for s in sevs:
                out[M.corruption_accuracy(split, M.MEAN, s)] = [v for n in names for v in cell[n, s]]
            out[M.corruption_accuracy(split)] = [v for n in names for s in sevs for v in cell[n, s]]
        return out


def pack(parts: dict[str, Evaluation]) -> bytes:
    """Named evaluations as one safetensors file of int64 / uint8 arrays + JSON metadata: a shard's outcomes, the
    baseline cache."""
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    for role, ev in parts.items():
        tensors |= {f"{role}/pred/{k}": np.asarray(v, dtype=np.int64) for k, v in ev.preds.items()}
        tensors |= {f"{role}/label/{k}": np.asarray(v, dtype=np.int64) for k, v in ev.labels.items()}
        meta[role] = {"offsets": ev.offsets, "curves": ev.curves, "durations_s": ev.durations_s}
    return st_save(tensors, metadata={"format": PACK_FORMAT, "meta": json.dumps(meta)})


def unpack(data: bytes) -> dict[str, Evaluation]:
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"not an {PACK_FORMAT} file")
    out = {role: Evaluation(**m) for role, m in json.loads(meta["meta"]).items()}
    for name, arr in st_load(data).items():
        role, kind, rest = name.split("/", 2)
        ev = out[role]
        if kind == "pred":
            ev.preds[rest] = arr.tolist()
        elif kind == "label":
            ev.labels[rest] = arr.tolist()
    return out


def _cell_order(cell: tuple[str, int]) -> tuple[int, str, int]:
    name, sev = cell
    return (CORRUPTION_NAMES.index(name) if name in CORRUPTION_NAMES else len(CORRUPTION_NAMES), name, sev)


def merge(parts: Iterable[Evaluation]) -> Evaluation:
    """Shards' evaluations as one, in sample order (each split's parts must tile it without gaps)."""
    ordered = sorted(parts, key=lambda e: sorted(e.offsets.items()))
    out = Evaluation()
    for split in dict.fromkeys(s for e in ordered for s in e.labels):
        held = sorted((e for e in ordered if split in e.labels), key=lambda e: e.offsets[split])
        at = 0
        for e in held:
            if e.offsets[split] != at:
                raise ValueError(f"shards of split {split!r} do not tile it: a part starts at {e.offsets[split]}, "
                                 f"expected {at}")
            out.labels.setdefault(split, []).extend(e.labels[split])
            for name in (n for n in e.preds if M.parse(n).split == split):  # type: ignore[union-attr]
                out.preds.setdefault(name, []).extend(e.preds[name])
            for key, curve in ((k, c) for k, c in e.curves.items() if k.startswith(f"{split}.")):
                cur = out.curves.setdefault(key, {"eps": curve["eps"], "correct": [0] * len(curve["eps"])})
                cur["correct"] = [a + b for a, b in zip(cur["correct"], curve["correct"], strict=True)]
            at += len(e.labels[split])
        out.offsets[split] = 0
    for e in ordered:
        for k, v in e.durations_s.items():
            out.durations_s[k] = out.durations_s.get(k, 0.0) + v
    return out


def _mean(v: list[bool]) -> float:
    return sum(v) / len(v) if v else float("nan")


def compare(base: Evaluation, cand: Evaluation) -> dict:
    """The metrics, 95% intervals, deltas and eps curves of a candidate against its baseline on the same inputs."""
    metrics: dict = {"baseline": {}, "candidate": {}}
    intervals: dict = {"baseline": {}, "candidate": {}}  # 95% Wilson interval of each accuracy
    deltas: dict = {}
    bc, cc = base.correctness(), cand.correctness()
    edit_class = _edit_class(base.labels)
    for name, b in bc.items():
        c = cc[name]
        metrics["baseline"][name], metrics["candidate"][name] = _mean(b), _mean(c)
        intervals["baseline"][name], intervals["candidate"][name] = wilson(sum(b), len(b)), wilson(sum(c), len(c))
        parsed = M.parse(name)
        assert parsed is not None  # the evaluation names its metrics with editaudit.contracts.metrics
        deltas[name] = aggregate_accuracy_delta(b, c, len(base.labels[parsed.split])) if parsed.aggregate \
            else paired_accuracy_delta(b, c)
    for split in base.labels:  # drawdown (Sinitsin et al. 2020): accuracy lost by the edit, baseline - candidate
        d, name = deltas[M.accuracy(split)], M.drawdown(split)
        metrics["baseline"][name], metrics["candidate"][name] = 0.0, -d["value"]
        deltas[name] = {"value": -d["value"], "ci95": [-d["ci95"][1], -d["ci95"][0]], "p_value": d["p_value"]}
    for split in base.labels:
        bp, cp = base.preds[M.accuracy(split)], cand.preds[M.accuracy(split)]
        agree = sum(p == q for p, q in zip(bp, cp, strict=True))  # both models' predictions on the same inputs
        name = M.agreement(split)
        metrics["baseline"][name], metrics["candidate"][name] = 1.0, agree / len(bp)
        lo, hi = wilson(agree, len(bp))
        deltas[name] = {"value": agree / len(bp) - 1.0, "ci95": [lo - 1.0, hi - 1.0], "p_value": None}
        _corruption_errors(metrics, split)
        _shares(metrics, deltas, split, bp, cp, base.labels[split], edit_class)
    for name in list(bc):
        m = M.parse(name)
        if m is None or m.measure != "adv" or m.attack is None:
            continue
        clean = M.accuracy(m.split)
        rates = [_success_rate(c[clean], c[name]) for c in (bc, cc)]
        rate_name = M.adv_success_rate(m.split, m.attack)
        metrics["baseline"][rate_name], metrics["candidate"][rate_name] = (r[0] for r in rates)
        deltas[rate_name] = newcombe_difference(rates[1], rates[0])
    curves = {}
    for key, curve in base.curves.items():
        n = len(base.labels[M.parse(f"{key}.accuracy").split])  # type: ignore[union-attr]
        order = np.argsort(np.asarray(curve["eps"], dtype=float), kind="stable")
        curves[key] = {"eps": [curve["eps"][i] for i in order],
                       "baseline": [curve["correct"][i] / n for i in order],
                       "candidate": [cand.curves[key]["correct"][i] / n for i in order]}
    return {"metrics": metrics, "intervals": intervals, "deltas": deltas, "curves": curves}


def _top_share(preds: list[int]) -> float:
    """The share of inputs predicted as the most predicted class."""
    return int(max(np.bincount(np.asarray(preds, dtype=np.int64)))) / len(preds)


def _edit_class(labels: dict[str, list[int]]) -> int | None:
    """The edit's target class: the most common label of the edit split (None without one)."""
    edit = labels.get("edit")
    return int(np.bincount(np.asarray(edit, dtype=np.int64)).argmax()) if edit else None


def _shares(metrics: dict, deltas: dict, split: str, bp: list[int], cp: list[int], labels: list[int],
            edit_class: int | None) -> None:
    """top_class_share of one split; edit_class_share and collapse too, except on the edit split, which the edit
    is meant to move to its class. collapse counts wrong answers only: the rise of the share of inputs *wrongly*
    predicted as the candidate's most predicted class, or as the edit's class, whichever rose more (at least 0), so
    an edit that corrects a class the baseline under-predicted (its share rises, rightly) is not a collapse."""
    shares = {M.top_class_share(split): (_top_share(bp), _top_share(cp))}
    if split != "edit" and edit_class is not None:
        shares[M.edit_class_share(split)] = (bp.count(edit_class) / len(bp), cp.count(edit_class) / len(cp))
    for name, (b, c) in shares.items():
        metrics["baseline"][name], metrics["candidate"][name] = b, c
        deltas[name] = {"value": c - b, "ci95": None, "p_value": None}
    if split == "edit":
        return
    top = int(np.bincount(np.asarray(cp, dtype=np.int64)).argmax())
    rise = max(0.0, *(_wrongly(cp, labels, k) - _wrongly(bp, labels, k)
                      for k in {top, edit_class} if k is not None))
    name = M.collapse(split)
    metrics["baseline"][name], metrics["candidate"][name] = 0.0, rise
    deltas[name] = {"value": rise, "ci95": None, "p_value": None}


def _wrongly(preds: list[int], labels: list[int], k: int) -> float:
    """The share of inputs predicted as class k whose label is another class."""
    return sum(p == k and y != k for p, y in zip(preds, labels, strict=True)) / len(preds)


def _success_rate(clean: list[bool], robust: list[bool]) -> tuple[float | None, int, int]:
    """(rate, flipped, clean-correct): the share of clean-correct inputs the attack flips."""
    right = sum(clean)
    flipped = sum(1 for c, r in zip(clean, robust, strict=True) if c and not r)
    return (flipped / right if right else None), flipped, right


def _corruption_errors(metrics: dict, split: str) -> None:
    """CE of each type = sum over severities of the candidate's error / the baseline's; mCE = their mean."""
    cells: dict[str, list[str]] = {}  # type -> its per-severity accuracy names
    for name in metrics["baseline"]:
        cell = M.corruption_cell(name, split)
        if cell:
            cells.setdefault(cell[0], []).append(name)
    ces = []
    for n in sorted(cells, key=lambda n: _cell_order((n, 0))):
        err_b = sum(1 - metrics["baseline"][k] for k in sorted(cells[n]))
        err_c = sum(1 - metrics["candidate"][k] for k in sorted(cells[n]))
        if err_b == 0:  # no baseline error to compare against: CE is undefined, leave it out
            continue
        ce = err_c / err_b
        metrics["baseline"][M.corruption_ce(split, n)], metrics["candidate"][M.corruption_ce(split, n)] = 1.0, ce
        ces.append(ce)
    if ces:
        metrics["baseline"][M.corruption_ce(split)] = 1.0
        metrics["candidate"][M.corruption_ce(split)] = sum(ces) / len(ces)


COLLAPSE_JUMP = 0.10  # a rise of `collapse` (inputs wrongly predicted as one class) on the test split that the
                     # note calls a collapse; the default policy's rule on test.collapse states the same 0.1


def collapse_notes(metrics: dict, splits) -> list[str]:
    """A candidate whose wrong test predictions moved into one class (the most predicted, or the edit's target) by
    more than COLLAPSE_JUMP of the inputs: its robust accuracy can rise (a constant model cannot be attacked), so
    say so where a reader looks first."""
    notes = []
    for split in (s for s in splits if s == "test"):  # edit sets are one class by construction
        rise = metrics["candidate"].get(M.collapse(split))
        if rise is None or rise <= COLLAPSE_JUMP:
            continue
        notes.append(f"COLLAPSED: {rise:.0%} more of the candidate's {split} inputs are wrongly predicted as one class "
                     "(the most predicted or the edit's; edit_class_share and top_class_share say which); read "
                     f"robust accuracy with its success rate ({split}.adv.<id>.success_rate)")
    return notes


# -- the per-sample file ----------------------------------------------------------------------------------------------

def to_blocks(base: Evaluation, cand: Evaluation, ids: dict[str, list[int] | None]) -> list[Block]:
    """Both models' outcomes as the per-sample file's blocks; `ids[split]` maps positions to indices in the whole
    split (None: the identity)."""
    out = []
    for name in sorted(base.preds):  # one order whatever the shards or the cache: the same file, the same key
        split, cond = M.condition(name)  # type: ignore[misc]  # preds are keyed by condition metrics
        n = len(base.labels[split])
        index = np.asarray(ids.get(split) if ids.get(split) is not None else range(n), dtype=np.int64)
        out.append(Block(split, cond, index, np.asarray(base.labels[split]), np.asarray(base.preds[name]),
                         np.asarray(cand.preds[name])))
    return out


def from_blocks(blocks: Iterable[Block], like: tuple[Evaluation, Evaluation] | None = None
                ) -> tuple[Evaluation, Evaluation]:
    """(baseline, candidate) evaluations read back from the per-sample file. What is not per sample (eps curves,
    durations) comes from `like`, the merged evaluations the file was written from."""
    base, cand = (Evaluation(curves=dict(e.curves), durations_s=dict(e.durations_s)) for e in like or (
        Evaluation(), Evaluation()))
    for b in blocks:
        name = M.condition_metric(b.split, b.condition)
        if name is None:
            raise ValueError(f"unknown condition {b.condition!r} in the per-sample file")
        for ev, preds in ((base, b.baseline), (cand, b.candidate)):
            ev.labels.setdefault(b.split, b.label.tolist())
            ev.offsets[b.split] = 0
            ev.preds[name] = preds.tolist()
    return base, cand
