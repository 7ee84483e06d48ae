"""Writes `editaudit/data/arch_signatures.json.gz`: every registered architecture's state_dict keys and shapes, and
for each Linear / Conv2d layer what `rewrite` matches there (`graph.rewrite_kinds`: its output, the residual block's
output, or why it cannot).

The API has no torch, yet must refuse a checkpoint that does not fit its architecture (422 naming the first
mismatching key). It reads this manifest instead. Shapes that follow `num_classes` or the input channel count are
stored as the tokens "num_classes" / "in_channels", found by building each architecture twice on the meta device.
Each key's dtype class is stored too (manifest version 2: "dtypes" lists the keys that are not "float", e.g.
BatchNorm's `num_batches_tracked` -> "int"), so a float32 tensor declared int32 is refused at upload instead of
being loaded as garbage.
A unit test rebuilds it and checks it is current:  python -m editaudit.worker.ml.archs.signatures
"""

from __future__ import annotations

import gzip
import json
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from editaudit.worker.ml.archs import ARCHS
from editaudit.worker.ml.archs.graph import rewrite_kinds
from editaudit.worker.ml.archs.registry import dtype_kind

MANIFEST = Path(str(resources.files("editaudit").joinpath("data/arch_signatures.json.gz")))
_A = {"num_classes": 1013, "in_channels": 7}
_B = {"num_classes": 17, "in_channels": 5}


@contextmanager
def _params_on_meta():
    """Move each parameter to the meta device as it is registered, so weight init costs nothing (some builders,
    e.g. RegNet, compute with real tensors in __init__ and fail under `torch.device("meta")`)."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]  # patched for this block only
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _build(name: str, cfg: dict) -> nn.Module:
    spec = ARCHS[name]
    channels = spec.channels or cfg["in_channels"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                net = spec.builder(cfg["num_classes"], [channels, 64, 64])
        except NotImplementedError:
            with _params_on_meta():
                net = spec.builder(cfg["num_classes"], [channels, 64, 64])
    return net


def _shapes(name: str, cfg: dict) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in _build(name, cfg).state_dict().items()}


def signature(name: str) -> dict:
    a, b = _shapes(name, _A), _shapes(name, _B)
    if list(a) != list(b):
        raise RuntimeError(f"{name}: state_dict keys depend on num_classes/channels")
    keys = {}
    for key, sa in a.items():
        sb = b[key]
        dims: list[int | str] = []
        for da, db in zip(sa, sb, strict=True):  # one tensor's shape in both builds: the same rank
            if da == db:
                dims.append(da)
            else:
                token = next((t for t in _A if _A[t] == da and _B[t] == db), None)
                if token is None:
                    raise RuntimeError(f"{name}.{key}: dimension {da}/{db} follows no known hyperparameter")
                dims.append(token)
        keys[key] = dims
    net = _build(name, _B)
    dtypes = {k: kind for k, v in net.state_dict().items() if (kind := dtype_kind(v.dtype)) != "float"}
    # `keys` is written with sorted keys (a stable file); `order` keeps the state_dict's order (the model's module
    # order: what a layer's depth is read from) as positions in the sorted keys
    position = {k: i for i, k in enumerate(sorted(keys))}
    return {"channels": ARCHS[name].channels, "keys": keys, "order": [position[k] for k in keys], "dtypes": dtypes,
            "rewrite": rewrite_kinds(net)}


def build_manifest() -> dict:
    return {"version": 2, "torch": torch.__version__.split("+")[0], "archs": {n: signature(n) for n in sorted(ARCHS)}}


def write(path: Path = MANIFEST) -> Path:
    data = json.dumps(build_manifest(), separators=(",", ":"), sort_keys=True).encode()
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


if __name__ == "__main__":
    print(f"wrote {write()}")
