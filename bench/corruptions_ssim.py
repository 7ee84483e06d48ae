"""Structure of one corruption against the reference's: per severity, the fixed proxy's accuracy on both sides (paired,
with its standard error), the mean absolute change and the mean SSIM of corrupted to clean image (skimage, 8-bit,
over the colour channels), on the first N test images of bench/corruptions_fidelity.py with its seeds. One process,
one thread; the figures docs/corruptions.md gives for snow and frost.

    pip install imagecorruptions
    python bench/corruptions_ssim.py frost --images 300
    python bench/corruptions_ssim.py snow --images 300 --pixel-centre-zoom   # snow as it was before 2026-12-06
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from corruptions_fidelity import (
    IMAGE_CHUNK,
    PROXY_FILE,
    compat_shims,
    correct,
    corrupt,
    draw_seed,
    from_uint8,
    image_chunk,
    load_proxy,
    to_uint8,
)
from skimage.metrics import structural_similarity

from editaudit.worker.ml.audit.corruptions import CORRUPTION_NAMES, blur, weather


def ssim(a8: np.ndarray, b8: np.ndarray) -> list[float]:
    return [structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(a8, b8, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=list(CORRUPTION_NAMES))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixel-centre-zoom", action="store_true",
                    help="snow's flake noise zoomed by blur.zoom (pixel centres), as before 2026-12-06")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.pixel_centre_zoom:
        weather.clipped_zoom = blur.zoom
    ic = compat_shims()
    model = load_proxy(PROXY_FILE)
    chunks = [image_chunk(args.seed, s) for s in range(0, args.images, IMAGE_CHUNK)]
    print("| sev | images | acc ours | acc ref | diff (pts) | se (pts) | MAC ours | MAC ref | SSIM ours | SSIM ref |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for severity in range(1, 6):
        cols: dict[str, list] = {k: [] for k in ("ho", "hr", "mo", "mr", "so", "sr")}
        for c, (x, y) in enumerate(chunks):
            x8 = to_uint8(x)
            r8, o = [], []
            for i in range(len(x)):
                index = c * IMAGE_CHUNK + i
                np.random.seed(draw_seed(args.seed, "ref", args.name, index, severity))
                r8.append(np.uint8(ic.corrupt(x8[i], severity=severity, corruption_name=args.name)))
                gen = torch.Generator().manual_seed(draw_seed(args.seed, "ours", args.name, index, severity))
                o.append(corrupt(x[i : i + 1], args.name, severity, gen))
            ref8, our8 = np.stack(r8), to_uint8(torch.cat(o))
            xr, xo = from_uint8(ref8), from_uint8(our8)
            cols["ho"].append(correct(model, xo, y))
            cols["hr"].append(correct(model, xr, y))
            cols["mo"].append((xo - x).abs().mean((1, 2, 3)))
            cols["mr"].append((xr - x).abs().mean((1, 2, 3)))
            cols["so"] += ssim(our8, x8)
            cols["sr"] += ssim(ref8, x8)
        ho, hr = torch.cat(cols["ho"])[: args.images], torch.cat(cols["hr"])[: args.images]
        d = (ho - hr).double()
        print(f"| {severity} | {len(d)} | {ho.mean():.3f} | {hr.mean():.3f} | {100 * d.mean():+.1f} | "
              f"{100 * d.std() / len(d) ** 0.5:.1f} | {torch.cat(cols['mo']).mean():.4f} | "
              f"{torch.cat(cols['mr']).mean():.4f} | {np.mean(cols['so'][: args.images]):.3f} | "
              f"{np.mean(cols['sr'][: args.images]):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
