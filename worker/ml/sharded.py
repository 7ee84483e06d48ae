"""Images read lazily from local shard files (editaudit.contracts.formats.shards): a batch reads only its own rows,
with one seek and one `readinto` per run of consecutive rows, straight into the batch's memory; no shard and no
whole set is ever loaded. `subset` makes a view (an index array), reading nothing."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from editaudit.contracts.formats import FormatError, read_safetensors_header
from editaudit.contracts.formats.safetensors_file import read_tensor
from editaudit.contracts.formats.shards import ShardManifest, check_shard_header, parse_manifest
from editaudit.contracts.formats.source import read_into

if TYPE_CHECKING:
    from editaudit.worker.ml.data import TensorDataset


@dataclass(frozen=True)
class ShardFile:
    """One shard's array: its file, where the array's data starts, and its rows."""

    path: Path
    start: int
    rows: int


def sha256_file(path: str | Path) -> str:
    """The file's sha256, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ShardedImages:
    """uint8 images [N,H,W,C] stored across shard files, indexed like the uint8 tensor they stand for: by an int, a
    slice, or indices (tensor, array or list; any order, repeats allowed; a bool mask too), each returning a uint8
    tensor read from disk on the spot."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: Sequence[ShardFile], image_shape: tuple[int, int, int], index: np.ndarray | None = None,
                 shared: dict[str, Any] | None = None):
        self.files = tuple(files)
        h, w, c = (int(s) for s in image_shape)
        self.image_shape: tuple[int, int, int] = (h, w, c)  # (H, W, C)
        self.row_bytes = math.prod(self.image_shape)
        self.starts = np.cumsum([0, *(f.rows for f in self.files)]).astype(np.int64)  # first global row per shard
        self.index = index  # the view's rows as global rows; None: every row in order
        self._shared = {} if shared is None else shared  # one dict for a set and all its views (see keep_alive)

    @property
    def keep_alive(self) -> Any:
        """Whatever must live as long as the files are read (the temporary folder holding them): set on a set or on
        any view of it, held by all of them, so a view taken from a set outlives the set safely."""
        return self._shared.get("keep_alive")

    @keep_alive.setter
    def keep_alive(self, value: Any) -> None:
        self._shared["keep_alive"] = value

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.index is None else len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_shape))

    def __repr__(self) -> str:
        view = ", view" if self.index is not None else ""
        return f"ShardedImages({list(self.shape)}, {len(self.files)} shards{view})"

    # ------------------------------------------------------------------------------------------------- indexing

    def _rows(self, sel) -> np.ndarray | tuple[int, int]:
        """This view's rows at `sel` as global rows: an array, or (start, stop) for a contiguous run."""
        n = len(self)
        if isinstance(sel, slice):
            start, stop, step = sel.indices(n)
            if self.index is None and step == 1:
                return start, max(start, stop)
            rows = np.arange(start, stop, step, dtype=np.int64)
        else:
            if isinstance(sel, torch.Tensor):
                sel = sel.detach().cpu().numpy()
            rows = np.asarray(sel)
            if rows.dtype == np.bool_:
                if rows.shape != (n,):
                    raise IndexError(f"a boolean index must have shape ({n},), got {rows.shape}")
                rows = np.flatnonzero(rows)
            elif rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
                raise IndexError(f"index with an int, a slice or a 1-D array of integers, got {rows.dtype} "
                                 f"{list(rows.shape)}")
            rows = rows.astype(np.int64, copy=False)
            if rows.size and (rows.min() < -n or rows.max() >= n):
                raise IndexError(f"index out of range for {n} images")
            rows = np.where(rows < 0, rows + n, rows)
        return rows if self.index is None else self.index[rows]

    def __getitem__(self, sel) -> torch.Tensor:
        if isinstance(sel, (int, np.integer)) or (isinstance(sel, torch.Tensor) and sel.ndim == 0):
            return self[[int(sel)]][0]
        rows = self._rows(sel)
        if isinstance(rows, tuple):
            out = torch.empty((rows[1] - rows[0], *self.image_shape), dtype=torch.uint8)
            self._read_sorted(np.arange(*rows, dtype=np.int64), out.numpy())
            return out
        out = torch.empty((len(rows), *self.image_shape), dtype=torch.uint8)
        if len(rows) == 0:
            return out
        if len(rows) == 1 or bool((np.diff(rows) > 0).all()):  # increasing: read straight into the batch
            self._read_sorted(rows, out.numpy())
        else:  # any order, repeats: read each row once, in file order, then put them where they were asked
            unique, inverse = np.unique(rows, return_inverse=True)
            buf = np.empty((len(unique), *self.image_shape), dtype=np.uint8)
            self._read_sorted(unique, buf)
            np.take(buf, inverse, axis=0, out=out.numpy())
        return out

    def subset(self, sel) -> ShardedImages:
        """A view of the rows at `sel` (as indexing takes it); reads nothing."""
        rows = self._rows(sel)
        if isinstance(rows, tuple):
            rows = np.arange(*rows, dtype=np.int64)
        return ShardedImages(self.files, self.image_shape, np.ascontiguousarray(rows, dtype=np.int64), self._shared)

    # -------------------------------------------------------------------------------------------------- reading

    def _read_sorted(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Fill `out` with the global `rows` (strictly increasing): one seek + readinto per run of consecutive rows
        in one shard, each file opened once."""
        if not len(rows):
            return
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        cuts = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shard) != 0)) + 1
        bounds = [0, *cuts.tolist(), len(rows)]
        f = None
        current = -1
        try:
            for a, b in zip(bounds[:-1], bounds[1:], strict=False):
                s = int(shard[a])
                sf = self.files[s]
                if s != current:
                    if f is not None:
                        f.close()
                    f = open(sf.path, "rb", buffering=0)  # noqa: SIM115 - closed on the next shard or below
                    current = s
                assert f is not None
                f.seek(sf.start + (int(rows[a]) - int(self.starts[s])) * self.row_bytes)
                read_into(f, out[a:b], f"shard {sf.path.name}")
        finally:
            if f is not None:
                f.close()


def load_sharded(manifest: dict | ShardManifest, shard_paths: Sequence[str | os.PathLike[str]]) -> TensorDataset:
    """A sharded import (its manifest and its shard files, downloaded, in the manifest's order) as a TensorDataset
    whose images stay in the files and are read per batch; y and mask are loaded. Each file is checked once here:
    its size and sha256 (streamed) against the manifest, its header (arrays, dtypes, shapes), labels in
    [0, label_max], mask values 0/1. FormatError(field="manifest") naming the shard otherwise."""
    from editaudit.worker.ml.data import TensorDataset  # data.py imports this module

    m = parse_manifest(manifest)
    paths = [Path(p) for p in shard_paths]
    if len(paths) != len(m.shards):
        raise FormatError(f"{len(paths)} shard files for the manifest's {len(m.shards)} shards", field="manifest")
    xs, origs, ys, masks = [], [], [], []
    for i, (ref, path) in enumerate(zip(m.shards, paths, strict=True)):
        size = path.stat().st_size
        if size != ref.bytes:
            raise FormatError(f"shard {i} ({ref.key}): {size} bytes, the manifest says {ref.bytes}", field="manifest")
        digest = sha256_file(path)
        if digest != ref.sha256:
            raise FormatError(f"shard {i} ({ref.key}): sha256 {digest} differs from the manifest's {ref.sha256}",
                              field="manifest")
        header = read_safetensors_header(path, field="manifest")
        check_shard_header(header, m, i)
        xs.append(ShardFile(path, header["x"].start, ref.n))
        if m.has_x_orig:
            origs.append(ShardFile(path, header["x_orig"].start, ref.n))
        with open(path, "rb") as f:
            ys.append(read_tensor(f, header["y"], "y"))
            if m.has_mask:
                masks.append(read_tensor(f, header["mask"], "mask"))
    y = np.concatenate(ys)
    if y.min() < 0 or y.max() > m.label_max:
        raise FormatError(f"labels lie in [{y.min()}, {y.max()}], outside [0, {m.label_max}]", field="manifest")
    mask = None
    if masks:
        mk = np.concatenate(masks)
        if mk.max() > 1:
            raise FormatError("mask values must be 0 or 1", field="manifest")
        mask = torch.from_numpy(mk.astype(np.float32))
    shared: dict[str, Any] = {}  # x and x_orig read the same files: one keep_alive for both
    return TensorDataset(ShardedImages(xs, m.image_shape, shared=shared), torch.from_numpy(y),
                         ShardedImages(origs, m.image_shape, shared=shared) if m.has_x_orig else None, mask)
