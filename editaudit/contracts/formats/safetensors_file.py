"""safetensors read as the format's spec describes it: an 8-byte length, a JSON header, raw little-endian buffers.

The header is checked field by field before any tensor is touched, and tensor data is only ever read in bounded
slices (or into one preallocated array, for the worker), so a checkpoint of any size is validated in bounded memory."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import BinaryIO

import numpy as np

from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.source import (
    CHUNK_BYTES,
    Source,
    iter_chunks,
    looks_like_pickle,
    opened,
    read_exact,
    read_into,
)

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_HEADER_DEPTH = 4  # {name: {"shape": [..]}} is 3 deep; __metadata__ is a flat {str: str}

SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}
# the dtypes numpy can hold (BF16 and the 8-bit floats have no numpy type)
NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1",
    "BOOL": "?", "U16": "<u2", "U32": "<u4", "U64": "<u8",
}

# per dtype: (how a slice is viewed, whether it holds NaN or infinity). BF16 and 8-bit floats: by their exponent bits
_NONFINITE = {
    "F64": ("<f8", lambda a: not np.isfinite(a).all()),
    "F32": ("<f4", lambda a: not np.isfinite(a).all()),
    "F16": ("<f2", lambda a: not np.isfinite(a).all()),
    "BF16": ("<u2", lambda a: bool(((a >> 7) & 0xFF == 0xFF).any())),
    "F8_E5M2": ("u1", lambda a: bool(((a >> 2) & 0x1F == 0x1F).any())),
    "F8_E4M3": ("u1", lambda a: bool((a & 0x7F == 0x7F).any())),  # E4M3FN: only NaN
}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's dtype and shape; `start`/`end` locate its bytes in the file (not part of equality)."""

    dtype: str
    shape: tuple[int, ...]
    start: int = dc_field(default=0, compare=False)
    end: int = dc_field(default=0, compare=False)


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


def read_safetensors_header(src: Source, field: str = "weights") -> dict[str, TensorInfo]:
    """Parse and check a safetensors header without reading any tensor, as strictly as the format's spec: every
    entry typed field by field, byte counts matching dtype x shape, the tensors' data contiguous from the start of
    the body to its very end (no holes, no overlaps, no trailing bytes), a shallow, bounded header."""
    if looks_like_pickle(src):
        raise FormatError(
            "pickle-based checkpoints (torch.save, .pt/.pth/.bin) are refused and never loaded; "
            "save the state_dict with safetensors.torch.save_file",
            field=field, pickle=True,
        )
    with opened(src) as (f, size):
        return _parse_header(f, size, field)


def _parse_header(f: BinaryIO, size: int, field: str) -> dict[str, TensorInfo]:
    if size < 8:
        raise FormatError("not a safetensors file: shorter than its 8-byte header length", field=field)
    (n,) = struct.unpack("<Q", read_exact(f, 8, "header length", field))
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise FormatError("not a safetensors file: header length exceeds the file", field=field)
    raw = read_exact(f, n, "header", field)
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
    base, body = 8 + n, size - 8 - n
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
        nbytes = SAFETENSORS_DTYPES[dtype] * math.prod(shape)  # Python ints: a huge shape cannot overflow
        if not start <= end <= body or end - start != nbytes:
            raise bad(f"data offsets [{start}, {end}] do not hold {nbytes} bytes of {dtype} {shape} in a {body}-byte "
                      "body")
        spans.append((start, end, name))
        out[name] = TensorInfo(dtype, tuple(shape), base + start, base + end)
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


def nonfinite_tensors(src: Source, header: dict[str, TensorInfo], chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity, read in slices of `chunk_bytes` (a 1 GiB checkpoint
    is checked in 16 MiB of memory). `header` is what read_safetensors_header returned for the same file."""
    bad = []
    with opened(src) as (f, _):
        for name, info in header.items():
            if info.dtype not in _NONFINITE:
                continue
            view, holds_nonfinite = _NONFINITE[info.dtype]
            f.seek(info.start)
            if any(holds_nonfinite(a) for a in iter_chunks(f, info.end - info.start, np.dtype(view), name,
                                                            "weights", chunk_bytes)):
                bad.append(name)
    return bad


def numpy_dtype(info: TensorInfo, name: str, field: str = "file") -> np.dtype:
    try:
        return np.dtype(NUMPY_DTYPES[info.dtype])
    except KeyError:
        raise FormatError(f"{name}: dtype {info.dtype} has no numpy equivalent", field=field) from None


def read_tensor(f: BinaryIO, info: TensorInfo, name: str) -> np.ndarray:
    """One tensor as a numpy array (C order, as safetensors stores it), read straight into its own memory."""
    out = np.empty(info.shape, dtype=numpy_dtype(info, name))
    f.seek(info.start)
    return read_into(f, out, name)
