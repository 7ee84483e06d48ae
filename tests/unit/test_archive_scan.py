"""Image-folder archives (.tar, .tar.gz, .zip) are summarised from their members' headers, torch- and Pillow-free;
every hostile or malformed member is refused with a FormatError that names it."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from editaudit.contracts.formats import (
    ArchiveLimits,
    FormatError,
    Member,
    is_archive_name,
    iter_archive,
    scan_archive,
)
from editaudit.contracts.formats.image_headers import read_header


def image(fmt: str = "png", size: tuple[int, int] = (8, 6), mode: str = "RGB") -> bytes:
    """An image of `size` (width, height) encoded by Pillow."""
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (200, 30, 90)).save(buf, format=fmt.upper())
    return buf.getvalue()


def tar(entries: list, gz: bool = False) -> io.BytesIO:
    """entries: (name, bytes) files, (name, None) folders, or TarInfo headers written as they are."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tf.addfile(e)
                continue
            name, data = e
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def zipped(entries: list) -> io.BytesIO:
    """entries: (name, bytes) files, (name, None) folders (a trailing slash), or (ZipInfo, bytes)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of duplicate names: one test writes some on purpose
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                if isinstance(name, zipfile.ZipInfo):
                    zf.writestr(name, data)
                elif data is None:
                    zf.writestr(name.rstrip("/") + "/", b"")
                else:
                    zf.writestr(name, data)
    buf.seek(0)
    return buf


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def forged_png(width: int, height: int) -> bytes:
    """A structurally whole PNG whose IHDR claims `width` x `height` (its data is a few bytes: never decodable)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + png_chunk(b"IEND", b""))


def refused(src: io.BytesIO, member: str, limits: ArchiveLimits | None = None, filename: str = "up.tar",
            iterate: bool = True) -> str:
    """scan_archive refuses the archive naming `member`; iter_archive refuses it too (`iterate`)."""
    limits = limits or ArchiveLimits()
    with pytest.raises(FormatError) as e:
        scan_archive(src, filename, limits)
    assert member in e.value.reason, e.value.reason
    assert e.value.field == "file"
    if iterate:
        with pytest.raises(FormatError):
            list(iter_archive(src, filename, limits))
    return e.value.reason


# -------------------------------------------------------------------------------------------------- valid archives


def test_a_tar_of_mixed_formats_is_summarised():
    src = tar([("cat", None), ("cat/1.png", image("png")), ("cat/2.JPG", image("jpeg")),
               ("dog/1.webp", image("webp")), ("dog/2.jpeg", image("jpeg", mode="L")), ("dog/3.png", image(mode="L"))])
    s = scan_archive(src, "up.tar")
    assert (s.container, s.n, s.classes, s.counts) == ("tar", 5, ["cat", "dog"], {"cat": 2, "dog": 3})
    assert s.size == (6, 8) and s.channels == 3 and not s.has_x_orig and not s.has_mask
    assert s.pixels == 5 * 48 and s.formats == {"jpeg": 2, "png": 2, "webp": 1}


def test_a_grey_tar_gz_in_an_enclosing_folder_is_summarised():
    src = tar([("./", None), ("./images", None), ("./images/b", None), ("./images/b/1.png", image(mode="L")),
               ("./images/a/x.jpg", image("jpeg", mode="L")), ("./images/a/.hidden.png", b"junk"),
               ("./.DS_Store", b"junk"), ("__MACOSX/images/._x.jpg", b"junk")], gz=True)
    s = scan_archive(src, "up.tgz")
    assert (s.container, s.n, s.classes, s.counts, s.channels) == ("tar.gz", 2, ["a", "b"], {"a": 1, "b": 1}, 1)
    got = list(iter_archive(src, "up.tgz"))
    assert [(m.name, m.role, m.class_name, m.stem, m.channels) for m, _ in got] == [
        ("./images/b/1.png", "x", "b", "1", 1), ("./images/a/x.jpg", "x", "a", "x", 1)]
    assert got[1][1] == image("jpeg", mode="L")


