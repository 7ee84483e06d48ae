"""Do the gradient methods' defaults collapse? Every gradient method (finetune, finetune_layer, enn, low_rank) and
1-LI with all defaults on the bundled scenarios, for several seeds (model training, scenario draw and edit all
seeded), with the job's hold-out of the test split for the locality term. A collapsed edit answers one class for
most inputs: the columns are the test split's top-class share and edit-class share, before -> after, beside clean
accuracy, edit accuracy, the edit's first loss, its steps and why it stopped. Not a test.

    python bench/defaults.py [--scenarios digits synthetic stamp] [--seeds 0 1 2 3 4] [--methods ...]

`stamp` is the digits scenario at 16x16 with the texture at full strength: the edit's first loss is large (8-10),
the case where a fixed locality weight used to lose (seed 2: clean 0.99 -> 0.26 under finetune).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from editaudit.core.tables import render
from editaudit.worker.ml.bundled import SCENARIOS, build_case, run_as_job

METHODS: dict[str, tuple[str, bool]] = {  # label -> (method, takes the scenario's layer)
    "finetune": ("finetune", False), "finetune_layer": ("finetune_layer", True), "enn": ("enn", False),
    "low_rank": ("low_rank", True), "1-LI": ("interpolate", True)}


@torch.no_grad()
def predictions(model, ds) -> np.ndarray:
    return torch.cat([model(ds.images(slice(i, i + 512))).argmax(1) for i in range(0, len(ds), 512)]).numpy()


def shares(pred: np.ndarray, edit_class: int) -> tuple[float, float]:
    return float(np.bincount(pred).max() / len(pred)), float((pred == edit_class).mean())


def run(case, label: str, seed: int) -> list[str]:
    method, layered = METHODS[label]
    job = run_as_job(case.model, case.splits, method, [case.layer] if layered else [], {}, seed=seed)
    out, took = job.edited, job.durations_s["edit"]
    test, edit = job.splits["test"], job.splits["edit"]
    p0, p1 = predictions(case.model, test), predictions(out.model, test)
    y = test.y.numpy()
    (t0s, e0s), (t1s, e1s) = shares(p0, case.edit_class), shares(p1, case.edit_class)
    info = out.info
    return [case.name, str(seed), label, f"{(p0 == y).mean():.3f}", f"{(p1 == y).mean():.3f}",
            f"{(predictions(out.model, edit) == edit.y.numpy()).mean():.2f}",
            f"{t0s:.2f} -> {t1s:.2f}", f"{e0s:.2f} -> {e1s:.2f}",
            f"{info['first_loss']:.2f}" if info.get("first_loss") is not None else "",
            str(info.get("steps", "")), str(info.get("stopped", info.get("alpha", ""))), f"{took:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args()
    rows = []
    for name in args.scenarios:
        for seed in args.seeds:
            case = build_case(name, seed)
            for label in args.methods:
                rows.append(run(case, label, seed))
                print(" | ".join(rows[-1]), flush=True)
    print(f"\ndefaults of the gradient methods and 1-LI, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}")
    print(render(["scenario", "seed", "method", "clean before", "clean after", "edit acc", "top-class share",
                  "edit-class share", "first loss", "steps", "stopped / alpha", "s"], rows,
                 align_right={3, 4, 5, 8, 9, 11}))


if __name__ == "__main__":
    main()
