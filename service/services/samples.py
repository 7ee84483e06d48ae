"""An audit's per-sample outcomes as the API serves them: pages of the samples an edit broke or fixed under one
condition, with class names, and the kept inputs as PNG. Read from the audit's Parquet files in the store; a file is
immutable (content-addressed), so each process keeps the last few it read."""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict

from editaudit.contracts.formats import samples as samples_file
from editaudit.core import db
from editaudit.core.storage import ObjectStore
from editaudit.service.errors import Problem

_CACHE: OrderedDict[str, object] = OrderedDict()
_LOCK = threading.Lock()
CACHED_FILES = 8
CACHED_BYTES = 256 * 1024**2  # at most this much of decoded tables per API process (the last file is always kept)
MAX_INDEX = 2**62  # sample indices are int64 in the file


def _read(store: ObjectStore, key: str, parse):
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    table = parse(store.get(key))
    with _LOCK:
        _CACHE[key] = table
        while len(_CACHE) > 1 and (len(_CACHE) > CACHED_FILES or
                                   sum(t.nbytes for t in _CACHE.values()) > CACHED_BYTES):  # type: ignore[attr-defined]
            _CACHE.popitem(last=False)
    return table


def need(audit: db.Audit, column: str):
    key = getattr(audit, column)
    if key is None:
        why = "it ran before audits kept them (run the edit again)" if audit.status == "succeeded" else \
            f"it is {audit.status}: only a succeeded audit has them"
        raise Problem(409, f"audit {audit.id} has no per-sample results: {why}", field="audit_id")
    return key


def outcomes(store: ObjectStore, audit: db.Audit):
    return _read(store, need(audit, "samples_key"), samples_file.read)


def images(store: ObjectStore, audit: db.Audit):
    return _read(store, need(audit, "images_key"), samples_file.read_images)


def check_condition(table, split: str, condition: str) -> None:
    """422 naming the field when the audit has no such split or condition (with the valid ones)."""
    conds = samples_file.conditions(table)
    if split not in conds:
        raise Problem(422, f"the audit has no split {split!r}; it has {sorted(conds)}", field="split")
    if condition not in conds[split]:
        raise Problem(422, f"the audit has no condition {condition!r} on {split}; it has {conds[split]}",
                      field="condition")


def encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"sample:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
        if kind != "sample":
            raise ValueError(kind)
        index = int(value)
        if not 0 <= index < MAX_INDEX:
            raise ValueError(index)
        return index
    except (ValueError, UnicodeDecodeError) as e:
        raise Problem(422, "cursor is not one this listing returned", field="cursor") from e


def class_name(names: list[str] | None, label: int) -> str | None:
    return names[label] if names and 0 <= label < len(names) else None