def test_a_twin_zip_pairs_x_orig_and_mask_by_class_and_stem():
    files = []
    for cls in ("dog", "cat"):
        for stem in ("1", "2"):
            files += [(f"set/x/{cls}/{stem}.png", image()), (f"set/x_orig/{cls}/{stem}.jpg", image("jpeg")),
                      (f"set/mask/{cls}/{stem}.png", image(mode="L"))]
    src = zipped([("set/", None), ("set/x/", None), *files])
    s = scan_archive(src, "edits.zip")
    assert (s.container, s.n, s.classes, s.counts) == ("zip", 4, ["cat", "dog"], {"cat": 2, "dog": 2})
    assert s.has_x_orig and s.has_mask and s.size == (6, 8) and s.channels == 3
    assert s.pixels == 12 * 48 and s.formats == {"jpeg": 4, "png": 8}
    got = list(iter_archive(src, "edits.zip"))
    assert [m.name for m, _ in got] == [name for name, _ in files]  # archive order
    assert dict((m.name, data) for m, data in got) == dict(files)
    assert got[2][0] == Member("set/mask/dog/1.png", "mask", "dog", "1", "png", 8, 6, 1)


def test_the_container_is_read_from_the_content_not_the_name():
    src = tar([("cat/1.png", image())])
    assert scan_archive(src, "mislabelled.zip").container == "tar"
    assert is_archive_name("A.TAR.GZ") and is_archive_name("b.tgz") and not is_archive_name("c.npz")
    with pytest.raises(FormatError, match="up.zip"):
        scan_archive(io.BytesIO(b"not an archive at all" * 40), "up.zip")
    with pytest.raises(FormatError, match="up.tgz"):
        scan_archive(io.BytesIO(gzip.compress(b"not a tar inside" * 100)), "up.tgz")


def test_mixed_sizes_need_resize():
    src = tar([("cat/big.png", image(size=(8, 6))), ("cat/small.png", image(size=(4, 4)))])
    reason = refused(src, "cat/small.png", iterate=False)
    assert "cat/big.png" in reason
    s = scan_archive(src, "up.tar", resize=True)
    assert s.size is None and s.n == 2
    assert len(list(iter_archive(src, "up.tar"))) == 2  # the worker resizes: iterating does not judge sizes


def test_importing_the_scanner_loads_neither_pil_nor_torch():
    code = ("import sys, editaudit.contracts.formats.archive, editaudit.contracts.formats.image_headers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PIL', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("fmt, mode, options, channels", [
    ("png", "RGBA", {}, 3), ("png", "P", {}, 3), ("png", "LA", {}, 1), ("png", "1", {}, 1),
    ("jpeg", "CMYK", {}, 3), ("jpeg", "RGB", {"progressive": True}, 3), ("jpeg", "L", {}, 1),
    ("webp", "RGB", {"lossless": True}, 3), ("webp", "RGBA", {}, 3), ("webp", "RGBA", {"lossless": True}, 3),
])
def test_headers_agree_with_pillow(fmt, mode, options, channels):
    buf = io.BytesIO()
    Image.new(mode, (37, 21)).save(buf, format=fmt.upper(), **options)
    h = read_header(buf.getvalue(), "a")
    assert (h.format, h.width, h.height, h.channels) == (fmt, 37, 21, channels)


# --------------------------------------------------------------------------------------------------- hostile names


@pytest.mark.parametrize("name", ["../evil.png", "cat/../../evil.png", "/etc/x.png", "C:/x.png", "cat\\x.png"])
@pytest.mark.parametrize("container", ["tar", "zip"])
def test_paths_out_of_the_archive_are_refused(name, container):
    entries = [("cat/1.png", image()), (name, image())]
    refused(tar(entries) if container == "tar" else zipped(entries), name)


@pytest.mark.parametrize("info", [
    special("cat/link.png", tarfile.SYMTYPE, "/etc/passwd"),
    special("cat/hard.png", tarfile.LNKTYPE, "cat/1.png"),
    special("cat/dev.png", tarfile.CHRTYPE),
    special("cat/blk.png", tarfile.BLKTYPE),
    special("cat/fifo.png", tarfile.FIFOTYPE),
    special(".hidden/link", tarfile.SYMTYPE, "/etc/passwd"),  # refused even where it would be skipped
], ids=lambda i: i.name)
def test_links_devices_and_fifos_are_refused(info):
    refused(tar([("cat/1.png", image()), info]), info.name)


