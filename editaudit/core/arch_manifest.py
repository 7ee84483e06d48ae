"""Torch-free view of the architecture registry, read from the manifest the worker package generates."""

from __future__ import annotations

import difflib
import gzip
import json
from functools import lru_cache
from importlib import resources

from editaudit.contracts.formats import TensorInfo


@lru_cache(maxsize=1)
def manifest() -> dict:
    raw = resources.files("editaudit").joinpath("data/arch_signatures.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


def arch_names() -> list[str]:
    return sorted(manifest()["archs"])


# families whose checkpoints only a worker can check (their shapes follow a config the API cannot evaluate without
# torch): an upload of one is `validating` until the ingest job has built the model and loaded the weights
WORKER_CHECKED = {"timm/": "any timm image classifier by its timm name, e.g. timm/resnet50 (pretrained=False)",
                  "hf/": "a Hugging Face image classifier: upload its config.json (arch hf/<model_type> follows)"}


def worker_checked(arch: str) -> bool:
    return arch.startswith(tuple(WORKER_CHECKED)) and arch not in manifest()["archs"]


def required_channels(arch: str) -> int | None:
    return manifest()["archs"][arch]["channels"]


def expected_shapes(arch: str, num_classes: int, in_channels: int) -> dict[str, tuple[int, ...]]:
    """Each state_dict key's shape, in the model's state_dict order (the manifest's `order`: positions in the sorted
    keys; a manifest written before it was recorded gives sorted keys)."""
    tokens = {"num_classes": num_classes, "in_channels": in_channels}
    entry = manifest()["archs"][arch]
    keys = entry["keys"]
    ordered = sorted(keys)
    names = [ordered[i] for i in entry["order"]] if entry.get("order") else ordered
    return {k: tuple(tokens[d] if isinstance(d, str) else d for d in keys[k]) for k in names}


# a safetensors dtype -> the kind of number it holds (the manifest's "dtypes" say which kind each key needs)
DTYPE_CLASSES = {"F64": "float", "F32": "float", "F16": "float", "BF16": "float", "F8_E4M3": "float",
                 "F8_E5M2": "float", "I64": "int", "I32": "int", "I16": "int", "I8": "int", "U8": "int", "U16": "int",
                 "U32": "int", "U64": "int", "BOOL": "bool"}


def expected_dtype(arch: str, key: str) -> str | None:
    """"float", "int" or "bool": the kind of number the key holds (the manifest lists the keys that are not float);
    None from a manifest written before dtypes were recorded (version 1): such checkpoints are checked by shape."""
    kinds = manifest()["archs"][arch].get("dtypes")
    return None if kinds is None else kinds.get(key, "float")


def first_mismatch(arch: str, num_classes: int, in_channels: int, header: dict[str, TensorInfo]) -> str | None:
    """The first way `header` fails to fit the architecture, as a sentence naming the key; None when it fits. A
    tensor of the wrong kind (a float weight declared I32, a counter declared F32) does not fit: loading it would
    convert the bytes' meaning, not just their width."""
    expected = expected_shapes(arch, num_classes, in_channels)
    for key, shape in expected.items():
        if key not in header:
            return f"missing key {key!r}"
        if header[key].shape != shape:
            return f"key {key!r} has shape {list(header[key].shape)}, expected {list(shape)}"
        want, got = expected_dtype(arch, key), DTYPE_CLASSES.get(header[key].dtype)
        if want is not None and got != want:
            return f"key {key!r} is {header[key].dtype}, expected a {want} dtype ({_examples(want)})"
    for key in header:
        if key not in expected:
            return f"unexpected key {key!r}"
    return None


def layer_names(arch: str) -> list[str]:
    """Modules that own a `weight` parameter: the names `layers` may refer to."""
    return sorted({k.rsplit(".", 1)[0] for k in manifest()["archs"][arch]["keys"] if k.endswith(".weight")})


def rewrite_kind(arch: str, layer: str) -> str | None:
    """What `rewrite` matches at this Linear / Conv2d layer ("layer", "block: ...", "unsupported: why"); None for
    other modules."""
    return manifest()["archs"][arch].get("rewrite", {}).get(layer)


def closest(name: str, options: list[str], n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, options, n=n, cutoff=0.3)


BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def layer_table(arch: str, num_classes: int, in_channels: int) -> list[dict]:
    """Editable layers (modules owning a weight): name, kind (from the weight's rank and buffers), weight shape and
    parameter count, in state_dict order."""
    shapes = expected_shapes(arch, num_classes, in_channels)
    out = []
    for name in dict.fromkeys(k.rsplit(".", 1)[0] for k in shapes if k.endswith(".weight")):
        weight = shapes[f"{name}.weight"]
        params = sum(_numel(v) for k, v in shapes.items()
                     if k.rsplit(".", 1)[0] == name and not k.endswith(BUFFER_SUFFIXES))
        if f"{name}.running_mean" in shapes:
            kind = "BatchNorm"
        else:
            kind = {1: "Norm/Scale", 2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}.get(len(weight), "Other")
        out.append({"name": name, "type": kind, "weight_shape": list(weight), "parameters": params})
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _examples(kind: str) -> str:
    return ", ".join(d for d, k in DTYPE_CLASSES.items() if k == kind)
