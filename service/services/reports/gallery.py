"""The images an edit broke and fixed, per condition, and the per-class changes, from the audit's per-sample results
(the outcomes file every statistic was computed from, and the inputs it kept: the first flipped ones per condition
and direction). What a reviewer looks at before believing a number: which inputs, which classes, which mistakes."""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from editaudit.contracts import metrics as M
from editaudit.contracts.formats import samples as samples_file

MAX_CONDITIONS = 12  # clean, each attack, then the corruption cells the edit broke most
THUMBS = 8  # per condition and direction
CONFUSIONS = 3  # per class: the (true -> predicted) pairs whose counts changed most
CLASS_ROWS = 30  # the classes that lost most, then those that gained most (a 1000-class model has 1000 rows)
NAME_CHARS = 60  # a class name as shown (a spec may hold any text: the page's size must not follow it)


@dataclass(frozen=True)
class Thumb:
    index: int
    label: str
    baseline: str
    candidate: str
    src: str | None  # data: URI of the input the candidate saw; None when the audit did not keep it


@dataclass(frozen=True)
class ConditionGallery:
    split: str
    condition: str
    n: int
    broken: int
    fixed: int
    broken_thumbs: list[Thumb]
    fixed_thumbs: list[Thumb]

    @property
    def title(self) -> str:
        return f"{self.split} · {self.condition}"


@dataclass(frozen=True)
class ClassChange:
    label: int
    name: str
    n: int
    baseline: float
    candidate: float
    confusions: list[tuple[str, int, int]]  # (predicted class, count before, count after)

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


@dataclass
class Gallery:
    conditions: list[ConditionGallery]
    classes: list[ClassChange]
    classes_of: str  # the (split, condition) the class table is computed on
    more_conditions: int = 0
    more_classes: int = 0
    missing: list[str] = field(default_factory=list)


def class_name(names: list[str] | None, label: int) -> str:
    name = str(names[label]) if names and 0 <= label < len(names) else str(label)
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…"


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _order(cond: str, broken: int) -> tuple:
    kind = 0 if cond == M.CLEAN else 1 if cond.startswith("adv.") else 2
    return (kind, -broken if kind == 2 else 0, cond)


def build(outcomes: pa.Table, images: pa.Table | None, names: list[str] | None) -> Gallery:
    """`outcomes`: the audit's per-sample file; `images`: its kept inputs (None: the audit kept none)."""
    kept: dict[tuple[str, str, int], bytes] = {}
    if images is not None:
        cols = [images.column(c).to_pylist() for c in ("split", "condition", "index", "png")]
        kept = {(s, c, i): png for s, c, i, png in zip(*cols, strict=True)}
    galleries, classes, classes_of = [], [], ""
    for b in samples_file.blocks(outcomes):
        right_b, right_c = b.baseline == b.label, b.candidate == b.label
        broken_at, fixed_at = np.flatnonzero(right_b & ~right_c), np.flatnonzero(~right_b & right_c)
        thumbs = {d: [Thumb(int(b.index[p]), class_name(names, int(b.label[p])),
                            class_name(names, int(b.baseline[p])), class_name(names, int(b.candidate[p])),
                            _uri(kept[key]) if (key := (b.split, b.condition, int(b.index[p]))) in kept else None)
                      for p in at[:THUMBS]] for d, at in (("broken", broken_at), ("fixed", fixed_at))}
        if len(broken_at) or len(fixed_at):
            galleries.append(ConditionGallery(b.split, b.condition, len(b.label), len(broken_at), len(fixed_at),
                                              thumbs["broken"], thumbs["fixed"]))
        if b.condition == M.CLEAN and (not classes_of or b.split == "test"):
            classes, classes_of = per_class(b.label, b.baseline, b.candidate, names), f"{b.split} · clean"
    galleries.sort(key=lambda g: (g.split != "test", *_order(g.condition, g.broken)))
    missing = [] if images is not None and len(images) else [
        "the audit kept no inputs (audit_keep_images is 0, or nothing flipped): predictions only"]
    if len(classes) > CLASS_ROWS:  # the biggest losses and the biggest gains; the rest are counted
        half = CLASS_ROWS // 2
        shown, more = classes[:half] + classes[-half:], len(classes) - CLASS_ROWS
    else:
        shown, more = classes, 0
    return Gallery(galleries[:MAX_CONDITIONS], shown, classes_of, max(0, len(galleries) - MAX_CONDITIONS), more,
                   missing)


def per_class(label: np.ndarray, base: np.ndarray, cand: np.ndarray, names: list[str] | None) -> list[ClassChange]:
    """Accuracy per true class before and after, and the mistakes whose counts moved most; biggest losses first."""
    out = []
    for k in np.unique(label):
        mask = label == k
        before, after = Counter(base[mask & (base != k)].tolist()), Counter(cand[mask & (cand != k)].tolist())
        moved = sorted(set(before) | set(after), key=lambda p: (-abs(after[p] - before[p]), p))
        out.append(ClassChange(int(k), class_name(names, int(k)), int(mask.sum()), float((base[mask] == k).mean()),
                               float((cand[mask] == k).mean()),
                               [(class_name(names, p), before[p], after[p]) for p in moved[:CONFUSIONS]
                                if after[p] != before[p]]))
    return sorted(out, key=lambda c: (c.delta, c.label))
