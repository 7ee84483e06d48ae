"""The inputs an audit keeps: for each condition, the first `k` samples (by position) the edit broke and the first
`k` it fixed, as PNG in the images file beside the per-sample outcomes (editaudit.contracts.formats.samples). They
are chosen from the merged outcomes and made again by the coordinator from the same batch and seed (runner.
render_inputs), so no shard carries images and the file does not depend on the shard count."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from editaudit.contracts import metrics as M
from editaudit.contracts.formats import samples as samples_file
from editaudit.worker.ml.audit.outcomes import Evaluation

Render = Callable[[dict[str, list[int]]], dict[str, dict[int, np.ndarray]]]


def png(image: np.ndarray) -> bytes:
    """uint8 HWC (1 or 3 channels) as PNG."""
    arr = image[..., 0] if image.shape[-1] == 1 else image
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(out, format="PNG")
    return out.getvalue()


def flipped(base: Evaluation, cand: Evaluation, k: int) -> dict[str, list[tuple[int, str]]]:
    """Per condition metric: (position, broken | fixed) of the first `k` samples each way."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name in sorted(cand.preds):
        labels = base.labels[M.condition(name)[0]]  # type: ignore[index]  # preds are keyed by condition metrics
        taken = {"broken": 0, "fixed": 0}
        for pos, (b, c, y) in enumerate(zip(base.preds[name], cand.preds[name], labels, strict=True)):
            if (b == y) == (c == y):
                continue
            direction = "broken" if b == y else "fixed"
            if taken[direction] < k:
                taken[direction] += 1
                out.setdefault(name, []).append((pos, direction))
            if min(taken.values()) >= k:
                break
    return out


def kept_images(base: Evaluation, cand: Evaluation, ids: dict[str, list[int] | None], k: int,
                render: Render) -> bytes:
    """The images file: `render` makes the candidate's inputs at the chosen positions."""
    chosen = flipped(base, cand, k)
    images = render({name: [p for p, _ in picks] for name, picks in chosen.items()}) if chosen else {}
    rows = []
    for name, picks in chosen.items():
        split, cond = M.condition(name)  # type: ignore[misc]
        index = ids.get(split)
        rows += [{"split": split, "condition": cond, "index": index[pos] if index is not None else pos,
                  "position": pos, "direction": direction, "png": png(images[name][pos])} for pos, direction in picks]
    return samples_file.write_images(rows)
