"""An audit's per-sample outcomes as Parquet: one row per (split, condition, sample) with both models' predictions.

The worker writes it once per audit and computes every statistic from it (worker/ml/audit/outcomes.py); the API
lists the samples an edit broke or fixed from it (`GET /audits/{id}/samples`). Torch-free (pyarrow, numpy), so both
sides read the same file the same way.

Columns: `split`, `condition` (`clean`, `adv.<attack id>`, `corruption.<type>.<severity>`: editaudit.contracts.
metrics.condition), `position` (the sample's place among the split's audited samples, the order statistics use),
`index` (its index in the whole split as uploaded: what `/samples/{index}/image` takes), `label` (for edit and
generalization splits: the edit target), `baseline_pred`, `candidate_pred`, `baseline_correct`, `candidate_correct`.

The images file beside it keeps the inputs of the first flipped samples of each condition (`kept` per direction) as
PNG: `split`, `condition`, `index`, `position`, `direction` (broken | fixed), `png`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMAT = "editaudit-samples/1"
Flipped = Literal["broken", "fixed"]

SCHEMA = pa.schema([
    ("split", pa.dictionary(pa.int8(), pa.string())),
    ("condition", pa.dictionary(pa.int16(), pa.string())),
    ("position", pa.int32()),
    ("index", pa.int64()),
    ("label", pa.int64()),
    ("baseline_pred", pa.int64()),
    ("candidate_pred", pa.int64()),
    ("baseline_correct", pa.bool_()),
    ("candidate_correct", pa.bool_()),
], metadata={"format": FORMAT})

IMAGES_SCHEMA = pa.schema([
    ("split", pa.string()),
    ("condition", pa.string()),
    ("index", pa.int64()),
    ("position", pa.int32()),
    ("direction", pa.string()),
    ("png", pa.binary()),
], metadata={"format": FORMAT})


@dataclass(frozen=True)
class Block:
    """One (split, condition) of the file: both models' predictions for the split's audited samples, in order."""

    split: str
    condition: str
    index: np.ndarray  # int64: index in the whole split
    label: np.ndarray
    baseline: np.ndarray
    candidate: np.ndarray


def write(blocks: list[Block]) -> bytes:
    """The Parquet file of `blocks` (row groups of about a million rows; zstd)."""
    cols: dict[str, list[np.ndarray]] = {f.name: [] for f in SCHEMA}
    for b in blocks:
        n = len(b.label)
        if not (len(b.index) == len(b.baseline) == len(b.candidate) == n):
            raise ValueError(f"{b.split}/{b.condition}: columns of unequal length")
        cols["split"].append(np.full(n, b.split, dtype=object))
        cols["condition"].append(np.full(n, b.condition, dtype=object))
        cols["position"].append(np.arange(n, dtype=np.int32))
        cols["index"].append(np.asarray(b.index, dtype=np.int64))
        cols["label"].append(np.asarray(b.label, dtype=np.int64))
        cols["baseline_pred"].append(np.asarray(b.baseline, dtype=np.int64))
        cols["candidate_pred"].append(np.asarray(b.candidate, dtype=np.int64))
        cols["baseline_correct"].append(np.asarray(b.baseline) == np.asarray(b.label))
        cols["candidate_correct"].append(np.asarray(b.candidate) == np.asarray(b.label))
    arrays = []
    for field in SCHEMA:
        parts = cols[field.name]
        values = np.concatenate(parts) if parts else np.array([], dtype=object if field.name in (
            "split", "condition") else np.int64)
        arr = pa.array(values, type=field.type.value_type if pa.types.is_dictionary(field.type) else field.type)
        arrays.append(arr.dictionary_encode().cast(field.type) if pa.types.is_dictionary(field.type) else arr)
    return _parquet(pa.Table.from_arrays(arrays, schema=SCHEMA), compression="zstd", row_group_size=1 << 20)


def _parquet(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def _checked(data: bytes | str, what: str) -> pa.Table:
    table = pq.read_table(io.BytesIO(data) if isinstance(data, bytes) else data)
    if (table.schema.metadata or {}).get(b"format") != FORMAT.encode():
        raise ValueError(f"not an {FORMAT} {what}")
    return table


def read(data: bytes | str) -> pa.Table:
    """The table of a per-sample file (bytes, or a path), checked to be one."""
    return _checked(data, "file")


def _labels(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A string column as (int code per row, the strings): decoded once per distinct value, not once per row."""
    encoded = column.combine_chunks()
    if not pa.types.is_dictionary(encoded.type):
        encoded = encoded.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def blocks(table: pa.Table) -> Iterator[Block]:
    """The file's (split, condition) blocks in the order they were written, rows by position. Vectorised: a file of
    50k samples x 80 conditions is cut in well under a second (the API's reports read it too)."""
    if not len(table):
        return
    split, split_names = _labels(table.column("split"))
    cond, cond_names = _labels(table.column("condition"))
    position = table.column("position").to_numpy()
    cols = {c: table.column(c).to_numpy() for c in ("index", "label", "baseline_pred", "candidate_pred")}
    change = np.flatnonzero((split[1:] != split[:-1]) | (cond[1:] != cond[:-1])) + 1
    starts = [0, *change.tolist()]
    for a, b in zip(starts, [*starts[1:], len(split)], strict=True):
        order = np.argsort(position[a:b], kind="stable") + a
        yield Block(split_names[split[a]], cond_names[cond[a]], cols["index"][order], cols["label"][order],
                    cols["baseline_pred"][order], cols["candidate_pred"][order])


