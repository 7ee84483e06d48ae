"""Dataset uploads (safetensors or .npz with x, y, optional x_orig and mask): every check the API makes before
storing one, done from the arrays' headers first and then over their data in bounded slices, so a 1 GiB dataset is
validated without ever sitting in memory whole. The worker loads the same file with the same checks."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

import numpy as np

from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.npz_file import NpzArchive
from editaudit.contracts.formats.safetensors_file import TensorInfo, numpy_dtype, read_safetensors_header, read_tensor
from editaudit.contracts.formats.source import CHUNK_BYTES, Source, iter_chunks, looks_like_pickle, opened

MAX_NPZ_EXPANDED_BYTES = 8 * 1024**3  # without an upload limit passed in, a zip bomb still must not expand far
ARRAYS = ("x", "y", "x_orig", "mask")  # what a dataset may hold; other arrays are ignored, never read


@dataclass
class DatasetArrays:
    """A dataset's arrays: x float32 [N,C,H,W] in [0,1] (or, loaded with keep_uint8, uint8 [N,H,W,C] as uploaded),
    y int64 [N], optional x_orig (same layout as x's) and mask float32 [N,1,H,W]."""

    x: np.ndarray
    y: np.ndarray
    x_orig: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> list[int]:
        """[C,H,W] whatever the storage layout."""
        return _image_shape(self.x.dtype, self.x.shape)[1:]


@dataclass(frozen=True)
class DatasetSummary:
    """What the API records about a valid dataset, computed without loading it."""

    n: int
    shape: list[int]
    label_max: int
    has_x_orig: bool
    has_mask: bool
    container: str  # "npz" | "safetensors"

    @property
    def suffix(self) -> str:
        return f".{self.container}"


@dataclass
class _Array:
    """An array known by its header; its data comes as slices (`chunks`) or whole (`load`)."""

    dtype: np.dtype
    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray]]
    load: Callable[[], np.ndarray]

    @classmethod
    def in_memory(cls, a: np.ndarray) -> _Array:
        flat = a.ravel(order="K")  # a view for any contiguous array

        def chunks() -> Iterator[np.ndarray]:
            step = max(CHUNK_BYTES // max(a.itemsize, 1), 1)
            for i in range(0, flat.size, step):
                yield flat[i : i + step]

        return cls(a.dtype, a.shape, chunks, lambda: a)


def _safetensors_arrays(f: BinaryIO) -> dict[str, _Array]:
    header = read_safetensors_header(f, field="file")
    out = {}
    for name, info in header.items():
        if name not in ARRAYS:
            continue
        dtype = numpy_dtype(info, name, field=f"file.{name}")

        def chunks(info: TensorInfo = info, dtype: np.dtype = dtype, name: str = name) -> Iterator[np.ndarray]:
            f.seek(info.start)
            return iter_chunks(f, info.end - info.start, dtype, name)

        out[name] = _Array(dtype, info.shape, chunks, partial(read_tensor, f, info, name))
    return out


def _npz_arrays(f: BinaryIO, max_expanded: int) -> dict[str, _Array]:
    archive = NpzArchive(f, max_expanded)
    return {name: _Array(m.dtype, m.shape, partial(archive.chunks, name), partial(archive.load, name))
            for name, m in archive.members.items() if name in ARRAYS}


def _open_arrays(f: BinaryIO, filename: str, max_expanded: int) -> tuple[dict[str, _Array], str]:
    if not filename.endswith(".npz") and looks_like_pickle(f):
        raise FormatError("pickle-based files are refused and never loaded", field="file", pickle=True)
    f.seek(0)
    if f.read(4) == b"PK\x03\x04":
        f.seek(0)
        return _npz_arrays(f, max_expanded), "npz"
    return _safetensors_arrays(f), "safetensors"


# ------------------------------------------------------------------------------------------------------- checks


def _image_shape(dtype: np.dtype, shape: tuple[int, ...]) -> list[int]:
    """[N,C,H,W] of an image array as stored (uint8 is [N,H,W,C])."""
    if dtype == np.uint8 and len(shape) == 4:
        return [int(shape[0]), int(shape[3]), int(shape[1]), int(shape[2])]
    return [int(s) for s in shape]


def _image_header(a: _Array, name: str) -> list[int]:
    if a.dtype == np.uint8:
        if len(a.shape) != 4:
            raise FormatError(f"{name}: uint8 images must be [N,H,W,C], got shape {list(a.shape)}",
                              field=f"file.{name}")
        return _image_shape(a.dtype, a.shape)
    if a.dtype != np.float32:
        raise FormatError(f"{name}: dtype must be float32 [N,C,H,W] in [0,1] or uint8 [N,H,W,C], got {a.dtype}",
                          field=f"file.{name}")
    if len(a.shape) != 4:
        raise FormatError(f"{name}: float32 images must be [N,C,H,W], got shape {list(a.shape)}",
                          field=f"file.{name}")
    return [int(s) for s in a.shape]


def _check_headers(arrays: dict[str, _Array]) -> list[int]:
    """Everything the headers alone decide (dtypes, shapes and their agreement), before any data is read.
    Returns x's [N,C,H,W]."""
    for key in ("x", "y"):
        if key not in arrays:
            raise FormatError(f"missing array {key!r} (found: {sorted(arrays)})", field=f"file.{key}")
    shape = _image_header(arrays["x"], "x")
    y = arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.uint64 or len(y.shape) != 1:
        raise FormatError(f"y must be an int64 vector [N], got {y.dtype} {list(y.shape)}", field="file.y")
    if y.shape[0] != shape[0]:
        raise FormatError(f"y has {y.shape[0]} labels for {shape[0]} images", field="file.y")
    if shape[0] == 0:
        raise FormatError("the dataset is empty (N = 0)", field="file.x")
    if "x_orig" in arrays:
        orig = _image_header(arrays["x_orig"], "x_orig")
        if orig != shape:
            raise FormatError(f"x_orig shape {orig} differs from x {shape}", field="file.x_orig")
    if "mask" in arrays:
        m = arrays["mask"]
        if not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
            raise FormatError(f"mask must be numbers in [0,1], got dtype {m.dtype}", field="file.mask")
        want = [shape[0], 1, *shape[2:]]
        if list(m.shape) != want:
            raise FormatError(f"mask must be [N,1,H,W] = {want}, got {list(m.shape)}", field="file.mask")
    return shape


def _check_unit_interval(a: _Array, name: str) -> None:
    """float32 images: finite and in [0,1]. uint8 images are in range by construction."""
    if a.dtype == np.uint8:
        return
    lo, hi = np.inf, -np.inf
    for part in a.chunks():
        if not np.isfinite(part).all():
            raise FormatError(f"{name}: contains NaN or infinity", field=f"file.{name}")
        if part.size:
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    if lo < 0.0 or hi > 1.0:
        raise FormatError(f"{name}: values must lie in [0,1] (got {lo:.3g}..{hi:.3g}); "
                          "the model normalises its own inputs", field=f"file.{name}")


def _label_max(y: _Array) -> int:
    lo, hi = None, None
    for part in y.chunks():
        if part.size:
            a, b = int(part.min()), int(part.max())
            lo, hi = a if lo is None else min(lo, a), b if hi is None else max(hi, b)
    if lo is not None and lo < 0:
        raise FormatError("labels must lie in [0, 2^63)", field="file.y")
    assert hi is not None  # N > 0 (_check_headers refuses an empty dataset first)
    return hi


def _check_mask(m: _Array) -> None:
    for part in m.chunks():
        v = part.astype(np.float32)  # as the worker will hold it
        if not np.isfinite(v).all() or (v.size and (v.min() < 0 or v.max() > 1)):
            raise FormatError("mask values must be finite and lie in [0,1]", field="file.mask")


def _validate(arrays: dict[str, _Array], container: str) -> DatasetSummary:
    shape = _check_headers(arrays)
    _check_unit_interval(arrays["x"], "x")
    label_max = _label_max(arrays["y"])
    if "x_orig" in arrays:
        _check_unit_interval(arrays["x_orig"], "x_orig")
    if "mask" in arrays:
        _check_mask(arrays["mask"])
    return DatasetSummary(n=shape[0], shape=shape[1:], label_max=label_max, has_x_orig="x_orig" in arrays,
                          has_mask="mask" in arrays, container=container)


# ---------------------------------------------------------------------------------------------------- readers


def scan_dataset(src: Source, filename: str = "", max_expanded: int | None = None) -> DatasetSummary:
    """Validate a dataset upload in bounded memory (its arrays read in slices, an .npz member by member, expanding
    to at most `max_expanded` bytes: the API passes its upload limit); raises FormatError naming the field."""
    cap = MAX_NPZ_EXPANDED_BYTES if max_expanded is None else max_expanded
    with opened(src) as (f, _):
        arrays, container = _open_arrays(f, filename, cap)
        return _validate(arrays, container)


def _canonical(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    return np.ascontiguousarray(a)


def parse_dataset(src: Source, filename: str = "", max_expanded: int | None = None,
                  keep_uint8: bool = False) -> DatasetArrays:
    """Load and validate a dataset (the same checks as scan_dataset). Images come as float32 [N,C,H,W]; with
    `keep_uint8`, uint8 images stay uint8 [N,H,W,C], a quarter of the memory, for the consumer to convert per batch."""
    cap = MAX_NPZ_EXPANDED_BYTES if max_expanded is None else max_expanded
    with opened(src) as (f, _):
        arrays, container = _open_arrays(f, filename, cap)
        _check_headers(arrays)  # refuse from the headers before allocating anything
        loaded = {k: a.load() for k, a in arrays.items()}
    _validate({k: _Array.in_memory(a) for k, a in loaded.items()}, container)
    images = np.ascontiguousarray if keep_uint8 else _canonical
    mask = loaded.get("mask")
    return DatasetArrays(x=images(loaded["x"]), y=loaded["y"].astype(np.int64),
                         x_orig=None if "x_orig" not in loaded else images(loaded["x_orig"]),
                         mask=None if mask is None else np.ascontiguousarray(mask, dtype=np.float32))


def dataset_to_npz(ds: DatasetArrays) -> bytes:
    """Serialise arrays as an .npz upload (used by the demo and tests to build uploads)."""
    buf = io.BytesIO()
    extra: dict[str, Any] = {k: v for k, v in (("x_orig", ds.x_orig), ("mask", ds.mask)) if v is not None}
    np.savez(buf, x=ds.x, y=ds.y, **extra)
    return buf.getvalue()
