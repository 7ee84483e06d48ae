"""uint8 uploads stay uint8 in the worker ([N,H,W,C], a quarter of float32's memory) and are converted per batch
where batches are built: every consumer sees the float32 [B,C,H,W] in [0,1] a float upload of the same images
would give, so audits and edits do not depend on the upload's dtype."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.numpy import save as st_save

from editaudit.contracts.audit import AuditConfig
from editaudit.worker.ml.audit.runner import evaluate_model, subset
from editaudit.worker.ml.data import digits_arrays, load_bytes


def _twins():
    """The digits test split as a uint8 [N,H,W,C] upload and as the float32 upload of the very same images."""
    te = digits_arrays("test")
    u8 = np.round(te.x[:, 0] * 255).astype(np.uint8)[..., None]  # [N,8,8,1]
    as_u8 = load_bytes(st_save({"x": u8, "y": te.y}), "t.safetensors")
    as_f32 = load_bytes(st_save({"x": u8.transpose(0, 3, 1, 2).astype(np.float32) / 255, "y": te.y}),
                        "t.safetensors")
    return as_u8, as_f32


def test_uint8_is_kept_and_converted_per_batch():
    as_u8, as_f32 = _twins()
    assert as_u8.pixels.dtype == torch.uint8 and as_u8.pixels.shape[1:] == (8, 8, 1)
    assert torch.equal(as_u8.x, as_f32.x)
    assert torch.equal(as_u8.images(slice(3, 9)), as_f32.x[3:9])
    idx = np.array([5, 0, 7])
    taken = as_u8.take(idx, "t")
    assert taken.pixels.dtype == torch.uint8 and torch.equal(taken.x, as_f32.x[idx])


def test_an_audit_of_a_uint8_upload_equals_the_float_one(digits_wrapped):
    as_u8, as_f32 = _twins()
    cfg = AuditConfig(max_samples=200, batch_size=64)
    runs = []
    for ds in (as_u8, as_f32):
        splits, _ = subset({"test": ds}, cfg)
        assert splits["test"].pixels.dtype == ds.pixels.dtype, "subsets keep the stored dtype"
        runs.append(evaluate_model(digits_wrapped, splits, cfg, torch.device("cpu")))
    assert runs[0].preds == runs[1].preds and runs[0].correctness() == runs[1].correctness()
