"""Torch-free readers for the files users upload: safetensors checkpoints and datasets.

Shared by the API (validation before anything is stored) and the worker (loading). Nothing here ever unpickles:
safetensors is parsed as a JSON header plus raw buffers, and `.npz` is read with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_NPZ_EXPANDED_BYTES = 8 * 1024**3  # a zip bomb must not expand into the API's memory

SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


class FormatError(ValueError):
    """An uploaded file is not what it claims to be. `field` names the offending part for the API's problem."""

    def __init__(self, reason: str, field: str | None = None, pickle: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.pickle = pickle


def looks_like_pickle(data: bytes) -> bool:
    """True for torch.save / pickle payloads: a zip with a `data.pkl` member or a raw pickle stream."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return any(n.endswith(".pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False
    return False


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def read_safetensors_header(data: bytes, field: str = "weights") -> dict[str, TensorInfo]:
    """Parse and check a safetensors header (offsets included) without materialising any tensor."""
    if looks_like_pickle(data):
        raise FormatError(
            "pickle-based checkpoints (torch.save, .pt/.pth/.bin) are refused and never loaded; "
            "save the state_dict with safetensors.torch.save_file",
            field=field, pickle=True,
        )
    if len(data) < 8:
        raise FormatError("not a safetensors file: shorter than its 8-byte header length", field=field)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise FormatError("not a safetensors file: header length exceeds the file", field=field)
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError("not a safetensors file: header is not JSON", field=field) from None
    if not isinstance(header, dict):
        raise FormatError("not a safetensors file: header is not a JSON object", field=field)
    header.pop("__metadata__", None)
    body = len(data) - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        try:
            dtype, shape, (start, end) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"not a safetensors file: malformed entry for tensor {name!r}", field=field) from None
        if dtype not in SAFETENSORS_DTYPES:
            raise FormatError(f"tensor {name!r} has unsupported dtype {dtype}", field=field)
        size = SAFETENSORS_DTYPES[dtype] * int(np.prod(shape, dtype=np.int64))
        if not (0 <= start <= end <= body) or end - start != size:
            raise FormatError(f"tensor {name!r}: data offsets do not match its shape and dtype", field=field)
        out[name] = TensorInfo(dtype, shape)
    if not out:
        raise FormatError("the checkpoint holds no tensors", field=field)
    return out


# ----------------------------------------------------------------------------------------------------- datasets


@dataclass
class DatasetArrays:
    """A dataset in canonical form: x float32 [N,C,H,W] in [0,1], y int64 [N], optional x_orig and mask."""

    x: np.ndarray
    y: np.ndarray
    x_orig: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> list[int]:
        return [int(s) for s in self.x.shape[1:]]


def _read_arrays(data: bytes, filename: str) -> dict[str, np.ndarray]:
    if looks_like_pickle(data) and not filename.endswith(".npz"):
        raise FormatError("pickle-based files are refused and never loaded", field="file", pickle=True)
    if data[:4] == b"PK\x03\x04":
        try:
            members = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except zipfile.BadZipFile as e:
            raise FormatError(f"not a readable .npz file: {e}", field="file") from None
        odd = [m.filename for m in members if not m.filename.endswith(".npy")]
        if odd:
            raise FormatError(f".npz members must be .npy arrays; found {odd[:3]}", field="file")
        if sum(m.file_size for m in members) > MAX_NPZ_EXPANDED_BYTES:
            raise FormatError(f".npz expands beyond {MAX_NPZ_EXPANDED_BYTES >> 30} GiB", field="file")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except ValueError as e:  # object arrays need pickle: refuse
            raise FormatError(f"npz could not be read without unpickling: {e}", field="file", pickle=True) from None
        except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
            raise FormatError(f"not a readable .npz file: {e}", field="file") from None
    read_safetensors_header(data, field="file")
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as e:  # noqa: BLE001
        raise FormatError(f"not a readable safetensors file: {e}", field="file") from None


def _canonical_images(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        if a.ndim != 4:
            raise FormatError(f"{name}: uint8 images must be [N,H,W,C], got shape {list(a.shape)}", field=f"file.{name}")
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    if a.dtype != np.float32:
        raise FormatError(f"{name}: dtype must be float32 [N,C,H,W] in [0,1] or uint8 [N,H,W,C], got {a.dtype}",
                          field=f"file.{name}")
    if a.ndim != 4:
        raise FormatError(f"{name}: float32 images must be [N,C,H,W], got shape {list(a.shape)}", field=f"file.{name}")
    if not np.isfinite(a).all():
        raise FormatError(f"{name}: contains NaN or infinity", field=f"file.{name}")
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise FormatError(f"{name}: values must lie in [0,1] (got {a.min():.3g}..{a.max():.3g}); "
                          "the model normalises its own inputs", field=f"file.{name}")
    return np.ascontiguousarray(a)


def parse_dataset(data: bytes, filename: str = "") -> DatasetArrays:
    """Read and validate a dataset upload; raises FormatError naming the field and the reason."""
    arrays = _read_arrays(data, filename)
    for key in ("x", "y"):
        if key not in arrays:
            raise FormatError(f"missing array {key!r} (found: {sorted(arrays)})", field=f"file.{key}")
    x = _canonical_images(arrays["x"], "x")
    y = arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise FormatError(f"y must be an int64 vector [N], got {y.dtype} {list(y.shape)}", field="file.y")
    if y.shape[0] != x.shape[0]:
        raise FormatError(f"y has {y.shape[0]} labels for {x.shape[0]} images", field="file.y")
    if x.shape[0] == 0:
        raise FormatError("the dataset is empty (N = 0)", field="file.x")
    if y.min() < 0 or y.max() > np.iinfo(np.int64).max:
        raise FormatError("labels must lie in [0, 2^63)", field="file.y")
    out = DatasetArrays(x=x, y=y.astype(np.int64))
    if "x_orig" in arrays:
        out.x_orig = _canonical_images(arrays["x_orig"], "x_orig")
        if out.x_orig.shape != x.shape:
            raise FormatError(f"x_orig shape {list(out.x_orig.shape)} differs from x {list(x.shape)}",
                              field="file.x_orig")
    if "mask" in arrays:
        m = arrays["mask"].astype(np.float32)
        if m.shape != (x.shape[0], 1, *x.shape[2:]):
            raise FormatError(f"mask must be [N,1,H,W] = {[x.shape[0], 1, *x.shape[2:]]}, got {list(m.shape)}",
                              field="file.mask")
        out.mask = m
    return out


def dataset_to_npz(ds: DatasetArrays) -> bytes:
    """Serialise canonical arrays (used by the demo and tests to build uploads)."""
    buf = io.BytesIO()
    extra = {k: v for k, v in (("x_orig", ds.x_orig), ("mask", ds.mask)) if v is not None}
    np.savez(buf, x=ds.x, y=ds.y, **extra)
    return buf.getvalue()
