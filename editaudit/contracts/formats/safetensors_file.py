"""safetensors read as the format's spec describes it: an 8-byte length, a JSON header, raw little-endian buffers.

The header is checked field by field before any tensor is touched, and tensor data is only ever read in bounded
slices (or into one preallocated array, for the worker), so a checkpoint of any size is validated in bounded memory.

The header itself is bounded too: at most `max_header_bytes` (8 MiB by default; the API passes
`EDITAUDIT_MAX_SAFETENSORS_HEADER_MB`), and parsed entry by entry rather than handed whole to `json.loads`, so a
crafted header cannot make the parser build more than a few bytes of objects per byte it holds (a 100 MiB header of
empty lists used to cost 1.27 GB and 22 s; `json.loads` alone builds ~25 bytes of list per 3-byte `[],`): each tensor
entry is at most MAX_ENTRY_CHARS characters, parsed on its own; `__metadata__` is read string by string; at most
MAX_TENSORS entries and MAX_METADATA_ENTRIES metadata pairs; a name given twice is refused."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from json.decoder import scanstring  # type: ignore[attr-defined]  # typeshed omits it
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

MAX_HEADER_BYTES = 8 * 1024 * 1024  # the default limit: ~100k tensor entries, far more than any classifier has
MAX_HEADER_DEPTH = 3  # {name: {"shape": [..]}} is 3 deep; __metadata__ is a flat {str: str}
MAX_TENSORS = 65536
MAX_METADATA_ENTRIES = 4096
MAX_ENTRY_CHARS = 1024  # {"dtype": .., "shape": [8 dims], "data_offsets": [2]}: under 300 characters as written
_WS = re.compile(r"[ \t\n\r]*")

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
_NONFINITE: dict[str, tuple[str, Callable[[np.ndarray], bool]]] = {
    "F64": ("<f8", lambda a: not np.isfinite(a).all()),
    "F32": ("<f4", lambda a: not np.isfinite(a).all()),
    "F16": ("<f2", lambda a: not np.isfinite(a).all()),
    "BF16": ("<u2", lambda a: bool(((a >> 7) & 0xFF == 0xFF).any())),
    "F8_E5M2": ("u1", lambda a: bool(((a >> 2) & 0x1F == 0x1F).any())),
    "F8_E4M3": ("u1", lambda a: bool((a & 0x7F == 0x7F).any())),  # E4M3FN: only NaN
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A tensor's dtype and shape; `start`/`end` locate its bytes in the file (not part of equality)."""

    dtype: str
    shape: tuple[int, ...]
    start: int = dc_field(default=0, compare=False)
    end: int = dc_field(default=0, compare=False)


class _NotJSON(ValueError):
    """Where the header stops being JSON of a safetensors header's shape (turned into a FormatError)."""


def _skip_ws(s: str, i: int) -> int:
    m = _WS.match(s, i)
    return m.end() if m else i


def _expect(s: str, i: int, char: str) -> int:
    """The index after `char` (and the whitespace after it) at `i`."""
    if s[i : i + 1] != char:
        raise _NotJSON(f"expected {char!r} at character {i}")
    return _skip_ws(s, i + 1)


def _string(s: str, i: int) -> tuple[str, int]:
    if s[i : i + 1] != '"':
        raise _NotJSON(f"expected a string at character {i}")
    value, end = scanstring(s, i + 1, True)  # json's own (C) string scanner: escapes and control characters alike
    return value, _skip_ws(s, end)


def _metadata(s: str, i: int, field: str) -> tuple[dict[str, str], int]:
    """`__metadata__`'s {str: str}, read string by string from `i` (its `{`)."""
    bad = FormatError("not a safetensors file: __metadata__ must map strings to strings", field=field)
    if s[i : i + 1] != "{":
        raise bad
    i = _skip_ws(s, i + 1)
    out: dict[str, str] = {}
    if s[i : i + 1] == "}":
        return out, i + 1
    while True:
        if len(out) >= MAX_METADATA_ENTRIES:
            raise FormatError(f"not a safetensors file: __metadata__ holds more than {MAX_METADATA_ENTRIES} "
                              "entries", field=field)
        if s[i : i + 1] != '"':
            raise bad
        key, i = _string(s, i)
        i = _expect(s, i, ":")
        if s[i : i + 1] != '"':
            raise bad
        out[key], i = _string(s, i)
        if s[i : i + 1] == "}":
            return out, i + 1
        i = _expect(s, i, ",")


