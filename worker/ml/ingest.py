"""Decode an image-folder archive's members into uint8 shards (editaudit.contracts.formats.shards), in bounded
memory: one shard's buffers plus the image being decoded, whatever the archive's size and member order.

Decoding is Pillow's, as torchvision's ImageFolder + Resize + CenterCrop would do it: `convert("L" | "RGB")` (alpha
dropped, palettes expanded), then, when asked, resize the shorter side (PIL's antialiased filters, torchvision's size
rule) and centre-crop. A JPEG that is to be shrunk is decoded at a reduced DCT scale first (`draft`, at no less than
twice the target size, as Pillow's `thumbnail` does), which is faster and within rounding of a full decode.
Masks are decoded as "L" and binarised (> 127 -> 1).

Every image's size is read from its header and checked against `ArchiveLimits.max_image_pixels` before any pixel is
decoded, with Pillow's own decompression-bomb check set to the same limit while decoding (its warning turned into
an error). A member that does not decode (truncated, corrupt, not what its header said) stops the ingest with an
IngestError naming it.

Pairing x with its x_orig / mask twins (by class and stem) in any archive order, memory bounded all the same:
  * a twin that comes after its x (a tar of `x/` then `x_orig/`) goes into its row of the shard buffer if that
    shard is still being built, else straight into its row of the shard's file, which waits on local disk (not
    stored yet) until its last twin has arrived;
  * a twin that comes before its x (a zip sorted by name: `mask/` before `x/`) is decoded and appended to a spill
    file on local disk, and copied into its row when its x arrives.
So memory holds one shard's buffers (x, and x_orig and mask where the archive has them) and one decoded image, plus
a few dozen bytes of bookkeeping per image (its key); local disk holds the spill file and the written shards still
waiting for twins: in an archive that interleaves x with its twins (or has none), nothing waits at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import ValidationError

from editaudit.contracts.formats.archive import ArchiveLimits, ArchiveSummary, Member
from editaudit.contracts.formats.shards import (
    MANIFEST_VERSION,
    SHARD_BYTES,
    IngestOptions,
    ShardManifest,
    center_crop_box,
    resized_size,
    rows_per_shard,
    write_shard,
)

PutShard = Callable[[Path], tuple[str, str]]  # a finished shard file -> (its key in the store, its sha256)
Progress = Callable[[int, int], None]  # (x images decoded, x images in the archive)
Key = tuple[str, str]  # (class name, stem): how x, x_orig and mask are paired

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC}


class IngestError(ValueError):
    """An archive that cannot become shards; `reason` names the member (or option) at fault."""

    def __init__(self, reason: str, member: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.member = member


@contextlib.contextmanager
def pixel_guard(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb check at `max_pixels` (its warning an error) for the block; restored after."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def decode_image(member: Member, data: bytes, mode: str, opts: IngestOptions, max_pixels: int) -> np.ndarray:
    """One member as uint8 [H, W, C] (C = 1 for mode "L"), resized and cropped as `opts` says. Call it inside
    `pixel_guard`. IngestError naming the member if it does not decode or breaks a limit."""
    name = member.name
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[member.format]]) as img:
            w, h = img.size
            if w * h > max_pixels:  # from the header: nothing decoded yet
                raise IngestError(f"{name}: {w}x{h} pixels, more than the {max_pixels} an image may have", name)
            if (w, h) != (member.width, member.height):
                raise IngestError(f"{name}: the image is {w}x{h}, its header said {member.width}x{member.height}",
                                  name)
            target = resized_size(w, h, opts.resize) if opts.resize is not None else None
            if target is not None and target[0] * target[1] > max_pixels:  # an upscale is a bomb too
                raise IngestError(f"{name}: resizing {w}x{h} to a shorter side of {opts.resize} gives "
                                  f"{target[0]}x{target[1]}, more than the {max_pixels} pixels an image may have",
                                  name)
            box = None
            if target is not None and member.format == "jpeg" and target[0] * 2 <= w and target[1] * 2 <= h:
                drafted = img.draft(None, (target[0] * 2, target[1] * 2))
                if drafted is not None:
                    box = drafted[1]
            out = img.convert(mode)  # decodes (and loads): the only step that touches pixels
        if target is not None:
            out = out.resize(target, _RESAMPLE[opts.interpolation], box=box)
        if opts.crop is not None:
            ch, cw = opts.crop
            if ch > out.height or cw > out.width:
                raise IngestError(f"{name}: a {ch}x{cw} crop does not fit the {out.height}x{out.width} image"
                                  + (" (after resizing)" if target is not None else ""), name)
            top, left = center_crop_box(out.height, out.width, ch, cw)
            out = out.crop((left, top, left + cw, top + ch))
        arr = np.asarray(out, dtype=np.uint8)
    except IngestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's check, set by pixel_guard
        raise IngestError(f"{name}: more pixels than the {max_pixels} an image may have", name) from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds (OSError, SyntaxError, ValueError, bombs)
        raise IngestError(f"{name}: the image does not decode ({type(e).__name__}: {e})", name) from None
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass
class _Waiting:
    """A shard written to local disk whose rows still miss `missing` twins."""

    path: Path
    offsets: dict[str, tuple[int, int]]
    n: int
    missing: int


class _Builder:
    """Places decoded images into shard rows, writes and stores shards (see the module docstring)."""

    def __init__(self, summary: ArchiveSummary, labels: dict[str, int], put_shard: PutShard, tmp: Path,
                 target_bytes: int):
        self.channels = 1 if summary.channels == 1 else 3
        self.roles = [r for r, has in (("x_orig", summary.has_x_orig), ("mask", summary.has_mask)) if has]
        self.labels, self.put_shard, self.tmp, self.target_bytes = labels, put_shard, tmp, target_bytes
        self.hw: tuple[int, int] | None = None  # every image's (H, W), from the first decoded
        self.first: str = ""
        self.rows = 0
        self.buf: dict[str, np.ndarray] = {}
        self.got: dict[str, np.ndarray] = {}  # role -> which rows of the shard being built have their twin
        self.k = 0  # rows filled in the shard being built
        self.index = 0  # its index
        self.placed: dict[Key, tuple[int, int, str]] = {}  # x by key -> (shard, row, member name)
        self.twins_seen: set[tuple[str, Key]] = set()
        self.early: dict[tuple[str, Key], tuple[int, str]] = {}  # twins before their x: spill offset, name
        self.spill: io.BufferedRandom | None = None
        self.waiting: dict[int, _Waiting] = {}
        self.refs: dict[int, dict] = {}
        self.label_max = -1
        self.n = 0

    # -------------------------------------------------------------------------------------------------- checks

    def _check_size(self, member: Member, arr: np.ndarray) -> None:
        hw = (int(arr.shape[0]), int(arr.shape[1]))
        if self.hw is None:
            self.hw, self.first = hw, member.name
        elif hw != self.hw:
            raise IngestError(f"{member.name}: {hw[0]}x{hw[1]} after decoding, but {self.first} is "
                              f"{self.hw[0]}x{self.hw[1]}: every image must have one size (ask for resize and crop)",
                              member.name)

    def _row_bytes(self, role: str) -> int:
        assert self.hw is not None
        return self.hw[0] * self.hw[1] * (1 if role == "mask" else self.channels)

    def _as_row(self, role: str, arr: np.ndarray) -> np.ndarray:
        """A decoded image as stored in `role`'s row: [H,W,C] images, [1,H,W] masks of 0/1."""
        return (arr[..., 0] > 127).astype(np.uint8)[None] if role == "mask" else arr

    # ----------------------------------------------------------------------------------------------- placing

    def add(self, member: Member, arr: np.ndarray) -> None:
        self._check_size(member, arr)
        if member.role == "x":
            self._add_x(member, arr)
        else:
            self._add_twin(member, arr)

    def _add_x(self, member: Member, arr: np.ndarray) -> None:
        key = (member.class_name, member.stem)
        if key in self.placed:
            raise IngestError(f"{member.name}: a second image for {member.class_name}/{member.stem} "
                              f"(the first: {self.placed[key][2]})", member.name)
        if member.class_name not in self.labels:
            raise IngestError(f"{member.name}: class {member.class_name!r} is not one the scan found", member.name)
        if not self.buf:
            self._allocate()
        row = self.k
        label = self.labels[member.class_name]
        self.buf["x"][row] = arr
        self.buf["y"][row] = label
        self.label_max = max(self.label_max, label)
        self.placed[key] = (self.index, row, member.name)
        for role in self.roles:
            self.got[role][row] = False
            early = self.early.pop((role, key), None)
            if early is not None:
                self._unspill(role, early[0], self.buf[role][row])
                self.got[role][row] = True
        self.k += 1
        self.n += 1
        if self.k == self.rows:
            self._flush()

    def _add_twin(self, member: Member, arr: np.ndarray) -> None:
        role = member.role
        if role not in self.roles:
            raise IngestError(f"{member.name}: a {role} image, but the scan found no {role} tree", member.name)
        key = (member.class_name, member.stem)
        if (role, key) in self.twins_seen:
            raise IngestError(f"{member.name}: a second {role} image for {member.class_name}/{member.stem}",
                              member.name)
        self.twins_seen.add((role, key))
        row_arr = self._as_row(role, arr)
        if key not in self.placed:  # before its x: spill to local disk until the x arrives
            if self.spill is None:
                self.spill = open(self.tmp / "early-twins.bin", "w+b")  # noqa: SIM115 - closed in close()
            offset = self.spill.seek(0, os.SEEK_END)
            self.spill.write(np.ascontiguousarray(row_arr).data.cast("B"))
            self.early[role, key] = (offset, member.name)
            return
        shard, row, _ = self.placed[key]
        if shard == self.index:  # its shard is still being built
            self.buf[role][row] = row_arr
            self.got[role][row] = True
            return
        waiting = self.waiting[shard]  # written, waiting for its twins: fill the row in the file
        with open(waiting.path, "r+b") as f:
            f.seek(waiting.offsets[role][0] + row * self._row_bytes(role))
            f.write(np.ascontiguousarray(row_arr).data.cast("B"))
        waiting.missing -= 1
        if waiting.missing == 0:
            self._store(shard, waiting.path, waiting.n)
            del self.waiting[shard]

    def _unspill(self, role: str, offset: int, out: np.ndarray) -> None:
        assert self.spill is not None
        self.spill.seek(offset)
        view = out.data.cast("B")
        got = self.spill.readinto(view)
        assert got == len(view), "the spill file is short"

    # --------------------------------------------------------------------------------------------- shards

    def _allocate(self) -> None:
        assert self.hw is not None
        h, w = self.hw
        c = self.channels
        self.rows = rows_per_shard((h, w, c), self.target_bytes)
        self.buf = {"x": np.zeros((self.rows, h, w, c), np.uint8), "y": np.zeros(self.rows, np.int64)}
        if "x_orig" in self.roles:
            self.buf["x_orig"] = np.zeros((self.rows, h, w, c), np.uint8)
        if "mask" in self.roles:
            self.buf["mask"] = np.zeros((self.rows, 1, h, w), np.uint8)
        self.got = {role: np.zeros(self.rows, bool) for role in self.roles}

    def _flush(self) -> None:
        k = self.k
        if not k:
            return
        path = self.tmp / f"shard-{self.index:05d}.safetensors"
        offsets = write_shard(path, {name: a[:k] for name, a in self.buf.items()})
        missing = sum(int((~self.got[role][:k]).sum()) for role in self.roles)
        if missing:
            self.waiting[self.index] = _Waiting(path, offsets, k, missing)
        else:
            self._store(self.index, path, k)
        self.index += 1
        self.k = 0

    def _store(self, index: int, path: Path, n: int) -> None:
        size = path.stat().st_size
        key, sha256 = self.put_shard(path)
        self.refs[index] = {"key": key, "sha256": sha256, "n": n, "bytes": size}
        path.unlink(missing_ok=True)

    def finish(self) -> None:
        self._flush()
        if self.early:
            (role, _), (_, name) = next(iter(self.early.items()))
            raise IngestError(f"{name}: a {role} image with no x image of the same class and name", name)
        if self.waiting:
            for key, (shard, _, name) in self.placed.items():
                if shard in self.waiting:
                    lacking = [r for r in self.roles if (r, key) not in self.twins_seen]
                    if lacking:
                        raise IngestError(f"{name}: no {' or '.join(lacking)} image of the same class and name",
                                          name)
            raise AssertionError("a shard waits for twins that all arrived")  # pragma: no cover

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def _labels(summary: ArchiveSummary, opts: IngestOptions) -> dict[str, int]:
    if opts.class_to_idx is None:
        return {c: i for i, c in enumerate(summary.classes)}
    unmapped = [c for c in summary.classes if c not in opts.class_to_idx]
    if unmapped:
        raise IngestError(f"class_to_idx gives no label to class folder(s) {unmapped[:5]}")
    return {c: opts.class_to_idx[c] for c in summary.classes}


