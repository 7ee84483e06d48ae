"""Where an upload's bytes come from: a path, an open binary file (the API's spooled upload) or bytes (small
callers, tests). Parsers read it in bounded chunks, so an upload of any size never sits in memory whole."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Protocol, TypeAlias, cast

import numpy as np

from editaudit.contracts.formats.errors import FormatError

Source: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
CHUNK_BYTES = 16 * 1024 * 1024  # one slice of a tensor checked at a time: memory stays bounded by this


class ReadsInto(Protocol):
    """A binary file that fills a buffer. typing.BinaryIO does not declare `readinto`, which every file the parsers
    read has (open files, BytesIO, the API's spooled uploads, npz_file's capped zip members)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


@contextmanager
def opened(src: Source) -> Iterator[tuple[BinaryIO, int]]:
    """(a seekable binary file, its size). A file object passed in is read from its start and left open."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        f: BinaryIO = io.BytesIO(src)
    elif isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            yield f, os.fstat(f.fileno()).st_size
        return
    else:
        f = src
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    yield f, size


def read_exact(f: BinaryIO, n: int, what: str, field: str = "file") -> bytes:
    """`n` bytes from the current position, or a FormatError naming what was cut short."""
    data = f.read(n)
    if len(data) != n:
        raise FormatError(f"{what}: the file ends {n - len(data)} bytes early", field=field)
    return data


def read_into(f: BinaryIO | ReadsInto, out: np.ndarray, what: str, field: str = "file") -> np.ndarray:
    """Fill a preallocated array from the current position: one copy, no intermediate bytes object."""
    view = out.reshape(-1).data.cast("B") if out.size else memoryview(b"")
    reader = cast(ReadsInto, f)
    got = 0
    while got < len(view):
        k = reader.readinto(view[got:])
        if not k:
            raise FormatError(f"{what}: the file ends {len(view) - got} bytes early", field=field)
        got += k
    return out


def iter_chunks(f: BinaryIO | ReadsInto, nbytes: int, dtype: np.dtype, what: str, field: str = "file",
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """`nbytes` from the current position as flat arrays of `dtype`, one bounded slice at a time. Each slice is a
    view of one reused buffer: valid until the next one is produced, so a consumer reduces it and lets it go."""
    dtype = np.dtype(dtype)
    step = max(chunk_bytes // dtype.itemsize, 1) * dtype.itemsize
    buf = bytearray(min(step, nbytes))
    view = memoryview(buf)
    reader = cast(ReadsInto, f)
    left = nbytes
    while left > 0:
        want = min(step, left)
        got = 0
        while got < want:
            k = reader.readinto(view[got:want])
            if not k:
                raise FormatError(f"{what}: the file ends {left - got} bytes early", field=field)
            got += k
        left -= want
        yield np.frombuffer(view[:want], dtype=dtype)


def looks_like_pickle(src: Source) -> bool:
    """True for torch.save / pickle payloads: a zip with a `data.pkl` member or a raw pickle stream."""
    with opened(src) as (f, _):
        head = f.read(4)
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return True
        if head == b"PK\x03\x04":
            f.seek(0)
            try:
                with zipfile.ZipFile(f) as zf:
                    return any(n.endswith(".pkl") for n in zf.namelist())
            except Exception:  # noqa: BLE001 - not a readable zip: not a torch.save file either
                return False
        return False
