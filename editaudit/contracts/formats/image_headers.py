"""PNG, JPEG and WebP read from their headers and chunk structure only, never decoded: the API learns an image's size
and channels (to refuse a pixel bomb before anything would decode it) and refuses a truncated or mislabelled file,
with the standard library alone (no Pillow in the API process)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Literal

from editaudit.contracts.formats.errors import FormatError

ImageFormat = Literal["png", "jpeg", "webp"]
EXTENSIONS: dict[str, ImageFormat] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# SOF0..SOF15 less DHT (C4), JPG (C8) and DAC (CC): the frame headers that carry the image's size
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}


@dataclass(frozen=True)
class ImageHeader:
    format: ImageFormat
    width: int
    height: int
    channels: int  # 1 (grey) or 3 (colour; alpha is dropped)


def sniff(data: bytes) -> ImageFormat | None:
    """The format the bytes are, by their magic number (whatever the file is called)."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def read_header(data: bytes, name: str) -> ImageHeader:
    """Size and channels of a PNG, JPEG or WebP, after checking that its structure is whole (a file cut short is
    refused here, not half-decoded later). FormatError naming `name` otherwise."""
    fmt = sniff(data)
    if fmt is None:
        raise FormatError(f"{name}: not a PNG, JPEG or WebP image (unrecognised bytes)", field="file")
    header = {"png": _png, "jpeg": _jpeg, "webp": _webp}[fmt](data, name)
    if header.width <= 0 or header.height <= 0:
        raise FormatError(f"{name}: the header declares an empty image ({header.width}x{header.height})",
                          field="file")
    return header


def _bad(name: str, what: str) -> FormatError:
    return FormatError(f"{name}: {what}", field="file")


