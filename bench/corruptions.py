"""Corruption throughput: corrupted images/s of each ImageNet-C type (mean over its 5 severities) and clean images/s
through the full 15x5 suite (each image corrupted 75 times), on synthetic seeded inputs, at 32x32 (batch 64) and
224x224 (batch 16). Prints a table; not a test.

    python bench/corruptions.py [--device auto] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from editaudit.core.tables import render
from editaudit.worker.ml.audit.corruptions import CORRUPTION_NAMES, corrupt

SETTINGS = [(32, 64), (224, 16)]  # (image size, batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Smooth random RGB images (upsampled 8x8 noise plus a little grain), so blurs and JPEG have work to do."""
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1).to(device)


def seconds_per_batch(x: torch.Tensor, name: str, repeats: int) -> float:
    """Best of `repeats` runs over severities 1..5, per batch and severity (after one warm-up run)."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    best = float("inf")
    for i in range(repeats + 1):
        sync(x.device)
        t0 = time.perf_counter()
        for severity in range(1, 6):
            corrupt(x, name, severity, gen)
        sync(x.device)
        if i:
            best = min(best, (time.perf_counter() - t0) / 5)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    times = {}
    for size, batch in SETTINGS:
        x = images(batch, size, device)
        for name in CORRUPTION_NAMES:
            times[name, size] = seconds_per_batch(x, name, args.repeats) / batch
    header = ["corruption"] + [f"{s}x{s} img/s (batch {b})" for s, b in SETTINGS]
    rows = [[name] + [f"{1 / times[name, s]:.0f}" for s, _ in SETTINGS] for name in CORRUPTION_NAMES]
    rows.append(["full 15x5 suite (clean img/s)"]
                + [f"{1 / (5 * sum(times[n, s] for n in CORRUPTION_NAMES)):.1f}" for s, _ in SETTINGS])
    print(f"ImageNet-C corruptions, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(render(header, rows))


if __name__ == "__main__":
    main()
