"""Image-folder archives (`.tar`, `.tar.gz`, `.zip`, torchvision's ImageFolder layout), torch-free and never
decoding an image: the API scans an upload with `scan_archive` (every hostile or malformed member refused with a
FormatError naming it, before anything is stored); the worker's ingest job walks the same members with
`iter_archive` (the same checks) and decodes them.

Layout: `<class>/<file>` (one folder per class; class index = position in the sorted class names, as torchvision's
ImageFolder), or, for rewrite-style edit sets, `x/<class>/<file>` with parallel `x_orig/<class>/<file>` and
`mask/<class>/<file>` trees (matched by class and file stem). One enclosing folder (`images/<class>/<file>`) is
stripped. Hidden files and `__MACOSX/` are skipped.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Literal, Protocol, Self, cast

from editaudit.contracts.formats.errors import FormatError
from editaudit.contracts.formats.image_headers import EXTENSIONS, ImageHeader, read_header, sniff

Role = Literal["x", "x_orig", "mask"]
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may hold; the API's settings set them."""

    max_members: int = 200_000
    max_image_pixels: int = 40_000_000  # one image (width x height), read from its header before any decoding
    max_total_pixels: int = 16_000_000_000  # the whole archive
    max_expanded_bytes: int = 64 * 1024**3  # bytes the members expand to (a gzip or zip bomb stops here)


@dataclass(frozen=True)
class Member:
    """One image of the archive, known from its header (not decoded)."""

    name: str  # the member's path in the archive, as stored (what errors name)
    role: Role
    class_name: str
    stem: str  # the path below the class folder without its suffix: how x, x_orig and mask are paired
    format: Literal["png", "jpeg", "webp"]
    width: int
    height: int
    channels: int  # 1 (grey) or 3 (colour; alpha is dropped) as the header declares


@dataclass(frozen=True)
class ArchiveSummary:
    container: Literal["tar", "tar.gz", "zip"]
    n: int  # images in the x tree
    classes: list[str]  # sorted folder names
    counts: dict[str, int]  # images per class
    size: tuple[int, int] | None  # (height, width) when every x image has the same size, else None
    channels: int  # 1 when every x image is grey, else 3
    has_x_orig: bool
    has_mask: bool
    pixels: int  # sum of width x height over every member
    formats: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ limits

MAX_MEMBER_BYTES = 256 * 1024**2  # one image's bytes: what one member may hold in memory at a time
TWIN_ROLES = frozenset({"x", "x_orig", "mask"})
_READ_BYTES = 1024 * 1024  # a member is read in slices of this (zipfile's read(n) concatenates: keep n small)
_MAX_TAR_META_BYTES = 1024 * 1024  # a pax or GNU long-name header: tarfile reads one whole into memory
_TAR_META_TYPES = (b"x", b"g", b"X", b"L", b"K")  # pax, pax global, Solaris pax, GNU long name, GNU long link
_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)  # not GNU sparse files
_DRIVE = re.compile(r"^[A-Za-z]:")
Container = Literal["tar", "tar.gz", "zip"]