def test_a_zip_symlink_is_refused():
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(zipped([("cat/1.png", image()), (link, b"/etc/passwd")]), "cat/link.png", filename="up.zip")


@pytest.mark.parametrize("container", ["tar", "zip"])
def test_duplicate_names_are_refused(container):
    entries = [("cat/1.png", image()), ("dog/1.png", image()), ("cat/1.png", image())]
    refused(tar(entries) if container == "tar" else zipped(entries), "cat/1.png")


def test_one_stem_twice_in_a_class_is_refused():
    reason = refused(tar([("cat/1.png", image()), ("cat/1.jpg", image("jpeg"))]), "cat/1.jpg")
    assert "cat/1.png" in reason


# -------------------------------------------------------------------------------------------------------- layout


def test_a_file_at_the_root_is_refused():
    refused(tar([("cat/1.png", image()), ("dog/1.png", image()), ("stray.png", image())]), "stray.png")


def test_a_file_nested_deeper_than_the_layout_is_refused():
    refused(tar([("cat/1.png", image()), ("dog/sub/1.png", image())]), "dog/sub/1.png")


def test_a_non_image_file_is_refused():
    refused(tar([("cat/1.png", image()), ("cat/notes.txt", b"hello")]), "cat/notes.txt")


def test_an_empty_class_folder_is_refused():
    refused(tar([("cat", None), ("cat/1.png", image()), ("dog", None), ("dog/.keep.png", b"")]), "dog")


@pytest.mark.parametrize("entries", [[], [("cat", None), ("dog", None)], [(".hidden.png", image())]])
def test_an_archive_without_images_is_refused(entries):
    refused(tar(entries), "up.tar")


def test_a_missing_twin_is_refused():
    refused(tar([("x/cat/1.png", image()), ("x/cat/2.png", image()), ("mask/cat/1.png", image(mode="L"))]),
            "x/cat/2.png")


def test_an_extra_twin_is_refused():
    refused(tar([("x/cat/1.png", image()), ("x_orig/cat/1.png", image()), ("x_orig/dog/9.png", image())]),
            "x_orig/dog/9.png")


def test_a_twin_of_another_size_is_refused():
    reason = refused(tar([("x_orig/cat/1.png", image(size=(4, 4))), ("x/cat/1.png", image())]), "x_orig/cat/1.png")
    assert "x/cat/1.png" in reason


# -------------------------------------------------------------------------------------------------------- images


def test_a_pixel_bomb_is_refused_from_its_header():
    refused(tar([("cat/1.png", image()), ("cat/bomb.png", forged_png(100_000, 100_000))]), "cat/bomb.png")


def test_a_zero_sized_image_is_refused():
    refused(tar([("cat/1.png", image()), ("cat/empty.png", forged_png(0, 5))]), "cat/empty.png")


def test_total_pixels_over_the_limit_are_refused():
    src = tar([("cat/1.png", image()), ("cat/2.png", image()), ("cat/3.png", image())])
    refused(src, "cat/3.png", ArchiveLimits(max_total_pixels=100))


