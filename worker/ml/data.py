"""Datasets as tensors: uploaded files (via the torch-free parser), sharded image-folder imports (streamed from
their shard files, editaudit.worker.ml.sharded) and the built-in digits split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from editaudit.contracts.datasets import BUILTIN_DATASETS
from editaudit.contracts.edits import holdout_size
from editaudit.contracts.formats import DatasetArrays, parse_dataset
from editaudit.contracts.formats.shards import center_crop_box, preprocessed_size
from editaudit.worker.ml.sharded import ShardedImages, load_sharded

__all__ = ["BatchPreprocess", "Pixels", "TensorDataset", "as_images", "digits_arrays", "hold_out", "load_builtin",
           "load_bytes", "load_file", "load_sharded", "stratified_indices"]

Pixels = torch.Tensor | ShardedImages  # images as stored: in memory, or read from shard files per batch


def as_images(t: torch.Tensor) -> torch.Tensor:
    """float32 [B,C,H,W] in [0,1] from images as stored: float32 as is, uint8 [B,H,W,C] converted (/255)."""
    if t.dtype == torch.uint8:
        return t.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
    return t


def _stored_hw(pixels: Pixels) -> tuple[int, int]:
    """(H, W) of images as stored: uint8 [N,H,W,C] or float32 [N,C,H,W]."""
    shape = pixels.shape
    return (int(shape[1]), int(shape[2])) if pixels.dtype == torch.uint8 else (int(shape[2]), int(shape[3]))


@dataclass(frozen=True)
class BatchPreprocess:
    """A model's preprocessing, applied per batch to float [B,C,H,W] images in [0,1] on the batch's device: resize
    (the shorter side, antialiased as torchvision's Resize on tensors, clamped to [0,1]) to `resize` ((h, w) as the
    stored size gives it), then centre-crop to `crop` (torchvision's CenterCrop)."""

    resize: tuple[int, int] | None
    crop: tuple[int, int]
    interpolation: str = "bilinear"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            mode = self.interpolation
            smooth = mode in ("bilinear", "bicubic")
            x = F.interpolate(x, size=self.resize, mode=mode, antialias=smooth,
                              align_corners=False if smooth else None).clamp_(0, 1)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if (h, w) != self.crop:
            top, left = center_crop_box(h, w, *self.crop)
            x = x[..., top : top + self.crop[0], left : left + self.crop[1]].contiguous()
        return x

    @property
    def tag(self) -> str:
        return f"pre:{self.resize}/{self.interpolation}/{self.crop}"


class TensorDataset:
    """Images and labels (with x_orig and mask for rewrite-style edits). Images are kept as they came: float32
    [N,C,H,W] in [0,1], uint8 [N,H,W,C] as uploaded (a quarter of the memory), or, for sharded imports, a
    ShardedImages that reads a batch's rows from the shard files when asked (y and mask are in memory). Code that
    walks a set in batches takes `images(sel)` (float32 [B,C,H,W], converted per batch, with the model's
    preprocessing where `with_preprocess` set one); `x` converts the whole set, for small sets."""

    def __init__(self, x: Pixels, y: torch.Tensor, x_orig: Pixels | None = None,
                 mask: torch.Tensor | None = None, identity: str | None = None,
                 preprocess: BatchPreprocess | None = None):
        self.pixels, self.y, self.orig_pixels, self.mask = x, y, x_orig, mask
        self.identity = identity  # what the data is (sha256, builtin@version) where known: caches key on it
        self.preprocess = preprocess  # applied to every batch (and to x / x_orig); None: images as stored

    def _convert(self, batch: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        out = as_images(batch if device is None else batch.to(device, non_blocking=True))
        return out if self.preprocess is None else self.preprocess(out)

    @staticmethod
    def _all(pixels: Pixels) -> torch.Tensor:
        return pixels if isinstance(pixels, torch.Tensor) else pixels[:]

    @property
    def x(self) -> torch.Tensor:
        """The whole set as float32 [N,C,H,W] (read and converted at once: for small sets)."""
        return self._convert(self._all(self.pixels))

    @property
    def x_orig(self) -> torch.Tensor | None:
        return None if self.orig_pixels is None else self._convert(self._all(self.orig_pixels))

    def images(self, sel, device: torch.device | None = None) -> torch.Tensor:
        """The images at `sel` (a slice or indices) as float32 [B,C,H,W]; moved to `device` before converting."""
        return self._convert(self.pixels[sel], device)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the images as stored (before any preprocessing)."""
        return _stored_hw(self.pixels)

    @property
    def stored_shape(self) -> list[int]:
        """[C, H, W] of the images as stored (before any preprocessing)."""
        shape = self.pixels.shape
        c = int(shape[3]) if self.pixels.dtype == torch.uint8 else int(shape[1])
        return [c, *self.image_hw]

    @property
    def keep_alive(self) -> Any:
        """What must live as long as shard-backed images are read (their files' temporary folder), held by the
        image sources themselves, so every view (`take`, `with_preprocess`) keeps it too. None for in-memory sets."""
        return getattr(self.pixels, "keep_alive", None)

    @keep_alive.setter
    def keep_alive(self, value: Any) -> None:
        for v in (self.pixels, self.orig_pixels):
            if isinstance(v, ShardedImages):
                v.keep_alive = value

    def take(self, idx: np.ndarray | torch.Tensor | Sequence[int], tag: str) -> TensorDataset:
        """The samples at `idx`, stored as they are (a lazy view of shard-backed images: nothing is read); the
        identity (if known) names the selection by `tag`; the preprocessing carries over."""
        a = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        t = torch.from_numpy(a)

        def pick(v: Any) -> Any:
            if v is None:
                return None
            return v.subset(a) if isinstance(v, ShardedImages) else v[t]

        return TensorDataset(pick(self.pixels), self.y[t], pick(self.orig_pixels), pick(self.mask),
                             None if self.identity is None else f"{self.identity}[{tag}]", self.preprocess)

    def with_preprocess(self, preprocess: dict | None, input_hw: tuple[int, int] | Sequence[int]) -> TensorDataset:
        """This set as a model of input size `input_hw` sees it: when the stored images have another size, every
        batch is resized (`preprocess["resize"]`: the shorter side, with `preprocess["interpolation"]`, default
        bilinear; none: no resize) and centre-cropped to `input_hw` in [0,1] pixel space, where attacks and
        corruptions then act; the mask follows the same resize and crop. The same set when the sizes already agree.
        ValueError if the images cannot reach `input_hw` (a crop larger than the resized image)."""
        target = (int(input_hw[0]), int(input_hw[1]))
        h, w = self.image_hw
        if (h, w) == target:
            return self
        p = preprocess or {}
        crop = p.get("crop")
        if crop is not None and tuple(int(c) for c in crop) != target:
            raise ValueError(f"preprocess crop {list(crop)} differs from the model's input size {list(target)}")
        resize = preprocessed_size(h, w, p)
        size = resize or (h, w)
        if target[0] > size[0] or target[1] > size[1]:
            raise ValueError(f"images of {h}x{w}" + (f" resized to {size[0]}x{size[1]}" if resize else "")
                             + f" are smaller than the model's input {target[0]}x{target[1]}: set preprocess.resize")
        pre = BatchPreprocess(resize, target, str(p.get("interpolation") or "bilinear"))
        # the mask follows the same geometry with nearest-neighbour sampling: it stays 0 / 1 where it was
        mask = None if self.mask is None else replace(pre, interpolation="nearest")(self.mask.to(torch.float32))
        return TensorDataset(self.pixels, self.y, self.orig_pixels, mask,
                             None if self.identity is None else f"{self.identity}|{pre.tag}", pre)

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


def hold_out_for_edit(params, splits: dict) -> tuple | None:
    """When the edit wants data no field names (a gradient edit's locality set), carve it out of the test split:
    splits["test"] becomes the rest, which is all the audit scores. (held-out set, record) or None."""
    if not params.held_out_roles():
        return None
    if "test" not in splits:
        raise ValueError(f"{sorted(params.held_out_roles())} default to a part of the test split, and this edit has "
                         "none: name a locality_set or set locality_weight to 0")
    splits["test"], held, record = hold_out(splits["test"], params.seed)
    return held, record
