"""The speed items of one worker, each before and after in the same run on this machine: torch threads beside a busy
neighbour (EDITAUDIT_TORCH_THREADS), BatchNorm folded into convolutions (the audit's `fold_bn`), the audit batch
size (a fixed 32 vs the size chosen from the input and free memory), and gzip on an audit's JSON. Prints a table; not
a test. The corruption kernels' before/after needs the old kernels side by side: see docs/benchmarks.md.

    python bench/speed.py [--model resnet18@32] [--n 256] [--repeat 3]

PGD-10 L-inf at eps 8/255 through the service's attack code on a randomly initialised torchvision model with random
BatchNorm statistics (labels are the model's own predictions, so the attack has work to do); each timing is the best
of --repeat. The neighbour is a second process spinning on one core, as another worker or tenant would.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import time

import torch

from editaudit.contracts.attacks import parse_attack
from editaudit.core.tables import render
from editaudit.worker.ml.archs import create_model
from editaudit.worker.ml.audit.attacks import make_attack
from editaudit.worker.ml.audit.batching import auto_batch_size
from editaudit.worker.ml.audit.fastpath import prepare_model

ARCH = {"resnet18": "torchvision/resnet18", "resnet50": "torchvision/resnet50"}


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def pgd_rate(model, x, y, batch: int, repeat: int) -> tuple[float, torch.Tensor]:
    """(images/s, the adversarial predictions) of PGD-10 on (x, y) in batches of `batch`, best of `repeat`."""
    attack = make_attack(parse_attack({"name": "pgd", "norm": "inf", "eps": 8 / 255, "steps": 10,
                                       "step_size": 2 / 255}))
    best, preds = float("inf"), None
    for _ in range(repeat):
        t0, out = time.perf_counter(), []
        for i in range(0, len(x), batch):
            gen = torch.Generator().manual_seed(i)
            xa = attack.perturb(model, x[i : i + batch], y[i : i + batch], gen)
            with torch.no_grad():
                out.append(model(xa).argmax(1))
        best = min(best, time.perf_counter() - t0)
        preds = torch.cat(out)
    return len(x) / best, preds


def audit_json(n_metrics: int = 600) -> bytes:
    """An audit's JSON of the size a full audit has (attacks and 15x5 corruption cells on three splits)."""
    import random

    rnd = random.Random(0)
    names = [f"test.corruption.type{i // 5}.{i % 5 + 1}.accuracy" for i in range(n_metrics)]
    doc = {"metrics": {m: {k: rnd.random() for k in names} for m in ("baseline", "candidate")},
           "intervals": {m: {k: [rnd.random(), rnd.random()] for k in names} for m in ("baseline", "candidate")},
           "deltas": {k: {"value": rnd.random(), "ci95": [rnd.random(), rnd.random()], "p_value": rnd.random(),
                          "n": 450, "method": "Tango score interval, exact McNemar p"} for k in names}}
    return json.dumps(doc).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18@32")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    name, size = args.model.split("@")
    torch.manual_seed(0)
    model = create_model({"arch": ARCH[name], "num_classes": 10, "input_shape": [3, int(size), int(size)]}).eval()
    for m in model.modules():  # random running statistics, as a trained network has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(args.n, 3, int(size), int(size), generator=torch.Generator().manual_seed(0))
    plain, folded = prepare_model(model, torch.device("cpu"), "off", args.n)[1], \
        prepare_model(model, torch.device("cpu"), "off", args.n, fold_bn=True)[1]
    with torch.no_grad():
        y = plain(x).argmax(1)
    rows = []

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    neighbour = ctx.Process(target=spin, args=(stop,), daemon=True)
    neighbour.start()
    try:
        torch.set_num_threads(2)
        two, _ = pgd_rate(plain, x, y, 32, args.repeat)
        torch.set_num_threads(1)
        one, _ = pgd_rate(plain, x, y, 32, args.repeat)
    finally:
        stop.set()
        neighbour.join(10)
    rows.append(["torch threads beside a busy neighbour", "2 threads (torch's default here)", f"{two:.1f} img/s",
                 "1 thread (EDITAUDIT_TORCH_THREADS=1)", f"{one:.1f} img/s", f"{one / two:.2f}x"])
    torch.set_num_threads(1)
    before, p0 = pgd_rate(plain, x, y, 32, args.repeat)
    after, p1 = pgd_rate(folded, x, y, 32, args.repeat)
    same = "identical" if torch.equal(p0, p1) else f"{int((p0 != p1).sum())}/{len(x)} differ"
    rows.append(["BatchNorm folded (1 thread)", "unfolded", f"{before:.1f} img/s", f"folded ({same} predictions)",
                 f"{after:.1f} img/s", f"{after / before:.2f}x"])
    auto = auto_batch_size((3, int(size), int(size)), torch.device("cpu"))
    fixed, _ = pgd_rate(folded, x, y, 32, args.repeat)
    chosen, _ = pgd_rate(folded, x, y, auto, args.repeat)
    rows.append(["audit batch size (folded, 1 thread)", "32", f"{fixed:.1f} img/s", f"{auto} (chosen)",
                 f"{chosen:.1f} img/s", f"{chosen / fixed:.2f}x"])
    body = audit_json()
    rows.append(["gzip on a synthetic audit JSON (600 cells)", "plain", f"{len(body) / 1024:.0f} KB", "gzip (level 9)",
                 f"{len(gzip.compress(body, 9)) / 1024:.0f} KB", f"{len(body) / len(gzip.compress(body, 9)):.1f}x"])
    print(f"{args.model}, PGD-10, n={args.n}, best of {args.repeat}, torch {torch.__version__}")
    print(render(["item", "before", "", "after", "", "gain"], rows))


if __name__ == "__main__":
    main()
