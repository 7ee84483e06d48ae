"""The modules an edit may name in `layers`, and what its names and globs resolve to (torch-free).

A model's module table lists every module that owns a parameter directly (name, type, weight shape, parameter
count, and for a Linear / Conv2d what `rewrite` matches there). It comes from the architecture manifest for a
registered architecture, and from the worker's ingest check (`models.info["modules"]`) for timm and Hugging Face
models. `layers` entries are resolved against it:

- a module's exact path: itself (`layer4.1.conv2`, `blocks.11.mlp.fc2`);
- a block's path (`layer4`, `blocks.11`): the block, meaning all of its parameters for methods that take many;
- a glob (`layer4.1.*`, `blocks.*.mlp.fc2`): every parameter-owning module it matches, in the model's order;
- a module's name in the checkpoint where the library renamed it (transformers 5 builds a ViT's
  `vit.encoder.layer.1.intermediate.dense` as `vit.layers.1.mlp.fc1`): the module (its row's `checkpoint_name`).

A name or glob that matches nothing is an error naming it. The resolved list is what the edit row stores, so the
row says exactly which modules ran.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from editaudit.core import arch_manifest

GLOB = set("*?[")


@dataclass
class LayerError(ValueError):
    reason: str
    index: int
    closest: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.reason


def module_table(arch: str, spec: dict, info: dict | None) -> list[dict]:
    """Every parameter-owning module: {name, type, weight_shape, parameters, rewrite}."""
    if info and info.get("modules") is not None:
        return list(info["modules"])
    table = arch_manifest.layer_table(arch, spec["num_classes"], spec["input_shape"][0])
    return [{**row, "rewrite": arch_manifest.rewrite_kind(arch, row["name"])} for row in table]


def blocks(table: list[dict]) -> list[str]:
    """Paths of modules that hold others (every proper dot-prefix of a parameter-owning module's path)."""
    out: dict[str, None] = {}
    for row in table:
        parts = row["name"].split(".")
        for i in range(1, len(parts)):
            out[".".join(parts[:i])] = None
    return list(out)


def resolve(patterns: list[str], table: list[dict]) -> list[str]:
    """The modules `patterns` name, each once, in the order given (a glob's matches in the model's order)."""
    owning = [row["name"] for row in table]
    known = set(owning) | set(blocks(table))
    aliases = {row["checkpoint_name"]: row["name"] for row in table if row.get("checkpoint_name")}
    out: dict[str, None] = {}
    for i, pattern in enumerate(patterns):
        if GLOB & set(pattern):
            hits = [name for name in owning if fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise LayerError(f"layer pattern {pattern!r} matches no module", i,
                                 arch_manifest.closest(pattern.replace("*", ""), owning))
            out.update(dict.fromkeys(hits))
        elif pattern in known:
            out[pattern] = None
        elif pattern in aliases:  # the checkpoint's name of a module the library renamed (transformers 5)
            out[aliases[pattern]] = None
        else:
            raise LayerError(f"unknown layer {pattern!r}", i, arch_manifest.closest(pattern, sorted(known)))
    return list(out)


def row_of(table: list[dict], name: str) -> dict | None:
    """The module's row, or None for a block (or an unknown name)."""
    return next((row for row in table if row["name"] == name), None)
