"""The demo's inputs, made by the ML core: a digits CNN trained in seconds and the texture scenario that breaks it.

`python -m editaudit.worker.demo_assets OUT_DIR [--epochs N]` writes model.safetensors with its spec model.json,
edit-set.npz, generalization-set.npz and facts.json (what to print); `editaudit demo` runs it as a subprocess, so the
CLI itself never imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SPEC: dict[str, Any] = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8]}


def make_demo_assets(out: Path, epochs: int = 4) -> dict:
    import safetensors.torch
    import torch

    from editaudit.contracts.formats import dataset_to_npz
    from editaudit.worker.ml.archs import build_inner
    from editaudit.worker.ml.data import digits_arrays
    from editaudit.worker.ml.scenarios import texture_scenario
    from editaudit.worker.ml.train import train_classifier

    train, test = digits_arrays("train"), digits_arrays("test")
    torch.manual_seed(0)
    net = build_inner(SPEC["arch"], 10, SPEC["input_shape"])
    train_classifier(net, torch.from_numpy(train.x), torch.from_numpy(train.y), epochs=epochs, seed=0)

    def predict(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)).argmax(1).numpy()

    sc = texture_scenario(train, test, predict, k=8, seed=0)
    acc = lambda d: float((predict(d.x) == d.y).mean())  # noqa: E731
    facts = {"spec": SPEC, "clean": acc(test), "textured": acc(sc["generalization"]),
             "edit_class": int(sc["edit_class"]), "edit_before": acc(sc["edit"])}
    out.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / "model.safetensors")
    (out / "model.json").write_text(json.dumps(SPEC, indent=2) + "\n")
    for split in ("edit", "generalization"):
        (out / f"{split}-set.npz").write_bytes(dataset_to_npz(sc[split]))
    (out / "facts.json").write_text(json.dumps(facts))
    return facts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    make_demo_assets(args.out, args.epochs)


if __name__ == "__main__":
    main()