def decode_to_shards(members: Iterable[tuple[Member, bytes]], summary: ArchiveSummary, options: dict | None,
                     put_shard: PutShard, limits: ArchiveLimits,
                     progress: Progress | None = None, *, workdir: str | Path | None = None,
                     shard_bytes: int = SHARD_BYTES) -> dict:
    """Decode `members` (iter_archive's (Member, bytes), any order) into shards of about `shard_bytes` of x each,
    hand each finished shard file to `put_shard` (which stores it and returns (key, sha256); the file is deleted
    after) and return the manifest (ShardManifest's JSON). `options`: IngestOptions (resize, crop, interpolation,
    class_to_idx). Shards are written under `workdir` (default: the system's temporary directory) first.
    IngestError naming the member or option at fault; shards stored before an error are the caller's to delete."""
    try:
        opts = IngestOptions.model_validate(options or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise IngestError(f"options{'.' + where if where else ''}: {first['msg']}") from None
    labels = _labels(summary, opts)
    mode = "L" if summary.channels == 1 else "RGB"
    every = max(1, summary.n // 100)
    with tempfile.TemporaryDirectory(prefix="ingest-", dir=workdir) as tmp, pixel_guard(limits.max_image_pixels):
        builder = _Builder(summary, labels, put_shard, Path(tmp), shard_bytes)
        try:
            for member, data in members:
                arr = decode_image(member, data, "L" if member.role == "mask" else mode, opts,
                                   limits.max_image_pixels)
                del data
                builder.add(member, arr)
                if progress is not None and member.role == "x" and builder.n % every == 0:
                    progress(builder.n, summary.n)
            builder.finish()
        finally:
            builder.close()
    if builder.n != summary.n:
        raise IngestError(f"the archive holds {builder.n} x images; its scan counted {summary.n}")
    if progress is not None and builder.n % every:
        progress(builder.n, summary.n)
    if builder.hw is None or not builder.n:
        raise IngestError("the archive holds no x images")
    manifest = ShardManifest.model_validate({
        "version": MANIFEST_VERSION, "n": builder.n, "shape": [builder.channels, *builder.hw],
        "classes": list(summary.classes), "class_to_idx": None if opts.class_to_idx is None else labels,
        "label_max": builder.label_max, "has_x_orig": "x_orig" in builder.roles, "has_mask": "mask" in builder.roles,
        "shards": [builder.refs[i] for i in range(builder.index)], "preprocess": opts.record()})
    return manifest.to_json()
