"""Sharded image datasets, torch-free: what the worker's ingest job makes of an image-folder archive (decoded once
into uint8 shards) and what the worker later streams batches from.

A sharded dataset is a manifest (JSON, validated by `parse_manifest`) plus its shard files:

    {"version": 1, "n": N, "shape": [C, H, W], "classes": [names] | None, "class_to_idx": {name: label} | None,
     "label_max": int, "has_x_orig": bool, "has_mask": bool,
     "shards": [{"key": str, "sha256": str, "n": int, "bytes": int}, ...],
     "preprocess": {"resize": int | None, "crop": [h, w] | None, "interpolation": str} | None}

`classes` are the archive's class folders, sorted; a folder's label is its index there unless `class_to_idx` (the
mapping the import asked for) says otherwise. `preprocess` records what the ingest did to every image (None: stored
as decoded). Each shard is a safetensors file holding `x` uint8 [k,H,W,C], `y` int64 [k], and when the manifest says
so `x_orig` uint8 [k,H,W,C] and `mask` uint8 [k,1,H,W] (values 0/1): the layout `parse_dataset` accepts, so one
shard is also a valid ordinary dataset upload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.safetensors_file import TensorInfo

MANIFEST_VERSION = 1
SHARD_BYTES = 32 * 1024 * 1024  # ~x bytes per shard (x_orig, mask and y come on top); at least one image
MAX_SIDE = 16384  # an image side after decoding and resizing
MAX_OPTION_SIDE = 8192  # a side an import may resize or crop to
MAX_LABEL = 99_999  # labels stay below num_classes' bound (100 000)
Interpolation = Literal["nearest", "bilinear", "bicubic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestOptions(_Strict):
    """What an archive import may ask of the decoder: resize the shorter side to `resize` (torchvision's
    Resize(int), antialiased), then centre-crop to `crop` ([h, w]; torchvision's CenterCrop, except that a crop
    larger than the image is refused instead of zero-padded), and `class_to_idx`: each class folder's label
    (default: its index among the sorted folder names, as torchvision's ImageFolder; two folders may share a label).
    The one model of these options: the API validates an upload's `options` with it, the ingest job reads them."""

    resize: int | None = Field(None, ge=1, le=MAX_OPTION_SIDE, description="shorter side after resizing")
    crop: list[int] | None = Field(None, min_length=2, max_length=2, description="[H, W] centre crop after resize")
    interpolation: Interpolation = "bilinear"
    class_to_idx: dict[str, Annotated[int, Field(ge=0, le=MAX_LABEL)]] | None = Field(
        None, description="class folder -> label (default: sorted order); labels below 100000, as num_classes")

    @model_validator(mode="after")
    def _check(self) -> IngestOptions:
        if self.crop is not None and not all(1 <= s <= MAX_OPTION_SIDE for s in self.crop):
            raise ValueError(f"crop sides must lie in [1, {MAX_OPTION_SIDE}]")
        if self.class_to_idx is not None and not self.class_to_idx:
            raise ValueError("class_to_idx is empty")
        return self

    @property
    def resizes(self) -> bool:
        return self.resize is not None or self.crop is not None

    def record(self) -> dict[str, Any] | None:
        """The manifest's `preprocess`: what was done to every image (None: nothing)."""
        if self.resize is None and self.crop is None:
            return None
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation}


class ShardRef(_Strict):
    key: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n: int = Field(ge=1)
    bytes: int = Field(ge=8)


class Preprocess(_Strict):
    resize: int | None = Field(None, ge=1, le=MAX_SIDE)
    crop: list[int] | None = Field(None, min_length=2, max_length=2)
    interpolation: Interpolation = "bilinear"


