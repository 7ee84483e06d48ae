"""Datasets as tensors: uploaded files (via the torch-free parser) and the built-in digits split."""

from __future__ import annotations

import numpy as np
import torch

from editaudit.contracts.datasets import BUILTIN_DATASETS
from editaudit.contracts.edits import holdout_size
from editaudit.contracts.formats import DatasetArrays, parse_dataset


def as_images(t: torch.Tensor) -> torch.Tensor:
    """float32 [B,C,H,W] in [0,1] from images as stored: float32 as is, uint8 [B,H,W,C] converted (/255)."""
    if t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
    return t


class TensorDataset:
    """Images and labels (with x_orig and mask for rewrite-style edits). Images are kept as they came: float32
    [N,C,H,W] in [0,1], or uint8 [N,H,W,C] as uploaded, a quarter of the memory. Code that walks a set in batches
    takes `images(sel)` (float32 [B,C,H,W], converted per batch); `x` converts the whole set, for small sets."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, x_orig: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, identity: str | None = None):
        self.pixels, self.y, self.orig_pixels, self.mask = x, y, x_orig, mask
        self.identity = identity  # what the data is (sha256, builtin@version) where known: caches key on it

    @property
    def x(self) -> torch.Tensor:
        return as_images(self.pixels)

    @property
    def x_orig(self) -> torch.Tensor | None:
        return None if self.orig_pixels is None else as_images(self.orig_pixels)

    def images(self, sel, device: torch.device | None = None) -> torch.Tensor:
        """The images at `sel` (a slice or indices) as float32 [B,C,H,W]; moved to `device` before converting."""
        batch = self.pixels[sel]
        return as_images(batch if device is None else batch.to(device, non_blocking=True))

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def take(self, idx: np.ndarray, tag: str) -> TensorDataset:
        """The samples at `idx`, stored as they are; the identity (if known) names the selection by `tag`."""
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        pick = lambda v: None if v is None else v[t]  # noqa: E731
        return TensorDataset(self.pixels[t], self.y[t], pick(self.orig_pixels), pick(self.mask),
                             None if self.identity is None else f"{self.identity}[{tag}]")

    @classmethod
    def from_arrays(cls, a: DatasetArrays) -> TensorDataset:
        opt = lambda v: None if v is None else torch.from_numpy(np.ascontiguousarray(v))  # noqa: E731
        return cls(torch.from_numpy(np.ascontiguousarray(a.x)), torch.from_numpy(a.y), opt(a.x_orig), opt(a.mask))


def stratified_indices(y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded class-stratified subset of `max_samples` (sorted, so batches stay ordered)."""
    n = len(y)
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / n * max_samples).astype(int)
    for i in np.argsort(-(counts / n * max_samples - quota))[: max_samples - quota.sum()]:
        quota[i] += 1
    picked = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def hold_out(ds: TensorDataset, seed: int) -> tuple[TensorDataset, TensorDataset, dict]:
    """(the rest, the held-out part, a record): a seeded, class-stratified part of `ds` (`holdout_size`) for an
    edit's own use, e.g. its locality term; the audit scores only the rest."""
    k = holdout_size(len(ds))
    if not k:
        raise ValueError(f"the test split has {len(ds)} images: too few to hold out a locality set; name one")
    held = stratified_indices(ds.y.numpy(), k, seed)
    rest = np.setdiff1d(np.arange(len(ds)), held)
    record = {"n": int(k), "of": len(ds), "seed": seed, "ids": held.tolist()}
    return ds.take(rest, f"rest:{seed}:{k}"), ds.take(held, f"held:{seed}:{k}"), record


def digits_arrays(split: str) -> DatasetArrays:
    """sklearn's bundled digits, scaled to [0,1]; sample i is in `test` when i % 4 == 0, else in `train`."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 4 == 0
    sel = test if split == "test" else ~test
    return DatasetArrays(x=np.ascontiguousarray(x[sel]), y=y[sel])


_BUILTINS = {"builtin:digits-train": lambda: digits_arrays("train"),
             "builtin:digits-test": lambda: digits_arrays("test")}
assert set(_BUILTINS) == set(BUILTIN_DATASETS)


def load_builtin(name: str) -> TensorDataset:
    return TensorDataset.from_arrays(_BUILTINS[name]())


def load_bytes(data: bytes, filename: str = "") -> TensorDataset:
    """An uploaded dataset, checked as the API checked it; uint8 images stay uint8 until a batch is built."""
    return TensorDataset.from_arrays(parse_dataset(data, filename, keep_uint8=True))


def load_file(path, filename: str = "") -> TensorDataset:
    """As load_bytes, from a file (read in place, not copied into memory first)."""
    return TensorDataset.from_arrays(parse_dataset(path, filename, keep_uint8=True))
