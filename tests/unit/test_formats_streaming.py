"""The upload parsers read files in bounded slices: results equal the whole-buffer answer whatever the slice size,
a 64 MiB upload is validated in a fraction of its size (tracemalloc: a memory bound, not a timing), uint8 images are
never widened to float32 to be checked, and an .npz bomb is refused before it expands."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from editaudit.contracts.formats import (
    FormatError,
    nonfinite_tensors,
    parse_dataset,
    read_safetensors_header,
    scan_dataset,
)
from editaudit.contracts.formats.npz_file import NpzArchive

MIB = 1024 * 1024


def write_safetensors(path, tensors: dict[str, tuple[str, tuple[int, ...], object]]) -> None:
    """A safetensors file written tensor by tensor from `fill(nbytes) -> iterator of bytes` (no whole body in
    memory): {name: (dtype, shape, fill)}."""
    sizes = {"F32": 4, "I64": 8, "U8": 1}
    header, offset = {}, 0
    for name, (dtype, shape, _) in tensors.items():
        n = sizes[dtype] * int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, (_, _, fill) in tensors.items():
            lo, hi = header[name]["data_offsets"]
            for part in fill(hi - lo):
                f.write(part)


def zeros(nbytes: int, step: int = 4 * MIB):
    for i in range(0, nbytes, step):
        yield bytes(min(step, nbytes - i))


def peak_of(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("chunk", [2, 4, 6, 1000, 1 << 20])
@pytest.mark.parametrize("where", [0, 17, 999])
def test_nonfinite_found_whatever_the_slice_size(chunk, where):
    state = {"a": np.zeros(1000, np.float32), "b": np.zeros(1000, np.float16), "c": np.zeros(7, np.float64)}
    state["b"][where] = np.inf
    data = st_save(state)
    assert nonfinite_tensors(data, read_safetensors_header(data), chunk_bytes=chunk) == ["b"]


def test_bf16_and_float8_are_checked_by_their_exponent_bits():
    body = bytes([0x80, 0x7F]) + bytes(6)  # bf16 little-endian 0x7F80 = +inf, then three zeros
    header = {"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
              "e": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [8, 10]}}
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + body + bytes([0x00, 0x7F])  # E4M3FN 0x7F is NaN
    assert sorted(nonfinite_tensors(data, read_safetensors_header(data), chunk_bytes=2)) == ["e", "w"]


def test_checkpoint_checked_from_a_path_a_file_and_bytes_alike(tmp_path):
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    data = st_save(state)
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    with open(path, "rb") as f:
        for src in (data, path, str(path), f):
            header = read_safetensors_header(src)
            assert header["w"].shape == (3, 4) and nonfinite_tensors(src, header) == []


def test_a_64_mib_float_dataset_is_validated_in_bounded_memory(tmp_path):
    n = 64 * MIB // (4 * 3 * 32 * 32)
    path = tmp_path / "big.safetensors"

    def x_fill(nbytes):  # values in [0,1]; the very last one is 2.0: found only by reading to the end
        yield from zeros(nbytes - 4)
        yield np.float32(2.0).tobytes()

    write_safetensors(path, {"x": ("F32", (n, 3, 32, 32), x_fill),
                             "y": ("I64", (n,), lambda k: [np.arange(n, dtype=np.int64).tobytes()])})
    size = path.stat().st_size
    with pytest.raises(FormatError, match=r"\[0,1\]"):
        scan_dataset(path)
    peak = peak_of(lambda: pytest.raises(FormatError, scan_dataset, path))
    assert peak < size // 2, f"peak {peak / MIB:.1f} MiB while checking a {size / MIB:.0f} MiB file"


def test_a_uint8_dataset_is_summarised_without_widening(tmp_path):
    n = 64 * MIB // (32 * 32 * 3)
    path = tmp_path / "u8.safetensors"
    write_safetensors(path, {"x": ("U8", (n, 32, 32, 3), zeros),
                             "y": ("I64", (n,), lambda k: [np.full(n, 7, np.int64).tobytes()])})
    out = {}
    peak = peak_of(lambda: out.setdefault("s", scan_dataset(path)))
    s = out["s"]
    assert (s.n, s.shape, s.label_max, s.container) == (n, [3, 32, 32], 7, "safetensors")
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB: uint8 images must not be converted to check them"


def _npz_member_streamed(zf: zipfile.ZipFile, name: str, shape, dtype, fill_bytes: int | None = None) -> None:
    """Write one .npy member through the zip stream in slices (the test never holds the array)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                   "fortran_order": False, "shape": shape})
    nbytes = np.dtype(dtype).itemsize * int(np.prod(shape)) if fill_bytes is None else fill_bytes
    info = zipfile.ZipInfo(name)
    info.compress_type = zf.compression
    with zf.open(info, "w", force_zip64=True) as out:
        out.write(header.getvalue())
        for part in zeros(nbytes):
            out.write(part)


