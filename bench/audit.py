"""Audit throughput: PGD-10 images/s on our native path vs ART's ProjectedGradientDescentPyTorch, same model and
inputs (synthetic, seeded), plus the robust accuracies both reach. Prints a table; not a test.

ART is timed twice: on the model as users hand it over (parameters require grad, so every backward also computes
weight gradients) and on the frozen model our audit uses, to show where the difference comes from.

    python bench/audit.py [--models smallcnn@8 resnet18@32 resnet50@224] [--n 256] [--batch 128] [--device auto]

Then the corruption suite's throughput (bench/corruptions.py). On a CPU, models at 224x224 use --n-large inputs
(default 16) so the run ends in minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from editaudit.contracts.attacks import parse_attack
from editaudit.core.tables import render
from editaudit.worker.ml.archs import create_model
from editaudit.worker.ml.audit.attacks import make_attack

ARCH = {"resnet18": "torchvision/resnet18", "resnet50": "torchvision/resnet50", "smallcnn": "editaudit/smallcnn"}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(model, x, y, params, batch, device):
    attack = make_attack(params)
    gen = torch.Generator(device=device).manual_seed(0)
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        xa = attack.perturb(model, xb, yb, gen)
        with torch.no_grad():
            correct += int((model(xa).argmax(1) == yb).sum())
    sync(device)
    return correct / len(x)


def art(model, x, y, params, batch, device, frozen):
    for p in model.parameters():
        p.requires_grad_(not frozen)
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="gpu" if device.type == "cuda" else "cpu")
    atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=params.eps, eps_step=params.effective_step_size,
                                          max_iter=params.steps, num_random_init=0, batch_size=batch, verbose=False)
    xa = atk.generate(x.numpy(), y.numpy())
    return float((clf.predict(xa, batch_size=batch).argmax(1) == y.numpy()).mean())


REPEAT = 2


def timed(fn, *args):
    """Best of REPEAT runs (wall time), so a noisy neighbour does not decide the comparison."""
    best = float("inf")
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return out, best, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn@8", "resnet18@32", "resnet50@224"])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-large", type=int, default=16, help="inputs for >= 224 px models on a CPU")
    ap.add_argument("--no-corruptions", action="store_true")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=2, help="best of N timings")
    args = ap.parse_args()
    global REPEAT
    REPEAT = args.repeat
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    params = parse_attack({"name": "pgd", "norm": "inf", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255})
    rows = []
    for item in args.models:
        name, size = item.split("@")
        size = int(size)
        n = args.n_large if size >= 224 and device.type == "cpu" else args.n
        c = 1 if name == "smallcnn" and size == 8 else 3
        torch.manual_seed(0)
        model = create_model({"arch": ARCH[name], "num_classes": 10, "input_shape": [c, size, size]}).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, c, size, size, generator=g)
        with torch.no_grad():  # label each input by the model so the attack has work to do
            y = torch.cat([model(x[i : i + args.batch].to(device)).argmax(1).cpu() for i in range(0, n, args.batch)])
        ours(model, x[: args.batch], y[: args.batch], params, args.batch, device)  # warm-up
        acc_o, t_o, _ = timed(ours, model, x, y, params, args.batch, device)
        acc_a, t_a, _ = timed(art, model, x, y, params, args.batch, device, False)
        acc_f, t_f, _ = timed(art, model, x, y, params, args.batch, device, True)
        for p in model.parameters():
            p.requires_grad_(False)
        rows.append([f"{name}@{size}", n, f"{n / t_o:.1f}", f"{n / t_a:.1f}", f"{n / t_f:.1f}",
                     f"{t_a / t_o:.2f}x", f"{acc_o:.4f}", f"{acc_a:.4f}"])
    print(f"PGD-10 L-inf eps=8/255, batch {args.batch}, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(render(["model", "n", "ours img/s", "ART img/s", "ART frozen img/s", "speedup vs ART", "robust acc (ours)",
                  "robust acc (ART)"], rows))
    if not args.no_corruptions:
        import sys

        sys.argv = [sys.argv[0], "--device", str(device)]
        from corruptions import main as corruption_bench  # bench/corruptions.py, beside this file

        print()
        corruption_bench()


if __name__ == "__main__":
    main()
