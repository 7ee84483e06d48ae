"""Torch-free readers for the files users upload: safetensors checkpoints and datasets.

Shared by the API (validation before anything is stored) and the worker (loading). Nothing here ever unpickles:
safetensors is parsed as a JSON header plus raw buffers, and `.npz` is read with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import json
import math
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


MAX_HEADER_DEPTH = 4  # {name: {"shape": [..]}} is 3 deep; __metadata__ is a flat {str: str}
FLOAT_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def _json_depth(raw: bytes) -> int:
    """The deepest nesting of objects and arrays, strings skipped: checked before json.loads, which recurses."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in raw:
        if in_str:
            if escaped:
                escaped = False
            elif ch == 0x5C:  # backslash
                escaped = True
            elif ch == 0x22:
                in_str = False
        elif ch == 0x22:
            in_str = True
        elif ch in (0x7B, 0x5B):
            depth += 1
            deepest = max(deepest, depth)
        elif ch in (0x7D, 0x5D):
            depth -= 1
    return deepest


def _is_count(v) -> bool:
    return type(v) is int and v >= 0  # bool is not a count; neither is 3.0 or "3"


def read_safetensors_header(data: bytes, field: str = "weights") -> dict[str, TensorInfo]:
    """Parse and check a safetensors header without materialising any tensor, as strictly as the format's spec:
    every entry typed field by field, byte counts matching dtype x shape, the tensors' data contiguous from the
    start of the body to its very end (no holes, no overlaps, no trailing bytes), a shallow, bounded header."""
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
    raw = data[8 : 8 + n]
    if _json_depth(raw) > MAX_HEADER_DEPTH:
        raise FormatError(f"not a safetensors file: header nests deeper than {MAX_HEADER_DEPTH}", field=field)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise FormatError("not a safetensors file: header is not JSON", field=field) from None
    if not isinstance(header, dict):
        raise FormatError("not a safetensors file: header is not a JSON object", field=field)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise FormatError("not a safetensors file: __metadata__ must map strings to strings", field=field)
    body = len(data) - 8 - n
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        bad = lambda why: FormatError(f"tensor {name!r}: {why}", field=field)  # noqa: E731
        if "\x00" in name:
            raise bad("NUL in the tensor name")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad("an entry is exactly {dtype, shape, data_offsets}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise bad(f"unsupported dtype {dtype!r}; valid: {sorted(SAFETENSORS_DTYPES)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_count(s) for s in shape):
            raise bad("shape must be a list of at most 8 non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise bad("data_offsets must be [start, end], non-negative integers")
        start, end = offsets
        size = SAFETENSORS_DTYPES[dtype] * math.prod(shape)  # Python ints: a huge shape cannot overflow
        if not start <= end <= body or end - start != size:
            raise bad(f"data offsets [{start}, {end}] do not hold {size} bytes of {dtype} {shape} in a {body}-byte "
                      "body")
        spans.append((start, end, name))
        out[name] = TensorInfo(dtype, tuple(shape))
    if not out:
        raise FormatError("the checkpoint holds no tensors", field=field)
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise FormatError(f"tensor {name!r}: data starts at {start}, expected {position} (tensors must be "
                              "contiguous without holes or overlaps)", field=field)
        position = end
    if position != body:
        raise FormatError(f"{body - position} bytes after the last tensor: the body must end with its data",
                          field=field)
    return out


def nonfinite_tensors(data: bytes, header: dict[str, TensorInfo]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity (read straight from the buffer, no copy of the
    model); BF16 and 8-bit floats are checked by their exponent bits."""
    (n,) = struct.unpack("<Q", data[:8])
    body = memoryview(data)[8 + n :]
    spans = json.loads(data[8 : 8 + n])
    bad = []
    for name, info in header.items():
        start, end = spans[name]["data_offsets"]
        buf = body[start:end]
        if info.dtype in FLOAT_DTYPES:
            values = np.frombuffer(buf, dtype=FLOAT_DTYPES[info.dtype])
            ok = bool(np.isfinite(values).all())
        elif info.dtype == "BF16":
            ok = not bool(((np.frombuffer(buf, dtype="<u2") >> 7) & 0xFF == 0xFF).any())
        elif info.dtype == "F8_E5M2":
            ok = not bool(((np.frombuffer(buf, dtype=np.uint8) >> 2) & 0x1F == 0x1F).any())
        elif info.dtype == "F8_E4M3":
            ok = not bool((np.frombuffer(buf, dtype=np.uint8) & 0x7F == 0x7F).any())  # E4M3FN: only NaN
        else:
            continue
        if not ok:
            bad.append(name)
    return bad


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


def _npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """A member must be a plain .npy array: its header read without loading, object dtypes (pickles) refused."""
    try:  # opening a member can fail too (a corrupt local header): also the user's file
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except Exception as e:  # noqa: BLE001 - anything unreadable is the user's file
        raise FormatError(f"{info.filename}: not a .npy array ({e})", field="file") from None
    if dtype.hasobject:
        raise FormatError(f"{info.filename}: an object array would need unpickling: refused, never loaded",
                          field="file", pickle=True)
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FormatError(f"{info.filename}: bad shape {shape}", field="file")


def _read_arrays(data: bytes, filename: str, max_expanded: int) -> dict[str, np.ndarray]:
    if looks_like_pickle(data) and not filename.endswith(".npz"):
        raise FormatError("pickle-based files are refused and never loaded", field="file", pickle=True)
    if data[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            members = zf.infolist()
        except zipfile.BadZipFile as e:
            raise FormatError(f"not a readable .npz file: {e}", field="file") from None
        odd = [m.filename for m in members if not m.filename.endswith(".npy") or "/" in m.filename]
        if odd:
            raise FormatError(f".npz members must be .npy arrays at the top level; found {odd[:3]}", field="file")
        if sum(m.file_size for m in members) > max_expanded:
            raise FormatError(f".npz expands beyond {max_expanded} bytes (the upload limit)", field="file")
        for m in members:
            _npy_member(zf, m)
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


def parse_dataset(data: bytes, filename: str = "", max_expanded: int | None = None) -> DatasetArrays:
    """Read and validate a dataset upload; raises FormatError naming the field and the reason. An .npz may expand
    to at most `max_expanded` bytes (the API passes its upload limit)."""
    arrays = _read_arrays(data, filename, MAX_NPZ_EXPANDED_BYTES if max_expanded is None else max_expanded)
    for key in ("x", "y"):
        if key not in arrays:
            raise FormatError(f"missing array {key!r} (found: {sorted(arrays)})", field=f"file.{key}")
    x = _canonical_images(arrays["x"], "x")
    y = arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.uint64 or y.ndim != 1:
        raise FormatError(f"y must be an int64 vector [N], got {y.dtype} {list(y.shape)}", field="file.y")
    if y.shape[0] != x.shape[0]:
        raise FormatError(f"y has {y.shape[0]} labels for {x.shape[0]} images", field="file.y")
    if x.shape[0] == 0:
        raise FormatError("the dataset is empty (N = 0)", field="file.x")
    if y.min() < 0:
        raise FormatError("labels must lie in [0, 2^63)", field="file.y")
    out = DatasetArrays(x=x, y=y.astype(np.int64))
    if "x_orig" in arrays:
        out.x_orig = _canonical_images(arrays["x_orig"], "x_orig")
        if out.x_orig.shape != x.shape:
            raise FormatError(f"x_orig shape {list(out.x_orig.shape)} differs from x {list(x.shape)}",
                              field="file.x_orig")
    if "mask" in arrays:
        m = arrays["mask"]
        if not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_):
            raise FormatError(f"mask must be numbers in [0,1], got dtype {m.dtype}", field="file.mask")
        if m.shape != (x.shape[0], 1, *x.shape[2:]):
            raise FormatError(f"mask must be [N,1,H,W] = {[x.shape[0], 1, *x.shape[2:]]}, got {list(m.shape)}",
                              field="file.mask")
        m = m.astype(np.float32)
        if not np.isfinite(m).all() or (m.size and (m.min() < 0 or m.max() > 1)):
            raise FormatError("mask values must be finite and lie in [0,1]", field="file.mask")
        out.mask = m
    return out


def dataset_to_npz(ds: DatasetArrays) -> bytes:
    """Serialise canonical arrays (used by the demo and tests to build uploads)."""
    buf = io.BytesIO()
    extra = {k: v for k, v in (("x_orig", ds.x_orig), ("mask", ds.mask)) if v is not None}
    np.savez(buf, x=ds.x, y=ds.y, **extra)
    return buf.getvalue()
