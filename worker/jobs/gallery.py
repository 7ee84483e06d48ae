"""The inputs an audit keeps: for each condition, the first `k` samples (by position) the edit broke and the first
`k` it fixed, as PNG in the images file beside the per-sample outcomes (editaudit.contracts.formats.samples). Shards
keep their own first `k`; the global first `k` are among them, so the file does not depend on the shard count."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from editaudit.contracts import metrics as M
from editaudit.contracts.formats import samples as samples_file
from editaudit.worker.ml.audit.outcomes import Evaluation


def png(image: np.ndarray) -> bytes:
    """uint8 HWC (1 or 3 channels) as PNG."""
    arr = image[..., 0] if image.shape[-1] == 1 else image
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(out, format="PNG", optimize=False)
    return out.getvalue()


def kept_images(base: Evaluation, cand: Evaluation, ids: dict[str, list[int] | None], k: int) -> bytes:
    rows = []
    for name in sorted(cand.kept):
        split, cond = M.condition(name)  # type: ignore[misc]  # kept inputs are keyed by condition metrics
        labels, b, c = base.labels[split], base.preds[name], cand.preds[name]
        index = ids.get(split)
        taken = {"broken": 0, "fixed": 0}
        for pos in sorted(cand.kept[name]):
            right_before, right_after = b[pos] == labels[pos], c[pos] == labels[pos]
            if right_before == right_after:
                continue
            direction = "broken" if right_before else "fixed"
            if taken[direction] >= k:
                continue
            taken[direction] += 1
            rows.append({"split": split, "condition": cond, "index": index[pos] if index is not None else pos,
                         "position": pos, "direction": direction, "png": png(cand.kept[name][pos])})
    return samples_file.write_images(rows)
