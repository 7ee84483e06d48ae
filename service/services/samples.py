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


def _read(store: ObjectStore, key: str, parse, load: bool = True):
    """`parse` of the object at `key` (or, with load False, of nothing: a value derived from other cached ones),
    kept in this process's cache."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    table = parse(store.get(key) if load else None)
    with _LOCK:
        _CACHE[key] = table
        while len(_CACHE) > 1 and (len(_CACHE) > CACHED_FILES or
                                   sum(getattr(t, "nbytes", 0) for t in _CACHE.values()) > CACHED_BYTES):
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


def block(store: ObjectStore, audit: db.Audit, split: str, condition: str):
    """One (split, condition) of the audit's file, checked to exist (422 naming the field), cut once per process."""
    key = need(audit, "samples_key")
    check_condition(store, audit, split, condition)
    return _read(store, f"{key}#{split}/{condition}",
                 lambda _: samples_file.block_table(outcomes(store, audit), split, condition), load=False)


def conditions(store: ObjectStore, audit: db.Audit) -> dict[str, list[str]]:
    key = need(audit, "samples_key")
    return _read(store, f"{key}#conditions", lambda _: samples_file.conditions(outcomes(store, audit)), load=False)


def images(store: ObjectStore, audit: db.Audit):
    return _read(store, need(audit, "images_key"), samples_file.read_images)


def check_condition(store: ObjectStore, audit: db.Audit, split: str, condition: str) -> None:
    """422 naming the field when the audit has no such split or condition (with the valid ones)."""
    conds = conditions(store, audit)
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
