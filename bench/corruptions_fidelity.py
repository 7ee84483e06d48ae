"""Fidelity of our corruptions to the reference ImageNet-C code: the `imagecorruptions` package (Hendrycks &
Dietterich's functions, packaged by Michaelis et al.) against `editaudit.worker.ml.audit.corruptions`, on the same
seeded 224x224 RGB images through the same proxy classifier. Not a test; exits non-zero if a type fails.

Needs the reference, which is NOT a project dependency (bench only, do not add it to pyproject):

    pip install imagecorruptions
    python bench/corruptions_fidelity.py [--images 100] [--glass-images 40] [--types frost snow ...] [--workers 2]

About 5-8 minutes on 2 CPU cores at the defaults (--images 200 --glass-images 60: 11 minutes). More images shrink
the sampling noise of the accuracy difference (the "se" column): the two sides draw different random angles, plates
and noise, and at 100 images the standard error is 2-6 points on the random corruptions.

Images are the coloured shapes of worker/ml/scenarios.py drawn at 224 px over a dark, softly textured background
(no downloads); the proxy classifier is a small strided CNN trained on photometrically jittered clean images at
the start of the run (half a minute on 2 idle cores).
For each type and severity it prints our accuracy, the reference's, their difference, the mean |corrupted - clean|
of each side and its ratio (ours / reference). A severity passes when the ratio is within 1 +- MAC_TOL (10%) and
the accuracies are within ACC_TOL (3 points): PASS; or, where the run's sampling noise is larger than that, within
ACC_TOL + 3 standard errors of the paired difference: PASS* (not resolved at this number of images). A type passes
when all five severities do. Both sides see the same 8-bit clean images and are
compared as the 8-bit images the reference returns (np.uint8 truncation). Our side is seeded with a torch generator,
the reference with np.random.seed per image, so the random draws differ; only their statistics are compared.

The package predates numpy 2 and recent scikit-image: `compat_shims` patches it at import time (no site-packages
edits): numpy's removed `np.float_` alias, skimage `gaussian(multichannel=True)` -> `channel_axis=-1`, and a
`pkg_resources.resource_filename` stand-in (setuptools' pkg_resources is not installed in recent environments).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions import CORRUPTION_NAMES, corrupt
from editaudit.worker.ml.scenarios import SYNTHETIC_CLASSES, _shape_masks

SIZE = 224
ACC_TOL = 0.03  # accuracy difference, absolute
MAC_TOL = 0.10  # mean absolute change, relative to the reference's
NOISE_Z = 3  # an accuracy difference fails only if it exceeds ACC_TOL by this many standard errors


# ------------------------------------------------------------------------------------------ the reference package


def compat_shims():
    """Import imagecorruptions under numpy 2 / scikit-image >= 0.19 / no setuptools, patching only its module."""
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = lambda pkg, rel: os.path.join(
            os.path.dirname(importlib.util.find_spec(pkg).origin), rel)
        sys.modules["pkg_resources"] = stub
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # removed in numpy 2; plasma_fractal uses it
    import imagecorruptions
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kw):
        """skimage 0.19 renamed multichannel=True to channel_axis=-1 and later removed it."""
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian_compat
    return imagecorruptions


def _reference_chunk(args):
    """Worker: the reference's corruption of a chunk of uint8 HWC images, image i seeded with seed + i."""
    images, name, severity, seed = args
    ic = compat_shims()
    out = []
    for i, img in enumerate(images):
        np.random.seed(seed + i)
        out.append(ic.corrupt(img, severity=severity, corruption_name=name))
    return np.stack(out)


def reference(images: np.ndarray, name: str, severity: int, seed: int, pool, workers: int):
    """Start the reference corruption of uint8 [N,H,W,3] images on the pool; call the result to collect it. We
    compute our side meanwhile."""
    chunks = np.array_split(np.arange(len(images)), max(1, workers * 2))
    futures = [pool.submit(_reference_chunk, (images[c], name, severity, seed + int(c[0]))) for c in chunks if len(c)]
    return lambda: np.concatenate([f.result() for f in futures])


# ------------------------------------------------------------------------------------------------------- images