@pytest.mark.parametrize("fmt, ext", [("png", "png"), ("jpeg", "jpg"), ("webp", "webp")])
def test_a_truncated_image_is_refused(fmt, ext):
    data = image(fmt, size=(32, 32))
    refused(tar([("cat/1.png", image()), (f"cat/cut.{ext}", data[: len(data) // 2])]), f"cat/cut.{ext}")


def test_a_png_cut_inside_its_header_is_refused():
    refused(tar([("cat/1.png", image()), ("cat/cut.png", image()[:20])]), "cat/cut.png")


def test_zero_padding_after_the_end_marker_is_accepted():
    src = tar([("cat/1.jpg", image("jpeg") + b"\x00" * 7), ("cat/2.png", image() + b"\x00" * 3)])
    assert scan_archive(src, "up.tar").n == 2


@pytest.mark.parametrize("name, data", [("cat/garbage.png", b"\x00garbage" * 100), ("cat/jpeg.png", image("jpeg")),
                                        ("cat/png.webp", image())])
def test_bytes_that_disagree_with_the_extension_are_refused(name, data):
    refused(tar([("cat/1.png", image()), (name, data)]), name)


# --------------------------------------------------------------------------------------------------------- bombs


@pytest.mark.parametrize("container", ["tar", "zip"])
def test_too_many_members_are_refused(container):
    entries = [("cat/1.png", image()), *[(f".junk/{i}", b"") for i in range(20)], ("cat/2.png", image())]
    src = tar(entries) if container == "tar" else zipped(entries)
    refused(src, ".junk/10", ArchiveLimits(max_members=11))  # the 12th entry


class Zeros:
    def __init__(self, n: int):
        self.left = n

    def read(self, n: int = -1) -> bytes:
        k = self.left if n < 0 else min(n, self.left)
        self.left -= k
        return bytes(k)


class CountingBytes(io.BytesIO):
    """How much of the compressed upload was read."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.got = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.got += len(data)
        return data


def test_a_gzip_bomb_stops_before_it_inflates():
    size = 200 * 1024**2
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("cat/bomb.png")
        info.size = size
        tf.addfile(info, Zeros(size))
    src = CountingBytes(buf.getvalue())
    with pytest.raises(FormatError, match="cat/bomb.png"):
        scan_archive(src, "up.tgz", ArchiveLimits(max_expanded_bytes=10 * 1024**2))
    assert src.got < len(buf.getvalue()) // 4  # stopped at the member's header, most of the stream never read


def test_a_pax_header_bomb_is_refused_before_tarfile_reads_it():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("cat/pax")
        info.type, info.size = tarfile.XHDTYPE, 4 * 1024**2
        tf.addfile(info, Zeros(info.size))
    buf.seek(0)
    refused(buf, "cat/pax")


def test_a_zip_bomb_is_refused_from_its_declared_sizes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/1.png", image())
        zf.writestr("cat/bomb.png", bytes(50 * 1024**2))
    refused(buf, "cat/bomb.png", ArchiveLimits(max_expanded_bytes=1024**2), filename="up.zip")


def test_a_corrupt_tar_header_after_the_first_is_an_error_not_the_end():
    src = tar([("cat/1.png", image()), ("cat/2.png", image()), ("cat/3.png", image())])
    raw = bytearray(src.getvalue())
    second = 512 + -(-len(image()) // 512) * 512
    raw[second + 100 : second + 108] = b"garbage!"  # the mode field: the header's checksum no longer holds
    refused(io.BytesIO(bytes(raw)), "cat/1.png")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_members_compressed_without_an_output_cap_are_refused_before_inflating(method):
    """bzip2 and LZMA members inflate a whole read at a time in zipfile (a 422-byte bzip2 member grew the API by
    378 MiB before any limit applied): refused by method, naming the member, before anything is read."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        z.writestr("cat/a.png", b"\0" * 1_000_000)
    with pytest.raises(FormatError, match="cat/a.png") as e:
        scan_archive(io.BytesIO(buf.getvalue()), "x.zip")
    assert "deflate" in e.value.reason


def test_a_jpeg_with_a_second_frame_header_and_a_16_bit_grey_png_are_refused():
    """A decoder keeps the last frame header: a second SOF declaring 30000x30000 must not pass a check that read the
    first. A 16-bit grey PNG would be clipped to 255 by the decoder, not scaled: refused, named."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    sof = jpeg.index(b"\xff\xc0")
    length = struct.unpack(">H", jpeg[sof + 2: sof + 4])[0]
    segment = bytearray(jpeg[sof: sof + 2 + length])
    segment[5:9] = struct.pack(">HH", 30000, 30000)
    forged = jpeg[: sof + 2 + length] + bytes(segment) + jpeg[sof + 2 + length:]
    with pytest.raises(FormatError, match="cat/two.jpg.*two frame headers"):
        read_header(forged, "cat/two.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(buf, format="PNG")
    with pytest.raises(FormatError, match="cat/deep.png.*16-bit"):
        read_header(buf.getvalue(), "cat/deep.png")