class ShardManifest(_Strict):
    version: Literal[1]
    n: int = Field(ge=1)
    shape: list[int] = Field(min_length=3, max_length=3, description="[C, H, W]")
    classes: list[str] | None = None
    class_to_idx: dict[str, int] | None = None
    label_max: int = Field(ge=0)
    has_x_orig: bool
    has_mask: bool
    shards: list[ShardRef] = Field(min_length=1)
    preprocess: Preprocess | None = None

    @model_validator(mode="after")
    def _check(self) -> ShardManifest:
        c, h, w = self.shape
        if c not in (1, 3) or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ValueError(f"shape must be [1 or 3, H, W] with sides in [1, {MAX_SIDE}], got {self.shape}")
        total = sum(s.n for s in self.shards)
        if total != self.n:
            raise ValueError(f"the shards hold {total} images, n says {self.n}")
        for i, s in enumerate(self.shards):
            least = shard_bytes(s.n, self.shape, self.has_x_orig, self.has_mask)
            if s.bytes < least:
                raise ValueError(f"shard {i} is {s.bytes} bytes, too small for {s.n} images of {self.shape}")
        keys = [s.key for s in self.shards]
        if len(set(keys)) != len(keys):
            raise ValueError("two shards have the same key")
        if self.classes is not None:
            if not self.classes or len(set(self.classes)) != len(self.classes) or not all(self.classes):
                raise ValueError("classes must be distinct non-empty names")
            if self.class_to_idx is None and self.label_max >= len(self.classes):
                raise ValueError(f"label_max {self.label_max} names no class of {len(self.classes)}")
        if self.class_to_idx is not None:
            if self.classes is None or set(self.class_to_idx) != set(self.classes):
                raise ValueError("class_to_idx must map exactly the classes")
            if max(self.class_to_idx.values()) < self.label_max:
                raise ValueError(f"label_max {self.label_max} is no class's label")
        return self

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C): one stored image."""
        c, h, w = self.shape
        return h, w, c

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_manifest(obj: Mapping[str, Any] | ShardManifest) -> ShardManifest:
    """A validated manifest (counts add up, shapes sane, keys distinct); FormatError(field="manifest") if not."""
    if isinstance(obj, ShardManifest):
        return obj
    try:
        return ShardManifest.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise FormatError(f"invalid shard manifest: {where + ': ' if where else ''}{first['msg']}",
                          field="manifest") from None


def shard_bytes(n: int, shape: list[int], has_x_orig: bool, has_mask: bool) -> int:
    """The data bytes of a shard of `n` images (its header comes on top)."""
    c, h, w = shape
    per = h * w * c * (2 if has_x_orig else 1) + 8 + (h * w if has_mask else 0)
    return n * per


def shard_layout(n: int, shape: list[int], has_x_orig: bool, has_mask: bool) -> dict[str, tuple[str, list[int]]]:
    """Each array of a shard of `n` images: name -> (safetensors dtype, shape), in file order."""
    c, h, w = shape
    out = {"x": ("U8", [n, h, w, c]), "y": ("I64", [n])}
    if has_x_orig:
        out["x_orig"] = ("U8", [n, h, w, c])
    if has_mask:
        out["mask"] = ("U8", [n, 1, h, w])
    return out


def check_shard_header(header: Mapping[str, TensorInfo], manifest: ShardManifest, index: int) -> None:
    """A shard's safetensors header holds exactly the arrays the manifest promises, with their dtypes and shapes."""
    ref = manifest.shards[index]
    want = shard_layout(ref.n, manifest.shape, manifest.has_x_orig, manifest.has_mask)
    if set(header) != set(want):
        raise FormatError(f"shard {index} ({ref.key}): holds {sorted(header)}, expected {sorted(want)}",
                          field="manifest")
    for name, (dtype, shape) in want.items():
        info = header[name]
        if info.dtype != dtype or list(info.shape) != shape:
            raise FormatError(f"shard {index} ({ref.key}): {name} is {info.dtype} {list(info.shape)}, expected "
                              f"{dtype} {shape}", field="manifest")


_DTYPES = {np.dtype(np.uint8): "U8", np.dtype("<i8"): "I64"}


def write_shard(path: str | Path, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Write `arrays` (C-contiguous uint8 or int64, in the given order) as a safetensors file, streamed from the
    arrays' own memory (no second copy). Returns each array's (start, end) byte offsets in the file, for callers
    that fill rows in place later."""
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, a in arrays.items():
        if a.dtype not in _DTYPES or not a.flags.c_contiguous:
            raise ValueError(f"{name}: only C-contiguous uint8 / int64 arrays are written, got {a.dtype}")
        nbytes = a.nbytes
        entries[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(entries, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
    base = 8 + len(head)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for a in arrays.values():
            if a.size:
                f.write(a.data.cast("B"))
    return {name: (base + e["data_offsets"][0], base + e["data_offsets"][1]) for name, e in entries.items()}


def rows_per_shard(image_shape: tuple[int, ...], target_bytes: int = SHARD_BYTES) -> int:
    """How many images of `image_shape` make about `target_bytes` of x (at least one)."""
    return max(1, target_bytes // max(1, math.prod(image_shape)))


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `shorter` and the aspect kept: torchvision's Resize(int) rule."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shorter * long / short)
    return (shorter, new_long) if width <= height else (new_long, shorter)


def preprocessed_size(height: int, width: int, preprocess: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(H, W) a model's preprocessing resizes an image of (height, width) to, before its centre crop: exactly
    `resize_exact` (Hugging Face processors that squash), or the shorter side to `resize` (aspect kept); None when
    it asks for no resize. The API (whether a dataset can reach the input) and the worker (what it does per batch)
    both compute it here."""
    p = preprocess or {}
    if p.get("resize_exact") is not None:
        return int(p["resize_exact"][0]), int(p["resize_exact"][1])
    if p.get("resize") is not None:
        w, h = resized_size(width, height, int(p["resize"]))
        return h, w
    return None


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of torchvision's CenterCrop of a crop that fits."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
