"""File references in an edit request (`editaudit edits submit edit.json`): a value that starts with `@` names a file
relative to the JSON file, uploaded before the request is sent, and replaced by the id the API answers.

    {"model_id": "@model.safetensors",          # uploaded with the spec in model.json (same stem, .json)
     "edit_set": "@edit-set.npz", "generalization_set": "@generalization-set.npz",
     "test_set": "builtin:digits-test", ...,
     "hyperparams": {"locality_set": "@keep.npz"}}

The fields: `model_id`, `edit_set`, `generalization_set`, `test_set`, `locality_set`, and in `hyperparams` (at any
depth) every key ending in `_set` (`reference_set`, `locality_set`). The API answers an identical upload with the
existing id, so submitting the same file again uploads nothing new. The same file named twice is uploaded once."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from editaudit.client import Client

TOP_FIELDS = ("model_id", "edit_set", "generalization_set", "test_set", "locality_set")


class RefError(click.UsageError):
    """A reference to a file that is missing, or a model without its spec: a usage error (exit 4)."""


def _slots(body: dict[str, Any]) -> Iterator[tuple[dict, str, str]]:
    """(container, key, dotted path) of every place a file reference may stand."""
    for key in TOP_FIELDS:
        if key in body:
            yield body, key, key

    def walk(d: dict, prefix: str) -> Iterator[tuple[dict, str, str]]:
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}.{k}")
            elif isinstance(k, str) and k.endswith("_set"):
                yield d, k, f"{prefix}.{k}"

    if isinstance(body.get("hyperparams"), dict):
        yield from walk(body["hyperparams"], "hyperparams")


def references(body: dict[str, Any]) -> dict[str, str]:
    """dotted field -> the file it references (as written, without the `@`)."""
    return {path: c[k][1:] for c, k, path in _slots(body) if isinstance(c[k], str) and c[k].startswith("@")}


def model_spec_path(weights: Path) -> Path:
    """`model.safetensors` -> `model.json`: the spec uploaded with it."""
    return weights.with_suffix(".json")


def resolve(body: dict[str, Any], base: Path, api: Client, log: Callable[[str], None] = lambda _: None,
            body_file: Path | None = None) -> dict[str, Any]:
    """A copy of `body` with every `@file` uploaded and replaced by its id; `base` is the folder paths are relative
    to (the JSON file's). Missing files are a RefError before anything is uploaded."""
    import json

    out = copy.deepcopy(body)
    slots = [(c, k, path) for c, k, path in _slots(out) if isinstance(c[k], str) and c[k].startswith("@")]
    files: dict[str, Path] = {}
    for c, k, path in slots:
        f = base / c[k][1:]
        if not c[k][1:] or not f.is_file():
            raise RefError(f"{path}: {c[k]!r}: no such file (paths are relative to {base or '.'})")
        if k == "model_id":
            spec = model_spec_path(f)
            if not spec.is_file() or (body_file is not None and spec.resolve() == body_file.resolve()):
                raise RefError(f"{path}: {c[k]!r} needs its model spec in {spec.name} beside it (same name, .json): "
                               '{"arch": ..., "num_classes": ..., "input_shape": [C, H, W]}')
        files[c[k]] = f
    ids: dict[str, str] = {}
    for c, k, path in slots:
        ref = c[k]
        if ref not in ids:
            f = files[ref]
            if k == "model_id":
                spec_file = model_spec_path(f)
                try:
                    spec = json.loads(spec_file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as e:
                    raise RefError(f"{path}: cannot read the model spec {spec_file}: {e}") from None
                if not isinstance(spec, dict):
                    raise RefError(f"{path}: the model spec {spec_file} must be a JSON object")
                model = api.upload_model(f, spec)
                ids[ref] = model["id"]
                log(f"uploaded {f} (spec {spec_file.name}): model {model['id']} ({model['arch']}, sha256 "
                    f"{model['sha256'][:12]}…)")
            else:
                ds = api.upload_dataset(f)
                ids[ref] = ds["id"]
                log(f"uploaded {f}: dataset {ds['id']} (n={ds['n']}, sha256 {ds['sha256'][:12]}…)")
        c[k] = ids[ref]
    return out