def _bomb(path, mib: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("y.npy"), b"")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        _npz_member_streamed(zf, "x.npy", (mib * MIB // 256, 1, 8, 8), np.float32)


def test_an_npz_bomb_is_refused_without_expanding(tmp_path):
    path = tmp_path / "bomb.npz"
    _bomb(path, 256)
    assert path.stat().st_size < 2 * MIB, "a bomb: small on the wire"
    for read in (scan_dataset, parse_dataset):
        peak = peak_of(lambda read=read: pytest.raises(FormatError, read, path, "bomb.npz", max_expanded=64 * MIB))
        assert peak < 4 * MIB, f"{read.__name__}: peak {peak / MIB:.1f} MiB"
        with pytest.raises(FormatError, match="expands beyond"):
            read(path, "bomb.npz", max_expanded=64 * MIB)


def test_an_npz_member_that_lies_about_its_size_stops_at_the_declared_size():
    """The zip's directory says 1 MiB, the deflate stream holds 32 MiB of zeros: reading stops at the declared size
    and the member's checksum then fails; nothing near 32 MiB is ever allocated."""
    n_small, n_big = MIB // 256, 32 * MIB // 256
    member = io.BytesIO()
    np.lib.format.write_array(member, np.zeros((n_big, 1, 8, 8), np.float32))
    real = bytearray(member.getvalue())
    small = io.BytesIO()
    np.lib.format.write_array_header_1_0(small, {"descr": "<f4", "fortran_order": False, "shape": (n_small, 1, 8, 8)})
    real[: len(small.getvalue())] = small.getvalue()  # same header length: the header now claims 1 MiB of data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", bytes(real))
        zf.writestr("y.npy", _npy(np.zeros(n_small, np.int64)))
    data = bytearray(buf.getvalue())
    declared = len(small.getvalue()) + n_small * 256
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header and central directory entry of x.npy
        pos = data.index(sig)
        data[pos + at : pos + at + 4] = struct.pack("<I", declared)
    del real, member
    for read in (scan_dataset, parse_dataset):
        peak = peak_of(lambda read=read: pytest.raises(FormatError, read, bytes(data), "d.npz", max_expanded=4 * MIB))
        assert peak < 8 * MIB, f"{read.__name__}: peak {peak / MIB:.1f} MiB"
        with pytest.raises(FormatError, match="x.npy"):
            read(bytes(data), "d.npz", max_expanded=4 * MIB)


def test_an_npz_within_the_limit_is_scanned_member_by_member(tmp_path):
    path = tmp_path / "d.npz"
    n = 48 * MIB // 256
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _npz_member_streamed(zf, "x.npy", (n, 1, 8, 8), np.float32)
        with zf.open("y.npy", "w") as out:
            np.lib.format.write_array(out, np.arange(n, dtype=np.int64))
    out = {}
    peak = peak_of(lambda: out.setdefault("s", scan_dataset(path, "d.npz", max_expanded=64 * MIB)))
    assert (out["s"].n, out["s"].shape, out["s"].label_max, out["s"].container) == (n, [1, 8, 8], n - 1, "npz")
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB for a 48 MiB member"


def test_a_member_that_declares_more_data_than_it_holds_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _npz_member_streamed(zf, "x.npy", (1 << 40, 1, 8, 8), np.float32, fill_bytes=64)
    with pytest.raises(FormatError, match="needs .* bytes of data"):
        NpzArchive(io.BytesIO(buf.getvalue()), 1 << 50)


def test_a_member_cut_short_or_corrupt_is_a_format_error():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 1]))
    data = bytearray(buf.getvalue())
    at = data.index(b"\x93NUMPY", data.index(b"x.npy")) + 200  # inside x's data: the CRC no longer matches
    data[at] ^= 0xFF
    for read in (scan_dataset, parse_dataset):
        with pytest.raises(FormatError):
            read(bytes(data), "d.npz")