def _header_entries(raw: bytes, field: str) -> Iterator[tuple[str, object]]:
    """(tensor name, its entry as JSON values) of each tensor of a header, in bounded memory: the top-level object is
    walked name by name, each tensor entry (at most MAX_ENTRY_CHARS, ending at its first `}`: a valid entry holds
    no other) parsed on its own as it is reached, the metadata string by string (checked, then dropped)."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("not a safetensors file: header is not JSON (not UTF-8)", field=field) from None
    del raw  # the text is all that is read from here on
    seen: set[str] = set()
    count = 0
    try:
        i = _skip_ws(s, 0)
        if s[i : i + 1] != "{":
            raise FormatError("not a safetensors file: header is not a JSON object", field=field)
        i = _skip_ws(s, i + 1)
        if s[i : i + 1] == "}":
            i += 1
        else:
            while True:
                name, i = _string(s, i)
                i = _expect(s, i, ":")
                if name in seen:
                    raise FormatError(f"tensor {name!r}: named twice in the header", field=field)
                seen.add(name)
                if name == "__metadata__":
                    _, i = _metadata(s, i, field)
                    i = _skip_ws(s, i)
                else:
                    count += 1
                    if count > MAX_TENSORS:
                        raise FormatError(f"not a safetensors file: more than {MAX_TENSORS} tensors", field=field)
                    close = s.find("}", i, i + MAX_ENTRY_CHARS)
                    if s[i : i + 1] != "{" or close < 0:
                        raise FormatError(f"tensor {name!r}: an entry is exactly {{dtype, shape, data_offsets}} "
                                          f"(at most {MAX_ENTRY_CHARS} characters)", field=field)
                    try:
                        entry = json.loads(s[i : close + 1])
                    except (ValueError, RecursionError):
                        raise FormatError(f"tensor {name!r}: an entry is exactly {{dtype, shape, data_offsets}}",
                                          field=field) from None
                    yield name, entry
                    i = _skip_ws(s, close + 1)
                if s[i : i + 1] == "}":
                    i += 1
                    break
                i = _expect(s, i, ",")
        if _skip_ws(s, i) != len(s):
            raise _NotJSON(f"extra data at character {i}")
    except (_NotJSON, json.JSONDecodeError):
        raise FormatError("not a safetensors file: header is not JSON", field=field) from None


def _is_count(v: object) -> bool:
    return type(v) is int and v >= 0  # bool is not a count; neither is 3.0 or "3"


def read_safetensors_header(src: Source, field: str = "weights",
                            max_header_bytes: int = MAX_HEADER_BYTES) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header without reading any tensor, as strictly as the format's spec: every
    entry typed field by field, byte counts matching dtype x shape, the tensors' data contiguous from the start of
    the body to its very end (no holes, no overlaps, no trailing bytes), a shallow header of at most
    `max_header_bytes`, parsed in memory bounded by a small multiple of it."""
    if looks_like_pickle(src):
        raise FormatError(
            "pickle-based checkpoints (torch.save, .pt/.pth/.bin) are refused and never loaded; "
            "save the state_dict with safetensors.torch.save_file",
            field=field, pickle=True,
        )
    with opened(src) as (f, size):
        return _parse_header(f, size, field, max_header_bytes)


def _parse_header(f: BinaryIO, size: int, field: str, max_header_bytes: int) -> dict[str, TensorInfo]:
    if size < 8:
        raise FormatError("not a safetensors file: shorter than its 8-byte header length", field=field)
    (n,) = struct.unpack("<Q", read_exact(f, 8, "header length", field))
    if 8 + n > size:
        raise FormatError("not a safetensors file: header length exceeds the file", field=field)
    if n > max_header_bytes:  # refused before a byte of it is read
        raise FormatError(f"the safetensors header is {n} bytes; at most {max_header_bytes} are accepted",
                          field=field)
    entries = _header_entries(read_exact(f, n, "header", field), field)
    base, body = 8 + n, size - 8 - n
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in entries:

        def bad(why: str, name: str = name) -> FormatError:
            return FormatError(f"tensor {name!r}: {why}", field=field)

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