class _Budget:
    """What the archive has used so far: entries, bytes expanded, pixels; the first over its limit is refused,
    naming the member that crossed it. `current` is the member being read (what an unreadable stream names)."""

    def __init__(self, limits: ArchiveLimits, filename: str):
        self.limits, self.current = limits, filename
        self.members = self.expanded = self.pixels = 0

    def member(self, name: str) -> None:
        self.current = name
        self.members += 1
        if self.members > self.limits.max_members:
            raise FormatError(f"{name}: the archive holds more than {self.limits.max_members} entries",
                              field="file")

    def declared(self, name: str, size: int, cap: bool = True) -> None:
        """A member's declared size, checked before a byte of it is inflated."""
        per_member = min(MAX_MEMBER_BYTES, self.limits.max_expanded_bytes)
        if cap and size > per_member:
            raise FormatError(f"{name}: {size} bytes, over the {per_member}-byte limit for one image", field="file")
        if self.expanded + size > self.limits.max_expanded_bytes:
            raise FormatError(f"{name}: the archive expands beyond {self.limits.max_expanded_bytes} bytes",
                              field="file")

    def add_bytes(self, n: int) -> None:
        """Bytes actually inflated (declared sizes are claims): a bomb stops here, part way."""
        self.expanded += n
        if self.expanded > self.limits.max_expanded_bytes:
            raise FormatError(f"{self.current}: the archive expands beyond {self.limits.max_expanded_bytes} bytes",
                              field="file")

    def add_pixels(self, name: str, width: int, height: int) -> None:
        if width * height > self.limits.max_image_pixels:
            raise FormatError(f"{name}: {width}x{height} is over the {self.limits.max_image_pixels}-pixel limit for "
                              "one image", field="file")
        self.pixels += width * height
        if self.pixels > self.limits.max_total_pixels:
            raise FormatError(f"{name}: the archive's images exceed {self.limits.max_total_pixels} pixels in total",
                              field="file")


@dataclass(frozen=True)
class _Entry:
    """A member the layout sees (a file or a folder; hidden ones never get here)."""

    name: str  # as stored
    parts: tuple[str, ...]  # the normalised path ("./" and empty components dropped)
    is_dir: bool


# -------------------------------------------------------------------------------------------------- member names


def _parts(name: str) -> tuple[str, ...]:
    """The path's components; a name that could point outside the archive (or is not text) is refused, even for a
    member that would be skipped: nothing is extracted, but such an archive is hostile."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{ascii(name)}: a member name that is not UTF-8", field="file") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise FormatError(f"{ascii(name)}: a member name with control characters", field="file")
    if name.startswith("/") or "\\" in name or _DRIVE.match(name):
        raise FormatError(f"{name}: an absolute path (or a backslash): member paths must be relative", field="file")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise FormatError(f"{name}: a '..' component would point outside the archive", field="file")
    return parts


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


class _Seen:
    """Member paths met so far (normalised: `./a` and `a` are the same file): one archive, one of each."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def add(self, name: str, parts: tuple[str, ...]) -> None:
        key = "/".join(parts)
        if key in self.names:
            other = self.names[key]
            both = name if other == name else f"{name} and {other}"
            raise FormatError(f"{both}: the archive holds this member twice", field="file")
        self.names[key] = name


def _entry(name: str, is_dir: bool, seen: _Seen) -> _Entry | None:
    """The entry the layout sees, or None for one it skips (hidden, `__MACOSX/`, the archive's root folder)."""
    parts = _parts(name)
    if not parts:
        if is_dir:
            return None
        raise FormatError(f"{name}: a file without a name", field="file")
    if not is_dir:
        seen.add(name, parts)
    if _hidden(parts):
        return None
    if not is_dir and _extension(name) not in EXTENSIONS:
        raise FormatError(f"{name}: not a .png, .jpg, .jpeg or .webp image", field="file")
    return _Entry(name, parts, is_dir)


def _read(stream: IO[bytes], size: int, name: str, count: Callable[[int], None] | None = None) -> bytes:
    """Exactly `size` bytes of one member, in slices (`count` sees each slice as it is inflated)."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(min(_READ_BYTES, size - len(buf)))
        if not chunk:
            raise FormatError(f"{name}: the archive ends inside this member (truncated)", field="file")
        if count is not None:
            count(len(chunk))
        buf += chunk
    return bytes(buf)


# ----------------------------------------------------------------------------------------------------------- tar


class _CorruptTarHeader(Exception):
    """Raised inside tarfile (which would otherwise end the archive quietly at a corrupt header)."""


class _TarInfo(tarfile.TarInfo):
    """tarfile's header parsing with two refusals: a corrupt header after the first is an error, not the end of the
    archive (tarfile stops silently there, dropping every later member), and a pax or GNU long-name header is capped
    before tarfile reads it whole into memory."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            info = super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as e:
            if not bytes(buf).strip(b"\x00"):
                raise  # an empty or zero block: the end of the archive
            raise _CorruptTarHeader(str(e)) from None
        if info.type in _TAR_META_TYPES and info.size > _MAX_TAR_META_BYTES:
            raise FormatError(f"{info.name}: a {info.size}-byte tar metadata header", field="file")
        return info