@pytest.mark.parametrize("arrays", [
    {"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.array([0, 5])},
    {"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.array([3, 1], np.int32),
     "x_orig": np.ones((2, 3, 4, 4), np.float32), "mask": np.ones((2, 1, 4, 4), np.uint8)},
])
def test_scan_and_parse_agree(arrays):
    for data, name in ((st_save(arrays), "d.safetensors"), (_npz(arrays), "d.npz")):
        s, ds = scan_dataset(data, name), parse_dataset(data, name)
        assert (s.n, s.shape, s.label_max, s.has_x_orig, s.has_mask) == \
            (ds.n, ds.shape, int(ds.y.max()), ds.x_orig is not None, ds.mask is not None)


def test_parse_keeps_uint8_when_asked():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    data = st_save({"x": x, "y": np.array([0, 1])})
    kept, widened = parse_dataset(data, keep_uint8=True), parse_dataset(data)
    assert kept.x.dtype == np.uint8 and np.array_equal(kept.x, x) and kept.shape == [3, 4, 4]
    assert widened.x.dtype == np.float32 and np.allclose(widened.x, x.transpose(0, 3, 1, 2) / 255.0)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def _npz(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _header_file(raw: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(raw)) + raw + body


LIMIT = 8 * MIB  # the default header limit (MAX_HEADER_BYTES)


def _at_the_limit(kind: str) -> bytes:
    """Headers of about LIMIT bytes built to make a whole-document json.loads expensive: each refused."""
    if kind == "empty lists":  # json.loads: ~25 bytes of list per 3 bytes of text
        raw = b'{"w":{"dtype":"F32","shape":[' + b"[]," * (LIMIT // 3 - 40) + b'[]],"data_offsets":[0,0]}}'
    elif kind == "many tensors":  # each entry valid on its own, past MAX_TENSORS
        raw = b"{" + b",".join(b'"%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}' % i
                               for i in range(LIMIT // 60)) + b"}"
    else:  # metadata of many short pairs, past MAX_METADATA_ENTRIES
        raw = b'{"__metadata__":{' + b",".join(b'"%x":""' % i for i in range(LIMIT // 12)) + b"}}"
    assert len(raw) <= LIMIT
    return _header_file(raw)


@pytest.mark.parametrize("kind", ["empty lists", "many tensors", "metadata"])
def test_a_hostile_header_at_the_limit_is_refused_in_bounded_memory(kind):
    data = _at_the_limit(kind)
    peak = peak_of(lambda: pytest.raises(FormatError, read_safetensors_header, data))
    # the header's bytes and text, and the tensors checked so far (65536 at most): whole-document json.loads
    # needed ~25 bytes per byte of the first kind
    assert peak < 8 * LIMIT, f"peak {peak / MIB:.0f} MiB for a {len(data) / MIB:.0f} MiB header"


def test_a_header_over_the_limit_is_refused_before_it_is_read():
    data = _header_file(b" " * (LIMIT + 1))

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    with pytest.raises(FormatError, match=f"{LIMIT + 1} bytes; at most {LIMIT}"):
        read_safetensors_header(Counting(data))
    assert Counting.read_bytes < 64 * 1024, "the header itself was never read"
    ok = _header_file(json.dumps({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode() + b" " * 100,
                      b"\x00")
    with pytest.raises(FormatError, match="at most 64"):
        read_safetensors_header(ok, max_header_bytes=64)
    assert read_safetensors_header(ok)["w"].shape == (1,)


@pytest.mark.parametrize("raw,match", [
    (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
     "named twice"),
    (b'{"__metadata__":{"a":"b"},"__metadata__":{}}', "named twice"),
    (b'{"__metadata__":{"a":1},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', "map strings to strings"),
    (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} x', "not JSON"),
    (b'{"w":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', "shape"),
    (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":{}}}', "exactly"),
])
def test_the_entry_by_entry_parser_is_as_strict_as_the_spec(raw, match):
    with pytest.raises(FormatError, match=match):
        read_safetensors_header(_header_file(raw, b"\x00"))


def test_the_entry_by_entry_parser_reads_what_writers_write():
    """Escapes in names, metadata, whitespace and any key order: the same answer as safetensors' own writer."""
    state = {'a "quoted"\\name': np.zeros((2, 3), np.float32), "b\u00e9": np.ones(4, np.int64)}
    data = st_save(state, metadata={"format": "pt", "note": "{}[],:\"\\"})
    header = read_safetensors_header(data)
    assert {k: (v.dtype, v.shape) for k, v in header.items()} == {'a "quoted"\\name': ("F32", (2, 3)),
                                                                  "b\u00e9": ("I64", (4,))}
    raw = b'\n{ "__metadata__" : { } ,\n "w" : { "shape" : [ 1 ] , "data_offsets" : [ 0 , 1 ] , "dtype" : "U8" } }\t'
    assert read_safetensors_header(_header_file(raw, b"\x00"))["w"].dtype == "U8"