def conditions(table: pa.Table) -> dict[str, list[str]]:
    """split -> its conditions, as the file has them."""
    out: dict[str, list[str]] = {}
    pairs = pa.Table.from_arrays([table.column("split").cast(pa.string()), table.column("condition").cast(
        pa.string())], names=["split", "condition"]).group_by(["split", "condition"], use_threads=False).aggregate([])
    for s, c in zip(pairs.column("split").to_pylist(), pairs.column("condition").to_pylist(), strict=True):
        out.setdefault(s, []).append(c)
    return out


def block_table(table: pa.Table, split: str, condition: str) -> pa.Table:
    """The rows of one (split, condition), by index, without those two columns: what a page is cut from (the API
    keeps it, so a page costs its own rows, not a pass over the whole file)."""
    mask = pc.and_(pc.equal(table.column("split").cast(pa.string()), split),
                   pc.equal(table.column("condition").cast(pa.string()), condition))
    return table.filter(mask).drop_columns(["split", "condition"]).sort_by("index")


def select(block: pa.Table, flipped: Flipped | None = None, after: int | None = None,
           limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a block_table by index ascending, from after `after`: all of its samples, or those the edit broke
    (baseline right, candidate wrong) or fixed. (rows, the last index when more follow, else None)."""
    rows = block
    if flipped == "broken":
        rows = rows.filter(pc.and_(rows.column("baseline_correct"), pc.invert(rows.column("candidate_correct"))))
    elif flipped == "fixed":
        rows = rows.filter(pc.and_(pc.invert(rows.column("baseline_correct")), rows.column("candidate_correct")))
    if after is not None:  # indices ascend: the page starts past `after`
        rows = rows.slice(int(np.searchsorted(rows.column("index").to_numpy(), after, side="right")))
    page = rows.slice(0, limit).to_pylist()
    return page, (page[-1]["index"] if len(rows) > limit else None)


def write_images(rows: list[dict[str, Any]]) -> bytes:
    """The images file: rows of IMAGES_SCHEMA's fields."""
    return _parquet(pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA), compression="none")  # PNG is compressed


def read_images(data: bytes | str) -> pa.Table:
    return _checked(data, "images file")


def find_image(table: pa.Table, split: str, condition: str, index: int) -> bytes | None:
    """The PNG kept for (split, condition, index), or None when the audit did not keep that one."""
    hit = table.filter(pc.and_(pc.and_(pc.equal(table.column("split"), split),
                                       pc.equal(table.column("condition"), condition)),
                               pc.equal(table.column("index"), index)))
    return hit.column("png")[0].as_py() if len(hit) else None


def kept_indices(table: pa.Table, split: str, condition: str) -> set[int]:
    hit = table.filter(pc.and_(pc.equal(table.column("split"), split), pc.equal(table.column("condition"),
                                                                                  condition)))
    return set(hit.column("index").to_pylist())
