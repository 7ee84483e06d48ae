"""Edit-method cost: wall time and peak memory of each method on the digits texture scenario (smallcnn @8) and on a
torchvision resnet18 @32 (untrained; textured random images whose target is the prediction on the clean twin), plus
the edit accuracy each reaches; rewrite both closed-form and iterative. Prints a table; not a test.

    python bench/edits.py [--device auto]

Peak memory is the CUDA allocator's peak on a GPU, and the growth of the process's peak RSS on a CPU (a coarse,
monotone figure: methods run in order, so only increases show).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from editaudit.service.tables import render
from editaudit.worker.ml.archs import build_inner, create_model
from editaudit.worker.ml.data import TensorDataset, digits_arrays
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.scenarios import texture, texture_scenario
from editaudit.worker.ml.train import train_classifier

METHODS = [("finetune", [], {}), ("finetune_layer", ["fc"], {}), ("low_rank", ["fc"], {"rank": 1}),
           ("enn", ["fc"], {}), ("interpolate", ["fc"], {}),
           ("rewrite", ["fc"], {"solver": "closed_form"}), ("rewrite", ["fc"], {"solver": "iterative"})]
CONV = {"digits": "features.7", "resnet": "layer4.1.conv2"}  # a conv layer for rewrite: keys are unfolded patches


class TimedMemo(dict):
    """The job's memo, in memory: rewrite's second moment is computed once per (layer, reference data) and its time
    is reported on its own row, so the rewrite rows compare the solvers alone."""

    def __init__(self):
        super().__init__()
        self.seconds = {}

    def __call__(self, name, compute):
        if name not in self:
            t0 = time.perf_counter()
            self[name] = compute()
            self.seconds[name] = time.perf_counter() - t0
        return self[name]


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digits_case():
    tr, te = digits_arrays("train"), digits_arrays("test")
    torch.manual_seed(0)
    net = build_inner("editaudit/smallcnn", 10, [1, 8, 8])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=4)
    model = create_model({"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8]})
    model.net.load_state_dict(net.state_dict())
    model.eval()

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = texture_scenario(tr, te, predict)
    return model, TensorDataset.from_arrays(sc["edit"]), {"test": TensorDataset.from_arrays(sc["test"])}


def resnet_case():
    torch.manual_seed(0)
    model = create_model({"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32]}).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(16, 3, 32, 32, generator=g)
    tex = torch.from_numpy(texture(32, 32, channels=3))
    mask = torch.zeros(16, 1, 32, 32)
    mask[:, :, :, 16:] = 1  # the right half is "snow"
    x = clean * (1 - mask) + tex * mask
    with torch.no_grad():
        y = model(clean).argmax(1)  # the edit: predict on the textured image what the clean twin gets
    reference = {"test": TensorDataset(torch.rand(256, 3, 32, 32, generator=g), torch.zeros(256, dtype=torch.long))}
    return model, TensorDataset(x, y, clean, mask), reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    rows = []
    for case, kind, make in (("digits texture, smallcnn@8", "digits", digits_case),
                             ("synthetic, resnet18@32", "resnet", resnet_case)):
        model, edit_set, reference = make()
        memo = TimedMemo()
        extra = [("rewrite", [CONV[kind]], {"solver": s}) for s in ("closed_form", "iterative")]
        for method, layers, hp in METHODS + extra:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            before = peak_mb(device)
            t0 = time.perf_counter()
            known = set(memo.seconds)
            r = run_edit(method, model, edit_set, layers, hp, device, reference=reference, memo=memo)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            for name in set(memo.seconds) - known:  # computed during this run: its own row, not the solver's
                dt -= memo.seconds[name]
                rows.append([case, "rewrite: second moment C", "+".join(layers), f"{memo.seconds[name]:.2f}", "",
                             "(memoised)"])
            with torch.no_grad():
                acc = float((r.model(edit_set.x.to(device)).argmax(1).cpu() == edit_set.y).float().mean())
            grew = peak_mb(device) - (0 if device.type == "cuda" else before)
            name = f"{method} ({hp['solver']})" if "solver" in hp else method
            rows.append([case, name, "+".join(layers) or "all", f"{dt:.2f}", f"{grew:.0f}", f"{acc:.3f}"])
    print(f"edit methods with default hyperparameters, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(render(["case", "method", "layers", "seconds", "peak MB (+)", "edit acc"], rows, align_right={3, 4, 5}))


if __name__ == "__main__":
    main()
