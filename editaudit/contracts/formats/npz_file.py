""".npz read member by member from the zip stream, never whole: each member's .npy header first (an object dtype
would need unpickling: refused, never loaded), then its data in bounded slices. The sum of the members' declared
sizes is capped (the API passes its upload limit) and no member may yield more than it declared, so a zip bomb is
refused, or cut off, before it expands into memory."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import numpy as np

from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.source import iter_chunks

# zipfile's read(n) builds its answer by concatenation (a few transient copies of n bytes): smaller slices than a
# plain file's keep that bounded too
ZIP_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class NpyMember:
    """One array of the archive, known from its .npy header: where its data starts, what it holds."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape)


class _Capped:
    """A member's decompressed stream that refuses to yield more than `limit` bytes: zipfile stops at the declared
    size already; this says so explicitly, whatever the archive's local headers claim."""

    def __init__(self, stream: IO[bytes], limit: int, name: str):
        self.stream, self.left, self.name = stream, limit, name

    def _count(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise FormatError(f"{self.name}: expands beyond its declared size", field="file")

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self._count(len(data))
        return data

    def readinto(self, b: memoryview) -> int:
        k = cast(zipfile.ZipExtFile, self.stream).readinto(b)  # ZipFile.open's file (typed as IO[bytes])
        self._count(k)
        return k


def _read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(stream)
    return shape, dtype, stream.tell()


class NpzArchive:
    """The archive's members by array name (`x.npy` is `x`), every header read and checked on opening."""

    def __init__(self, f: BinaryIO, max_expanded: int):
        try:
            self.zf = zipfile.ZipFile(f)
            infos = self.zf.infolist()
        except Exception as e:  # noqa: BLE001 - BadZipFile, and worse for a mangled central directory
            raise FormatError(f"not a readable .npz file: {e}", field="file") from None
        odd = [m.filename for m in infos if not m.filename.endswith(".npy") or "/" in m.filename]
        if odd:
            raise FormatError(f".npz members must be .npy arrays at the top level; found {odd[:3]}", field="file")
        names = [m.filename for m in infos]
        if len(set(names)) != len(names):
            raise FormatError(".npz holds the same member twice", field="file")
        if sum(m.file_size for m in infos) > max_expanded:
            raise FormatError(f".npz expands beyond {max_expanded} bytes (the upload limit)", field="file")
        self.members = {m.filename.removesuffix(".npy"): self._member(m) for m in infos}

    def _member(self, info: zipfile.ZipInfo) -> NpyMember:
        """A member must be a plain .npy array: its header read without loading, object dtypes (pickles) refused."""
        try:  # opening a member can fail too (a corrupt local header): also the user's file
            with self.zf.open(info) as stream:
                shape, dtype, header_bytes = _read_header(stream)
        except Exception as e:  # noqa: BLE001 - anything unreadable is the user's file
            raise FormatError(f"{info.filename}: not a .npy array ({e})", field="file") from None
        if dtype.hasobject:
            raise FormatError(f"{info.filename}: an object array would need unpickling: refused, never loaded",
                              field="file", pickle=True)
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise FormatError(f"{info.filename}: bad shape {shape}", field="file")
        member = NpyMember(info, tuple(shape), dtype, header_bytes)
        if header_bytes + member.nbytes > info.file_size:
            raise FormatError(f"{info.filename}: {dtype} {list(shape)} needs {member.nbytes} bytes of data; the "
                              f"member holds {info.file_size - header_bytes}", field="file")
        return member

    def chunks(self, name: str, chunk_bytes: int = ZIP_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The array's elements in storage order, one bounded slice at a time (see iter_chunks)."""
        m = self.members[name]
        try:
            with self.zf.open(m.info) as raw:
                stream = _Capped(raw, m.info.file_size, m.info.filename)
                stream.read(m.header_bytes)
                yield from iter_chunks(stream, m.nbytes, m.dtype, m.info.filename, chunk_bytes=chunk_bytes)
        except FormatError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad CRC, corrupt deflate data: the user's file
            raise FormatError(f"{m.info.filename}: not readable ({e})", field="file") from None

    def load(self, name: str) -> np.ndarray:
        """The whole array (the worker's load; the API only scans)."""
        m = self.members[name]
        try:
            with self.zf.open(m.info) as raw:
                return np.lib.format.read_array(_Capped(raw, m.info.file_size, m.info.filename), allow_pickle=False)
        except FormatError:
            raise
        except Exception as e:  # noqa: BLE001
            raise FormatError(f"{m.info.filename}: not readable ({e})", field="file") from None