def _png(data: bytes, name: str) -> ImageHeader:
    """IHDR first (CRC checked: its size is what the pixel limit trusts), chunks that fit the file, at least one IDAT,
    and IEND last (only zero padding after it)."""
    n = len(data)
    if n < 8 + 25 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
        raise _bad(name, "a PNG without a valid IHDR header (truncated or corrupt)")
    ihdr = data[16:29]
    if struct.unpack(">I", data[29:33])[0] != zlib.crc32(data[12:29]):
        raise _bad(name, "PNG header (IHDR) fails its checksum: corrupt or forged")
    width, height, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    if colour not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[colour]:
        raise _bad(name, f"PNG colour type {colour} with bit depth {depth} is not valid")
    if depth == 16 and colour in (0, 4):  # Pillow reads these as 32-bit integers that convert() clips to 255
        raise _bad(name, "a 16-bit greyscale PNG: its values would be clipped, not scaled; save it with 8 bits")
    if width > 2**31 - 1 or height > 2**31 - 1:
        raise _bad(name, f"PNG size {width}x{height} is out of range")
    pos, idat = 33, False
    while True:
        if pos + 12 > n:
            raise _bad(name, "the PNG ends before its IEND chunk (truncated)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 2**31 - 1 or pos + 12 + length > n:
            raise _bad(name, f"PNG chunk {ctype!r} runs past the end of the file (truncated)")
        idat = idat or ctype == b"IDAT"
        pos += 12 + length
        if ctype == b"IEND":
            break
    if not idat:
        raise _bad(name, "a PNG without image data (no IDAT chunk)")
    if data[pos:].strip(b"\x00"):
        raise _bad(name, f"{n - pos} bytes after the PNG's IEND chunk")
    return ImageHeader("png", width, height, 1 if colour in (0, 4) else 3)


def _jpeg(data: bytes, name: str) -> ImageHeader:
    """Segments walked from SOI to the start of scan: exactly one frame header (SOFn: size and components) on the
    way; the file must end with EOI (FFD9), zero padding allowed, else it was cut short."""
    n = len(data)
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise _bad(name, "the JPEG does not end with its EOI marker (truncated)")
    pos, found = 2, None
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise _bad(name, "a corrupt JPEG (no marker where one is due)")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise _bad(name, "the JPEG ends inside a marker (truncated)")
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers: no length
            continue
        if marker == 0xDA and found is not None:  # start of scan: the frame header decoders use is behind us
            return found
        if marker in (0xD8, 0xD9, 0xDA):
            raise _bad(name, "a JPEG without a frame header (no SOF marker before its image data)")
        if pos + 2 > n:
            raise _bad(name, "the JPEG ends inside a segment header (truncated)")
        length = struct.unpack(">H", data[pos : pos + 2])[0]
        if length < 2 or pos + length > n:
            raise _bad(name, f"JPEG segment FF{marker:02X} runs past the end of the file (truncated)")
        if marker in _JPEG_SOF:
            if length < 8:
                raise _bad(name, "a JPEG frame header too short to hold the image's size")
            height, width, components = struct.unpack(">HHB", data[pos + 3 : pos + 8])
            if length != 8 + 3 * components:
                raise _bad(name, "a JPEG frame header whose length disagrees with its components")
            if components not in (1, 3, 4):
                raise _bad(name, f"a JPEG with {components} colour components (1, 3 or 4 are read)")
            if found is not None:  # a decoder keeps the last one: the size checked must be the only one
                raise _bad(name, "a JPEG with two frame headers (SOF markers) before its image data")
            found = ImageHeader("jpeg", width, height, 1 if components == 1 else 3)
        pos += length


def _webp(data: bytes, name: str) -> ImageHeader:
    """The RIFF size must match the file (only zero padding after it); the chunks must fit inside it, the first being
    VP8 (lossy), VP8L (lossless) or VP8X (extended: canvas size, then an image or animation chunk)."""
    n = len(data)
    riff_end = struct.unpack("<I", data[4:8])[0] + 8
    if riff_end > n:
        raise _bad(name, f"the WebP's RIFF header declares {riff_end} bytes; the file holds {n} (truncated)")
    if data[riff_end:].strip(b"\x00"):
        raise _bad(name, f"{n - riff_end} bytes after the WebP's RIFF data")
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= riff_end:
        fourcc, size = struct.unpack("<4sI", data[pos : pos + 8])
        if pos + 8 + size > riff_end:
            raise _bad(name, f"WebP chunk {fourcc!r} runs past the end of the file (truncated)")
        chunks.append((fourcc, data[pos + 8 : pos + 8 + min(size, 30)]))  # the few bytes a header needs
        pos += 8 + size + (size & 1)
    if pos < riff_end or not chunks:
        raise _bad(name, "a corrupt WebP (its chunks do not fill the RIFF data)")
    fourcc, head = chunks[0]
    if fourcc == b"VP8 ":
        if len(head) < 10 or head[0] & 1 or head[3:6] != b"\x9d\x01\x2a":
            raise _bad(name, "a WebP whose VP8 frame header is missing or corrupt")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", head[6:10]))
    elif fourcc == b"VP8L":
        if len(head) < 5 or head[0] != 0x2F:
            raise _bad(name, "a WebP whose VP8L header is missing or corrupt")
        bits = struct.unpack("<I", head[1:5])[0]
        if bits >> 29:
            raise _bad(name, "a WebP with an unknown VP8L version")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif fourcc == b"VP8X":
        if len(head) < 10:
            raise _bad(name, "a WebP whose VP8X header is too short")
        width = int.from_bytes(head[4:7], "little") + 1
        height = int.from_bytes(head[7:10], "little") + 1
        if not any(c in (b"VP8 ", b"VP8L", b"ANMF") for c, _ in chunks[1:]):
            raise _bad(name, "a WebP without image data (no VP8, VP8L or ANMF chunk)")
    else:
        raise _bad(name, f"a WebP whose first chunk is {fourcc!r} (VP8, VP8L or VP8X expected)")
    return ImageHeader("webp", width, height, 3)