def shapes(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """scenarios.synthetic_arrays' coloured shapes (same classes, placement and colour rules) drawn at `size` px,
    over a dark background with soft texture and grain so that blurs, JPEG and pixelation have detail to remove."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, 12), dtype=np.float32)
    y = rng.integers(0, len(SYNTHETIC_CLASSES), n)
    k = size / 32
    half = (8.0 + 4.0 * p[:, 0]) * k
    aspect = 0.85 + 0.3 * p[:, 1]
    sx, sy = half * np.sqrt(aspect), half / np.sqrt(aspect)
    cx = sx + k + (size - 2 * k - 2 * sx) * p[:, 2]
    cy = sy + k + (size - 2 * k - 2 * sy) * p[:, 3]
    theta = np.deg2rad(-12 + 24 * p[:, 4])
    hue = p[:, 5:8] * 0.8 + 0.2
    colour = hue / hue.max(axis=1, keepdims=True) * (0.6 + 0.4 * p[:, 8:9])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = (c * dx + s * dy) / sx[:, None, None], (-s * dx + c * dy) / sy[:, None, None]
    inside = np.stack(_shape_masks(u, v))[y, np.arange(n)][:, None]
    soft = torch.from_numpy(rng.random((n, 3, 12, 12), dtype=np.float32))
    bg = 0.05 + 0.15 * F.interpolate(soft, size=(size, size), mode="bicubic", align_corners=False).numpy()
    grain = 0.03 * rng.standard_normal((n, 3, size, size), dtype=np.float32)
    x = np.where(inside, colour[:, :, None, None], bg) + grain
    return torch.from_numpy(np.clip(x, 0, 1)).float(), torch.from_numpy(y)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [0,1] -> uint8 [N,H,W,3], truncated like the reference's np.uint8."""
    return (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


# -------------------------------------------------------------------------------------------- proxy classifier


def proxy(classes: int) -> nn.Module:
    """A small strided CNN for 224-px inputs, fast on a CPU. Each input channel is standardised per image first
    (InstanceNorm), so a global shift of brightness or contrast (fog, frost, brightness) does not by itself collapse
    it to one class: accuracies then reflect what the corruption hides, and differ between the two sides."""
    def block(i, o, k, s):
        return [nn.Conv2d(i, o, k, s, padding=k // 2), nn.BatchNorm2d(o), nn.ReLU()]
    return nn.Sequential(nn.InstanceNorm2d(3), *block(3, 24, 7, 4), *block(24, 48, 3, 2), *block(48, 64, 3, 2),
                         *block(64, 96, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, classes))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild generic photometric jitter (gain, offset, grain), none of it a corruption under test: it keeps the proxy
    from collapsing to one class under any change, so accuracies spread over the severities."""
    n = x.shape[0]
    gain = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    offset = 0.2 * torch.rand(n, 1, 1, 1, generator=gen) - 0.1
    grain = 0.1 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (x * gain + offset + grain).clamp(0, 1)


def train_proxy(steps: int, pool: int, batch: int, seed: int) -> nn.Module:
    """Train on `pool` clean images (seeded, distinct from the test images), jittered afresh at every step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = shapes(pool, seed=seed + 1)
    model = proxy(len(SYNTHETIC_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        pick = torch.randint(pool, (batch,), generator=gen)
        loss = F.cross_entropy(model(augment(x[pick], gen)), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Per-image hits (float 0/1), so that accuracies of the two sides can be compared paired."""
    return torch.cat([(model(x[i : i + batch]).argmax(1) == y[i : i + batch]).float() for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(correct(model, x, y).mean())


# ------------------------------------------------------------------------------------------------- comparison


def ours(x: torch.Tensor, name: str, severity: int, seed: int, batch: int = 32) -> torch.Tensor:
    """Our corruption of float images, returned as the 8-bit images the reference would return."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.cat([corrupt(x[i : i + batch], name, severity, gen) for i in range(0, len(x), batch)])
    return from_uint8(to_uint8(out))


def mean_abs_change(xc: torch.Tensor, x: torch.Tensor) -> float:
    return float((xc - x).abs().mean())


def row(name: str, severity: int, hits_ours, hits_ref, mac_ours: float, mac_ref: float) -> dict:
    """Both sides' figures and the verdict.

    The two sides draw different random numbers (angles, frost plates, noise), so on n images their accuracies
    differ by sampling noise alone; `se` is the standard error of the paired difference. The MAC ratio is precise
    and must be within 1 +- MAC_TOL. The accuracy difference is "PASS" within ACC_TOL; beyond it but within
    ACC_TOL + NOISE_Z se it is "PASS*": the run cannot tell it from the tolerance (more --images can); beyond
    that it fails. NOISE_Z is 3 because a run makes 75 such comparisons.
    """
    d = hits_ours - hits_ref
    r = {"name": name, "severity": severity, "n": len(d), "acc_ours": float(hits_ours.mean()),
         "acc_ref": float(hits_ref.mean()), "diff": float(d.mean()), "se": float(d.std(unbiased=False)) / len(d) ** 0.5,
         "mac_ours": mac_ours, "mac_ref": mac_ref, "ratio": mac_ours / mac_ref}
    mac_ok = abs(r["ratio"] - 1) <= MAC_TOL + 1e-9
    strict = abs(r["diff"]) <= ACC_TOL + 1e-9
    r["pass"] = mac_ok and abs(r["diff"]) <= ACC_TOL + NOISE_Z * r["se"] + 1e-9
    r["verdict"] = "FAIL" if not r["pass"] else "PASS" if strict else "PASS*"
    return r


def compare(model, x, y, names, pool, workers: int, seed: int, limits: dict[str, int]) -> list[dict]:
    """One row per (type, severity) on the first limits.get(name, all) images."""
    rows = []
    for name in names:
        xs, ys = x[: limits.get(name, len(x))], y[: limits.get(name, len(x))]
        x8 = to_uint8(xs)
        xs = from_uint8(x8)
        for severity in range(1, 6):
            pending = reference(x8, name, severity, seed, pool, workers)
            our = ours(xs, name, severity, seed)
            ref = from_uint8(pending())
            r = row(name, severity, correct(model, our, ys), correct(model, ref, ys), mean_abs_change(our, xs),
                    mean_abs_change(ref, xs))
            rows.append(r)
            print(_line(r), flush=True)
    return rows


HEADER = ("| corruption | sev | images | acc ours | acc ref | diff (pts) | se (pts) | MAC ours | MAC ref | ratio | |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def _line(r: dict) -> str:
    return (f"| {r['name']} | {r['severity']} | {r['n']} | {r['acc_ours']:.3f} | {r['acc_ref']:.3f} | "
            f"{100 * r['diff']:+.1f} | {100 * r['se']:.1f} | {r['mac_ours']:.4f} | {r['mac_ref']:.4f} | "
            f"{r['ratio']:.3f} | {r['verdict']} |")


def summary(rows: list[dict]) -> str:
    """One line per type: the worst accuracy difference and the range of MAC ratios over its five severities."""
    out = ["| corruption | images | worst acc diff ± se (pts) | mean acc diff (pts) | MAC ratio range | |",
           "|---|---:|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        worst = max(mine, key=lambda r: abs(r["diff"]))
        ratios = [r["ratio"] for r in mine]
        verdicts = {r["verdict"] for r in mine}
        verdict = "FAIL" if "FAIL" in verdicts else "PASS*" if "PASS*" in verdicts else "PASS"
        out.append(f"| {name} | {mine[0]['n']} | {100 * worst['diff']:+.1f} ± {100 * worst['se']:.1f} "
                   f"(sev {worst['severity']}) | {100 * sum(r['diff'] for r in mine) / len(mine):+.1f} | "
                   f"{min(ratios):.3f}–{max(ratios):.3f} | {verdict} |")
    return "\n".join(out)


def frost_plates(ic, crops: int = 20, seed: int = 0) -> list[tuple[str, list[float], float]]:
    """Mean RGB and in-crop grey standard deviation of 224-px crops of the reference's frost photographs, cropped as
    the reference crops them (rescaled by 1.1, random crop); the source of weather._FROST_PLATES."""
    import cv2

    rng = np.random.default_rng(seed)
    folder = os.path.join(os.path.dirname(ic.__file__), "frost")
    out = []
    for i in range(1, 6):  # the reference draws np.random.randint(5): frost1..frost5
        name = next(f for f in sorted(os.listdir(folder)) if f.startswith(f"frost{i}."))
        img = cv2.imread(os.path.join(folder, name))
        img = cv2.resize(img, (int(np.ceil(img.shape[1] * 1.1)), int(np.ceil(img.shape[0] * 1.1))),
                         interpolation=cv2.INTER_CUBIC)[..., ::-1] / 255
        means, stds = [], []
        for _ in range(crops):
            a, b = rng.integers(0, img.shape[0] - SIZE), rng.integers(0, img.shape[1] - SIZE)
            crop = img[a : a + SIZE, b : b + SIZE]
            means.append(crop.mean((0, 1)))
            stds.append(crop.mean(2).std())
        out.append((name, np.mean(means, 0).round(3).tolist(), round(float(np.mean(stds)), 3)))
    return out


def frost_summary(ic, x: torch.Tensor) -> str:
    """Mean grey level of the frost layer: the reference photographs' (as drawn) against our procedural layer's."""
    from editaudit.worker.ml.audit.corruptions.weather import frost_layer

    ref = np.mean([np.mean(m) for _, m, _ in frost_plates(ic)])
    ours = float(frost_layer(x, torch.Generator().manual_seed(0)).mean())
    return f"frost layer mean grey: reference photographs {ref:.3f}, ours {ours:.3f}"


def pin(seed: int, pool, workers: int) -> dict:
    """The reference's mean absolute change per type and severity on the fixed batch of
    tests/unit/test_corruption_fidelity_stats.py (which pins these figures)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tests.unit.test_corruption_fidelity_stats import fixed_batch

    x = fixed_batch()
    x8 = to_uint8(x)
    return {name: [round(mean_abs_change(from_uint8(reference(x8, name, s, seed, pool, workers)()), x), 4)
                   for s in range(1, 6)]
            for name in CORRUPTION_NAMES}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100, help="test images (224x224)")
    ap.add_argument("--glass-images", type=int, default=40,
                    help="images for glass_blur, whose reference is a Python loop (~0.8 s per image and severity)")
    ap.add_argument("--types", nargs="*", default=list(CORRUPTION_NAMES), choices=list(CORRUPTION_NAMES))
    ap.add_argument("--steps", type=int, default=150, help="proxy training steps (batch 32)")
    ap.add_argument("--train-images", type=int, default=512, help="proxy training images")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frost-plates", action="store_true", help="print the reference frost photographs' statistics")
    ap.add_argument("--pin", action="store_true", help="print the reference figures the unit test pins")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ic = compat_shims()
    if args.frost_plates:
        for row in frost_plates(ic):
            print(*row)
        return 0
    if args.pin:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            print("REFERENCE_MAC = {")
            for name, values in pin(args.seed, pool, args.workers).items():
                print(f"    {name!r}: {values},")
            print("}")
        return 0
    t0 = time.perf_counter()
    model = train_proxy(args.steps, args.train_images, 32, args.seed)
    x, y = shapes(args.images, seed=args.seed + 2)
    print(f"proxy classifier: clean accuracy {accuracy(model, x, y):.3f} on {args.images} images "
          f"(trained in {time.perf_counter() - t0:.0f} s); {frost_summary(ic, x)}\n\n{HEADER}", flush=True)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = compare(model, x, y, args.types, pool, args.workers, args.seed, {"glass_blur": args.glass_images})
    failed = sorted({r["name"] for r in rows if not r["pass"]})
    print("\n" + summary(rows))
    noisy = sum(r["verdict"] == "PASS*" for r in rows)
    print(f"\ntolerance: accuracy within {100 * ACC_TOL:.0f} points, mean abs change within {100 * MAC_TOL:.0f}% "
          f"of the reference's; {len(args.types) - len(failed)}/{len(args.types)} types pass at every severity"
          + (f"; failing: {', '.join(failed)}" if failed else "")
          + f"; {noisy}/{len(rows)} severities are PASS* (beyond {100 * ACC_TOL:.0f} points but within "
          f"{NOISE_Z} se of it: sampling noise at this --images)" + f" ({time.perf_counter() - t0:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