class _Reads(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Counted:
    """The tar stream as inflated: every byte tarfile reads counts towards the archive's expansion limit, so a gzip
    bomb is cut off as it inflates (skipped members included), whatever its headers declare."""

    def __init__(self, raw: _Reads, budget: _Budget):
        self.raw, self.budget = raw, budget

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.budget.add_bytes(len(data))
        return data


def _tar_kind(info: tarfile.TarInfo) -> str | None:
    """What a member is if it cannot be read as a file or a folder (None: it can)."""
    if info.issym():
        return "a symbolic link"
    if info.islnk():
        return "a hard link"
    if info.ischr() or info.isblk():
        return "a device file"
    if info.isfifo():
        return "a fifo"
    if info.isdir() or info.type in _TAR_FILE_TYPES:
        return None
    return f"not a regular file (tar type {info.type!r})"


def _tar_entries(f: BinaryIO, gz: bool, budget: _Budget, read: bool) -> Iterator[tuple[_Entry, bytes | None]]:
    raw: _Reads = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
    stream = _Counted(raw, budget)
    seen = _Seen()
    try:
        tf = tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|", tarinfo=_TarInfo)
    except _CorruptTarHeader as e:
        raise FormatError(f"{budget.current}: not a tar archive ({e})", field="file") from None
    while True:
        try:
            info = tf.next()
        except _CorruptTarHeader as e:
            raise FormatError(f"{budget.current}: the tar header after this member is corrupt ({e})",
                              field="file") from None
        if info is None:
            return
        cast(Any, tf).members.clear()  # stream mode would otherwise keep every header read (typeshed omits it)
        budget.member(info.name)
        kind = _tar_kind(info)
        if kind is not None:
            raise FormatError(f"{info.name}: {kind}: only files and folders are read", field="file")
        budget.declared(info.name, info.size, cap=False)  # a bomb stops at its header, before it inflates
        entry = _entry(info.name, info.isdir(), seen)
        if entry is None or entry.is_dir:
            if entry is not None:
                yield entry, None
            continue
        budget.declared(info.name, info.size)
        data = None
        if read:
            member = tf.extractfile(info)
            assert member is not None  # a regular file
            data = _read(member, info.size, info.name)
        yield entry, data


# ----------------------------------------------------------------------------------------------------------- zip


def _zip_precount(f: BinaryIO, max_members: int) -> None:
    """Count the central directory's entries before zipfile builds an object for each (an entry bomb's millions
    would sit in memory first). A directory this cannot follow is left to zipfile, which counts it again."""
    end = f.seek(0, os.SEEK_END)
    f.seek(end - min(end, 22 + 0xFFFF))
    tail = f.read()
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or i + 22 > len(tail):
        return
    cd_size, cd_offset = struct.unpack("<II", tail[i + 12 : i + 20])
    if 0xFFFFFFFF in (cd_size, cd_offset):  # zip64: the sizes are in the zip64 end record
        j = i - 20
        if j < 0 or tail[j : j + 4] != b"PK\x06\x07":
            return
        f.seek(struct.unpack("<Q", tail[j + 8 : j + 16])[0])
        rec = f.read(56)
        if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
            return
        cd_size, cd_offset = struct.unpack("<QQ", rec[40:56])
    f.seek(cd_offset)
    pos = count = 0
    while pos + 46 <= cd_size:
        head = f.read(46)
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            return
        n_name, n_extra, n_comment = struct.unpack("<HHH", head[28:34])
        count += 1
        if count > max_members:
            name = f.read(n_name).decode("utf-8", "replace")
            raise FormatError(f"{name}: the archive holds more than {max_members} entries", field="file")
        f.seek(n_name + n_extra + n_comment, os.SEEK_CUR)
        pos += 46 + n_name + n_extra + n_comment


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    mode = stat.S_IFMT(info.external_attr >> 16)  # the Unix mode, where the archiver stored one
    if mode == stat.S_IFLNK:
        return "a symbolic link"
    if mode in (stat.S_IFCHR, stat.S_IFBLK):
        return "a device file"
    if mode == stat.S_IFIFO:
        return "a fifo"
    if mode not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"not a regular file (mode {mode:o})"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # zipfile inflates bzip2 and LZMA a whole read at a time with no cap on the output (~900 GB from 1 MiB of
        # bzip2); stored and deflate are read with a bounded output, so they alone are accepted
        return f"compressed with method {info.compress_type}: only stored and deflate members are read"
    return None


def _zip_entries(f: BinaryIO, budget: _Budget, read: bool) -> Iterator[tuple[_Entry, bytes | None]]:
    _zip_precount(f, budget.limits.max_members)
    f.seek(0)
    zf = zipfile.ZipFile(f)
    infos = zf.infolist()
    declared = 0
    for info in infos:  # the whole archive's claims first: refused before anything inflates
        declared += info.file_size
        if declared > budget.limits.max_expanded_bytes:
            raise FormatError(f"{info.filename}: the archive expands beyond {budget.limits.max_expanded_bytes} "
                              "bytes", field="file")
    seen = _Seen()
    for info in infos:
        budget.member(info.filename)
        kind = _zip_kind(info)
        if kind is not None:
            raise FormatError(f"{info.filename}: {kind}: only files and folders are read", field="file")
        is_dir = info.is_dir() or stat.S_IFMT(info.external_attr >> 16) == stat.S_IFDIR
        entry = _entry(info.filename, is_dir, seen)
        if entry is None or entry.is_dir:
            if entry is not None:
                yield entry, None
            continue
        budget.declared(info.filename, info.file_size)
        data = None
        if read:
            with zf.open(info) as member:
                data = _read(member, info.file_size, info.filename, budget.add_bytes)
                if member.read(1):  # zipfile stops at the declared size already: this says so, whatever it does
                    raise FormatError(f"{info.filename}: expands beyond its declared size", field="file")
        yield entry, data


# ------------------------------------------------------------------------------------------------------- members


def sniff_container(head: bytes) -> Container | None:
    """What the first 512 bytes say the file is: a gzip stream, a zip or a tar (None: none of them)."""
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _container(f: BinaryIO, filename: str) -> Container:
    """By content, not by name: a renamed archive is read as what it is; anything else is refused."""
    f.seek(0)
    head = f.read(512)
    f.seek(0)
    found = sniff_container(head)
    if found is None:
        raise FormatError(f"{filename}: not a .tar, .tar.gz or .zip archive (unrecognised content)", field="file")
    return found


def _entries(f: BinaryIO, filename: str, budget: _Budget, read: bool) -> Iterator[tuple[_Entry, bytes | None]]:
    """Every file and folder the layout sees, in archive order, each after the checks its header allows (and, with
    `read`, a file's bytes: one member in memory at a time)."""
    container = _container(f, filename)
    walk = _zip_entries(f, budget, read) if container == "zip" else _tar_entries(f, container == "tar.gz", budget,
                                                                                 read)
    try:
        yield from walk
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad CRC, corrupt deflate or gzip data, a cut stream: the user's file
        raise FormatError(f"{budget.current}: not readable as part of a {container} archive ({e})",
                          field="file") from None


def _image(entry: _Entry, data: bytes, budget: _Budget) -> ImageHeader:
    """The image's header, after its bytes are found to be what its extension says."""
    want = EXTENSIONS[_extension(entry.name)]
    got = sniff(data)
    if got != want:
        what = "unrecognised bytes" if got is None else f"the bytes are a {got.upper()}"
        raise FormatError(f"{entry.name}: not a {want.upper()} image ({what})", field="file")
    header = read_header(data, entry.name)
    budget.add_pixels(entry.name, header.width, header.height)
    return header


@dataclass(frozen=True)
class _Place:
    role: Role
    class_name: str
    stem: str


@dataclass
class _Layout:
    """Where each file sits: its role, class and stem (by normalised path), decided from the names alone."""

    places: dict[tuple[str, ...], _Place]
    classes: list[str]
    roles: frozenset[str]


def _is_twin(tops: set[str]) -> bool:
    return "x" in tops and tops <= TWIN_ROLES


def _layout(entries: list[_Entry], filename: str) -> _Layout:
    files = [e for e in entries if not e.is_dir]
    if not files:
        raise FormatError(f"{filename}: the archive holds no images", field="file")
    tops = {e.parts[0] for e in entries}
    # one enclosing folder (`images/<class>/<file>`) is stripped; one holding files is a class (a one-class archive)
    strip = int(len(tops) == 1 and not _is_twin(tops) and all(len(e.parts) >= 3 for e in files))
    roots = {e.parts[strip] for e in entries if len(e.parts) > strip}
    twin = _is_twin(roots)
    depth = 3 if twin else 2
    shape = ("<x|x_orig|mask>/" if twin else "") + "<class>/<file>"
    if strip:
        shape = f"{files[0].parts[0]}/{shape}"
    places: dict[tuple[str, ...], _Place] = {}
    names: dict[tuple[str, str, str], str] = {}  # (role, class, stem) -> member name
    class_dirs: dict[tuple[str, str], str] = {}
    for e in entries:
        p = e.parts[strip:]
        if e.is_dir:
            if len(p) >= depth:
                raise FormatError(f"{e.name}: a folder nested deeper than the layout ({shape})", field="file")
            if len(p) == depth - 1:
                class_dirs.setdefault((p[0] if twin else "x", p[-1]), e.name)
            continue
        if len(p) < depth:
            raise FormatError(f"{e.name}: not inside a class folder (the layout is {shape})", field="file")
        if len(p) > depth:
            raise FormatError(f"{e.name}: nested deeper than the layout ({shape})", field="file")
        role = cast(Role, p[0] if twin else "x")
        place = _Place(role, p[-2], p[-1].rsplit(".", 1)[0])
        key = (role, place.class_name, place.stem)
        if key in names:
            raise FormatError(f"{e.name} and {names[key]}: two images with one name in a class folder (the "
                              "extension aside)", field="file")
        names[key] = e.name
        places[e.parts] = place
    filled = {(r, c) for r, c, _ in names}
    for folder, name in class_dirs.items():
        if folder not in filled:
            raise FormatError(f"{name}: an empty class folder", field="file")
    roles = frozenset(roots) if twin else frozenset({"x"})
    x = {(c, s): name for (r, c, s), name in names.items() if r == "x"}
    if not x:
        raise FormatError(f"{filename}: the archive holds no images under x/", field="file")
    for other in sorted(roles - {"x"}):
        twins = {(c, s): name for (r, c, s), name in names.items() if r == other}
        for (c, s), name in x.items():
            if (c, s) not in twins:
                raise FormatError(f"{name}: no {other} twin ({other}/{c}/{s}.*)", field="file")
        for (c, s), name in twins.items():
            if (c, s) not in x:
                raise FormatError(f"{name}: a {other} image without its x image (x/{c}/{s}.*)", field="file")
    return _Layout(places, sorted({c for c, _ in x}), roles)


class _Twins:
    """x_orig and mask images must have their x image's size; checked as soon as both of a pair are seen."""

    def __init__(self) -> None:
        self.x: dict[tuple[str, str], Member] = {}
        self.waiting: dict[tuple[str, str], list[Member]] = {}

    def add(self, m: Member) -> None:
        key = (m.class_name, m.stem)
        if m.role == "x":
            self.x[key] = m
            for twin in self.waiting.pop(key, []):
                self._same(m, twin)
        elif key in self.x:
            self._same(self.x[key], m)
        else:
            self.waiting.setdefault(key, []).append(m)

    @staticmethod
    def _same(x: Member, twin: Member) -> None:
        if (x.width, x.height) != (twin.width, twin.height):
            raise FormatError(f"{twin.name} is {twin.width}x{twin.height} but its x image {x.name} is "
                              f"{x.width}x{x.height}", field="file")


def _member(entry: _Entry, place: _Place | None, header: ImageHeader) -> Member:
    if place is None:  # iter_archive's second pass met a file its first did not
        raise FormatError(f"{entry.name}: the archive changed while it was read", field="file")
    return Member(entry.name, place.role, place.class_name, place.stem, header.format, header.width, header.height,
                  header.channels)


# ------------------------------------------------------------------------------------------------------- readers


def is_archive_name(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def scan_archive(src: BinaryIO, filename: str, limits: ArchiveLimits = ArchiveLimits(),
                 resize: bool = False) -> ArchiveSummary:
    """Check the whole archive (see the module docstring) in bounded memory; FormatError(reason naming the member,
    field="file") on the first problem. `resize`: the import asks for a resize/crop, so mixed sizes are fine."""
    container = _container(src, filename)
    budget = _Budget(limits, filename)
    entries: list[_Entry] = []
    headers: dict[tuple[str, ...], ImageHeader] = {}
    for entry, data in _entries(src, filename, budget, read=True):
        entries.append(entry)
        if data is not None:
            headers[entry.parts] = _image(entry, data, budget)
    layout = _layout(entries, filename)
    twins = _Twins()
    members = [_member(e, layout.places.get(e.parts), headers[e.parts]) for e in entries if not e.is_dir]
    for m in members:
        twins.add(m)
    xs = [m for m in members if m.role == "x"]
    first = xs[0]
    odd = next((m for m in xs if (m.width, m.height) != (first.width, first.height)), None)
    if odd is not None and not resize:
        raise FormatError(f"{odd.name} is {odd.width}x{odd.height} but {first.name} is {first.width}x{first.height}: "
                          "images must share one size unless the import resizes them", field="file")
    counts = {c: 0 for c in layout.classes}
    for m in xs:
        counts[m.class_name] += 1
    formats: dict[str, int] = {}
    for m in members:  # every image (x, x_orig and mask)
        formats[m.format] = formats.get(m.format, 0) + 1
    return ArchiveSummary(container=container, n=len(xs), classes=layout.classes, counts=counts,
                          size=None if odd is not None else (first.height, first.width),
                          channels=1 if all(m.channels == 1 for m in xs) else 3,
                          has_x_orig="x_orig" in layout.roles, has_mask="mask" in layout.roles, pixels=budget.pixels,
                          formats=dict(sorted(formats.items())))


def iter_archive(src: BinaryIO, filename: str,
                 limits: ArchiveLimits = ArchiveLimits()) -> Iterator[tuple[Member, bytes]]:
    """Each image member with its bytes, in archive order, under the same checks as scan_archive (one member's
    bytes in memory at a time)."""
    # a first pass over the names decides the layout (and refuses a bad one) before any member is handed out; the
    # second reads each member, with the same checks, and pairs twins as they come
    entries = [entry for entry, _ in _entries(src, filename, _Budget(limits, filename), read=False)]
    layout = _layout(entries, filename)
    budget, twins = _Budget(limits, filename), _Twins()
    for entry, data in _entries(src, filename, budget, read=True):
        if data is None:
            continue
        member = _member(entry, layout.places.get(entry.parts), _image(entry, data, budget))
        twins.add(member)
        yield member, data
