"""Edit-method cost: wall time and peak memory of each method on the digits texture scenario (smallcnn @8) and on
the synthetic 3x32x32 texture scenario with a torchvision resnet18 trained on it here (about a minute on 2 CPU
cores), plus what each reaches on the edit set, the textured generalization set and the clean test set; rewrite
both closed-form and iterative. Prints a table; not a test.

    python bench/edits.py [--device auto]

Peak memory is the CUDA allocator's peak on a GPU, and the growth of the process's peak RSS on a CPU (a coarse,
monotone figure: methods run in order, so only increases show).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from editaudit.core.tables import render
from editaudit.worker.ml.archs import build_inner, create_model
from editaudit.worker.ml.data import TensorDataset, digits_arrays, hold_out
from editaudit.worker.ml.edits import run_edit
from editaudit.worker.ml.scenarios import synthetic_arrays, synthetic_texture_scenario, texture_scenario
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


def _wrap(spec: dict, net) -> torch.nn.Module:
    model = create_model(spec)
    model.net.load_state_dict(net.state_dict())
    return model.eval()


def _scenario(model, build) -> tuple:
    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).argmax(1).numpy()

    sc = build(predict)
    sets = {k: TensorDataset.from_arrays(sc[k]) for k in ("edit", "generalization", "test")}
    # as the job does by default: the gradient methods' locality set is held out of the test split, and every row
    # is measured on the rest
    rest, held, _ = hold_out(sets["test"], seed=0)
    return model, sets["edit"], {"test": rest, "generalization": sets["generalization"], "locality": held}


def digits_case():
    tr, te = digits_arrays("train"), digits_arrays("test")
    spec = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8]}
    torch.manual_seed(0)
    net = build_inner(spec["arch"], 10, spec["input_shape"])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=4)
    return _scenario(_wrap(spec, net), lambda predict: texture_scenario(tr, te, predict))


def resnet_case():
    spec = {"arch": "torchvision/resnet18", "num_classes": 10, "input_shape": [3, 32, 32]}
    tr = synthetic_arrays("train", 1500)
    torch.manual_seed(0)
    net = build_inner(spec["arch"], 10, spec["input_shape"])
    train_classifier(net, torch.from_numpy(tr.x), torch.from_numpy(tr.y), epochs=3, batch_size=32, settle_epochs=1)
    # strength 0.5: resnet18 shrugs off the default 0.15 (textured accuracy 0.99), at 0.5 it falls to 0.14
    return _scenario(_wrap(spec, net), lambda predict: synthetic_texture_scenario(predict, n_train=1500, strength=0.5))


@torch.no_grad()
def accuracies(model, edit_set, reference, device) -> list[str]:
    """Edit-set, textured-generalization and clean-test accuracy, formatted."""
    model = model.to(device)
    out = []
    for ds in (edit_set, reference["generalization"], reference["test"]):
        hits = sum(int((model(ds.x[i : i + 256].to(device)).argmax(1).cpu() == ds.y[i : i + 256]).sum())
                   for i in range(0, len(ds), 256))
        out.append(f"{hits / len(ds):.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    rows = []
    for case, kind, make in (("digits texture, smallcnn@8", "digits", digits_case),
                             ("synthetic texture, resnet18@32", "resnet", resnet_case)):
        model, edit_set, reference = make()
        rows.append([case, "(before the edit)", "", "", "", "", *accuracies(model, edit_set, reference, device)])
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
                rows.append([case, "rewrite: second moment C", "+".join(layers), f"{memo.seconds[name]:.2f}",
                             "", "", "(memoised)", "", ""])
            grew = peak_mb(device) - (0 if device.type == "cuda" else before)
            name = f"{method} ({hp['solver']})" if "solver" in hp else method
            solve = r.info.get("seconds", {}).get("solve")
            rows.append([case, name, "+".join(layers) or "all", f"{dt:.2f}", "" if solve is None else f"{solve:.4f}",
                         f"{grew:.0f}", *accuracies(r.model, edit_set, reference, device)])
    print(f"edit methods with default hyperparameters, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(render(["case", "method", "layers", "seconds", "solver s", "peak MB (+)", "edit acc", "textured acc",
                  "clean acc"], rows, align_right={3, 4, 5, 6, 7, 8}))
    print("seconds: the whole edit (rewrite: without the memoised second moment, shown on its own row); solver s: "
          "rewrite's solve phase alone, after the shared key and direction computation.")


if __name__ == "__main__":
    main()
