"""Fidelity of our corruptions to the reference ImageNet-C code: the `imagecorruptions` package (Hendrycks &
Dietterich's functions, packaged by Michaelis et al.) against `editaudit.worker.ml.audit.corruptions`, on the same
seeded 224x224 RGB images through the same fixed proxy classifier. Not a test; exits non-zero if a cell fails or
is unresolved.

Needs the reference, which is NOT a project dependency (bench only, do not add it to pyproject):

    pip install imagecorruptions
    python bench/corruptions_fidelity.py [--types frost snow ...] [--images N] [--workers 2]

The rule, one per (type, severity) cell, printed in the output's header:

    PASS        |acc ours - acc ref| <= ACC_TOL (3 points) and MAC ours / MAC ref within 1 +- MAC_TOL (10%),
                where the cell is resolved: RESOLVE (2) standard errors of the paired accuracy difference <= ACC_TOL
    FAIL        resolved and either bound broken (a MAC ratio outside the bound fails whatever the se)
    UNRESOLVED  2 se > ACC_TOL: the run cannot tell a pass from a fail at that many images; not a pass

The accuracy difference is paired (both sides corrupt the same clean images), but the two sides draw different
random numbers (angles, plates, noise), so it carries sampling noise; `se` is its standard error, std(d)/sqrt(n)
over the per-image differences d in {-1, 0, 1}. Each type's default image count (IMAGES) was set from a pilot run so
that every severity's se is well below ACC_TOL / 2 (about 1.2 points at most); --images N overrides it for all types.

Seeds: every (image, severity) gets independent draws on both sides (`draw_seed`, a hash of seed, side, type, image
index and severity): ours a torch generator per image, the reference np.random.seed per image. The sides' seeds
differ too: torch's CPU generator and numpy's legacy one are both MT19937 seeded the same way, so one integer would
give both sides the same bit stream. The images are the same for every type (seeded per chunk of IMAGE_CHUNK).

Proxy classifier: a small strided CNN, trained once (deterministically: seeded, one thread,
torch.use_deterministic_algorithms) on photometrically jittered clean images and committed as
bench/fidelity_proxy.safetensors; every run loads it and prints its digest. `--train-proxy` retrains it and prints
the digest of the result (the same bits on the machine that trained it, run after run); it does not overwrite the
committed file unless `--write-proxy` is given.

Per cell it prints our accuracy, the reference's, their difference and its se, the mean |corrupted - clean| (MAC) of
each side and its ratio (ours / reference). Both sides see the same 8-bit clean images and are compared as the 8-bit
images the reference returns (np.uint8 truncation). Jobs of (type, IMAGE_CHUNK images, all five severities) run
in --workers processes, each doing both sides and the proxy. At the defaults: 2274 s on a 2-core VM shared with
other work (an estimated 15 minutes on 2 idle cores), about half of the CPU time the reference's glass blur (a
Python loop, ~0.8 s per image and severity).

The package predates numpy 2 and recent scikit-image: `compat_shims` patches it at import time (no site-packages
edits): numpy's removed `np.float_` alias, skimage `gaussian(multichannel=True)` -> `channel_axis=-1`, and a
`pkg_resources.resource_filename` stand-in (setuptools' pkg_resources is not installed in recent environments).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import multiprocessing
import os
import platform
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from editaudit.worker.ml.audit.corruptions import CORRUPTION_NAMES, corrupt
from editaudit.worker.ml.scenarios import SYNTHETIC_CLASSES, _shape_masks

SIZE = 224
ACC_TOL = 0.03  # |accuracy difference|, absolute
MAC_TOL = 0.10  # mean absolute change, relative to the reference's
RESOLVE = 2  # a cell has a verdict only where RESOLVE standard errors fit within ACC_TOL
IMAGE_CHUNK = 50  # images per job; the images are seeded per chunk, so the first n are the same at any count
PROXY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fidelity_proxy.safetensors")
# Default images per type, from a pilot run (--images 200; glass blur from an earlier run at 60 images): with sd the
# largest per-image standard deviation of the paired difference over the five severities, n is about
# (sd / 0.012)^2 rounded up, at least 200, so that se stays near or below 1.2 points, under the 1.5 at which a cell
# is unresolved. Glass blur's reference costs ~0.8 s per image and severity, hence its smaller margin.
IMAGES = {"gaussian_noise": 600, "shot_noise": 500, "impulse_noise": 500, "defocus_blur": 200, "glass_blur": 300,
          "motion_blur": 1000, "zoom_blur": 300, "snow": 1400, "frost": 2500, "fog": 1800, "brightness": 200,
          "contrast": 200, "elastic_transform": 600, "pixelate": 200, "jpeg_compression": 200}


# ------------------------------------------------------------------------------------------ the reference package


@functools.lru_cache(maxsize=1)
def compat_shims():
    """Import imagecorruptions under numpy 2 / scikit-image >= 0.19 / no setuptools, patching only its module."""
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = lambda pkg, rel: os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(importlib.util.find_spec(pkg).origin), rel)
        sys.modules["pkg_resources"] = stub
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # removed in numpy 2; plasma_fractal uses it
    import imagecorruptions
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kw):
        """skimage 0.19 renamed multichannel=True to channel_axis=-1 and later removed it."""
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian_compat
    # frost reads its photograph at every call (a tenth of the bench's time); the same pixels, read once per process
    cv2, read = ic.cv2, functools.lru_cache(maxsize=8)(ic.cv2.imread)

    class CachedRead(types.ModuleType):
        def __getattr__(self, attr):
            return getattr(cv2, attr)

    ic.cv2 = CachedRead("cv2")
    ic.cv2.imread = lambda path: read(path).copy()
    return imagecorruptions


def draw_seed(seed: int, side: str, name: str, index: int, severity: int) -> int:
    """Independent 32-bit seed per side ("ours" or "ref"), type, image and severity."""
    key = f"{seed}/{side}/{name}/{index}/{severity}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


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


def image_chunk(seed: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images start .. start + IMAGE_CHUNK (start a multiple of IMAGE_CHUNK), quantised to 8 bits."""
    x, y = shapes(IMAGE_CHUNK, seed=1000 * (seed + 1) + start // IMAGE_CHUNK)
    return from_uint8(to_uint8(x)), y


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


def train_proxy(steps: int = 150, pool: int = 512, batch: int = 32, seed: int = 0) -> nn.Module:
    """Train on `pool` clean images (seeded, distinct from the test images), jittered afresh at every step; one
    thread and deterministic algorithms, so that the same machine gives the same bits every time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
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
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    return model.eval()


def digest(model: nn.Module) -> str:
    """sha256 of the state dict (names, shapes and float bytes, in name order), first 16 hex digits."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_proxy(model: nn.Module, path: str = PROXY_FILE) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)


@functools.lru_cache(maxsize=1)
def load_proxy(path: str = PROXY_FILE) -> nn.Module:
    from safetensors.torch import load_file

    model = proxy(len(SYNTHETIC_CLASSES))
    model.load_state_dict(load_file(path))
    return model.eval()


@torch.no_grad()
def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Per-image hits (float 0/1), so that accuracies of the two sides can be compared paired."""
    return torch.cat([(model(x[i : i + batch]).argmax(1) == y[i : i + batch]).float() for i in range(0, len(x), batch)])


# ------------------------------------------------------------------------------------------------- comparison


def cell_job(args: tuple[str, int, int, str]) -> tuple[str, int, np.ndarray]:
    """Worker: type `name` at every severity on test images start .. start + IMAGE_CHUNK, both sides, each image
    and severity with its own seeds. Returns [severity, (hit ours, hit ref, MAC ours, MAC ref), image]."""
    name, start, seed, proxy_path = args
    torch.set_num_threads(1)
    ic = compat_shims()
    model = load_proxy(proxy_path)
    x, y = image_chunk(seed, start)
    x8 = to_uint8(x)
    out = []
    for severity in range(1, 6):
        ref, our = [], []
        for i in range(len(x)):
            np.random.seed(draw_seed(seed, "ref", name, start + i, severity))
            ref.append(ic.corrupt(x8[i], severity=severity, corruption_name=name))
            gen = torch.Generator().manual_seed(draw_seed(seed, "ours", name, start + i, severity))
            our.append(corrupt(x[i : i + 1], name, severity, gen))
        xr = from_uint8(np.stack(ref))
        xo = from_uint8(to_uint8(torch.cat(our)))
        out.append(torch.stack([correct(model, xo, y), correct(model, xr, y), (xo - x).abs().mean((1, 2, 3)),
                                (xr - x).abs().mean((1, 2, 3))]))
    return name, start, torch.stack(out).double().numpy()


def row(name: str, severity: int, per_image: np.ndarray) -> dict:
    """Both sides' figures and the verdict for one cell (module docstring: the rule)."""
    hits_ours, hits_ref, mac_ours, mac_ref = per_image
    d = hits_ours - hits_ref
    n = len(d)
    r: dict = {"name": name, "severity": severity, "n": n, "acc_ours": float(hits_ours.mean()),
         "acc_ref": float(hits_ref.mean()), "diff": float(d.mean()), "se": float(d.std(ddof=1)) / n**0.5,
         "mac_ours": float(mac_ours.mean()), "mac_ref": float(mac_ref.mean())}
    r["ratio"] = r["mac_ours"] / r["mac_ref"]
    mac_ok = abs(r["ratio"] - 1) <= MAC_TOL + 1e-9
    resolved = RESOLVE * r["se"] <= ACC_TOL + 1e-9
    acc_ok = abs(r["diff"]) <= ACC_TOL + 1e-9
    r["verdict"] = "FAIL" if not mac_ok else "UNRESOLVED" if not resolved else "PASS" if acc_ok else "FAIL"
    return r


def compare(names: list[str], counts: dict[str, int], seed: int, workers: int, proxy_path: str) -> list[dict]:
    """One row per (type, severity), printed as each type completes. All jobs are queued at once, glass blur's
    (the slow reference) first so that the pool does not end on them."""
    jobs = [(name, start, seed, proxy_path) for name in names for start in range(0, counts[name], IMAGE_CHUNK)]
    jobs.sort(key=lambda job: job[0] != "glass_blur")
    rows = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(cell_job, job) for job in jobs]
        for name in names:
            parts = sorted((f.result()[1:] for f, job in zip(futures, jobs, strict=True) if job[0] == name),
                           key=lambda part: part[0])
            per_image = np.concatenate([out for _, out in parts], axis=2)[:, :, : counts[name]]
            for severity in range(1, 6):
                r = row(name, severity, per_image[severity - 1])
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
    """One line per type: the worst accuracy difference, the largest se and the range of MAC ratios over its five
    severities, and the type's verdict (FAIL if a cell fails, else UNRESOLVED if one is, else PASS)."""
    out = ["| corruption | images | worst acc diff ± se (pts) | mean acc diff (pts) | max se (pts) | MAC ratio range "
           "| |", "|---|---:|---:|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        worst = max(mine, key=lambda r: abs(r["diff"]))
        ratios = [r["ratio"] for r in mine]
        verdicts = {r["verdict"] for r in mine}
        verdict = "FAIL" if "FAIL" in verdicts else "UNRESOLVED" if "UNRESOLVED" in verdicts else "PASS"
        failing = [str(r["severity"]) for r in mine if r["verdict"] != "PASS"]
        out.append(f"| {name} | {mine[0]['n']} | {100 * worst['diff']:+.1f} ± {100 * worst['se']:.1f} "
                   f"(sev {worst['severity']}) | {100 * sum(r['diff'] for r in mine) / len(mine):+.1f} | "
                   f"{100 * max(r['se'] for r in mine):.1f} | {min(ratios):.3f}–{max(ratios):.3f} | {verdict}"
                   + (f" (sev {', '.join(failing)})" if failing else "") + " |")
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


def frost_summary(ic) -> str:
    """Mean grey level of the frost layer: the reference photographs' (as drawn) against our procedural layer's."""
    from editaudit.worker.ml.audit.corruptions.weather import frost_layer

    x, _ = image_chunk(0, 0)
    ref = np.mean([np.mean(m) for _, m, _ in frost_plates(ic)])
    ours = float(frost_layer(x, torch.Generator().manual_seed(0)).mean())
    return f"frost layer mean grey: reference photographs {ref:.3f}, ours {ours:.3f}"


def _reference_batch(args):
    """Worker for --pin: the reference's corruption of uint8 HWC images, image i seeded with seed + i."""
    images, name, severity, seed = args
    ic = compat_shims()
    out = []
    for i, img in enumerate(images):
        np.random.seed(seed + i)
        out.append(ic.corrupt(img, severity=severity, corruption_name=name))
    return np.stack(out)


def pin(seed: int, pool) -> dict:
    """The reference's mean absolute change per type and severity on the fixed batch of
    tests/unit/test_corruption_fidelity_stats.py (which pins these figures)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tests.unit.test_corruption_fidelity_stats import fixed_batch

    x = fixed_batch()
    x8 = to_uint8(x)
    futures = {(name, s): pool.submit(_reference_batch, (x8, name, s, seed)) for name in CORRUPTION_NAMES
               for s in range(1, 6)}
    return {name: [round(float((from_uint8(futures[name, s].result()) - x).abs().mean()), 4) for s in range(1, 6)]
            for name in CORRUPTION_NAMES}


def rule() -> str:
    return (f"rule, per type and severity: PASS if |acc ours - acc ref| <= {100 * ACC_TOL:.0f} points and MAC ours / "
            f"MAC ref within 1 +- {MAC_TOL:.2f}, where resolved ({RESOLVE} se <= {100 * ACC_TOL:.0f} points; "
            f"se = standard error of the paired accuracy difference); UNRESOLVED if {RESOLVE} se > "
            f"{100 * ACC_TOL:.0f} points (not a pass); FAIL otherwise")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None,
                    help=f"test images per type, rounded up to whole chunks of {IMAGE_CHUNK} (default: IMAGES, "
                    "per type)")
    ap.add_argument("--types", nargs="*", default=list(CORRUPTION_NAMES), choices=list(CORRUPTION_NAMES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (one thread each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proxy", default=PROXY_FILE, help="the proxy classifier's weights (safetensors)")
    ap.add_argument("--train-proxy", action="store_true",
                    help="train the proxy deterministically and print its digest (--write-proxy saves it to --proxy)")
    ap.add_argument("--write-proxy", action="store_true")
    ap.add_argument("--frost-plates", action="store_true", help="print the reference frost photographs' statistics")
    ap.add_argument("--pin", action="store_true", help="print the reference figures the unit test pins")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ic = compat_shims()
    if args.frost_plates:
        for plate in frost_plates(ic):
            print(*plate)
        return 0
    if args.train_proxy:
        t0 = time.perf_counter()
        model = train_proxy()
        print(f"proxy trained in {time.perf_counter() - t0:.0f} s, digest {digest(model)}")
        if args.write_proxy:
            save_proxy(model, args.proxy)
            print(f"written to {args.proxy}, digest as loaded {digest(load_proxy(args.proxy))}")
        return 0
    if args.pin:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            print("REFERENCE_MAC = {")
            for name, values in pin(args.seed, pool).items():
                print(f"    {name!r}: {values},")
            print("}")
        return 0
    t0 = time.perf_counter()
    counts = {name: -(-(args.images or IMAGES[name]) // IMAGE_CHUNK) * IMAGE_CHUNK for name in args.types}
    model = load_proxy(args.proxy)
    clean = [correct(model, *image_chunk(args.seed, s)) for s in range(0, max(counts.values()), IMAGE_CHUNK)]
    hits = torch.cat(clean)
    print(f"corruption fidelity, {date.today()}: imagecorruptions {_version('imagecorruptions')}, numpy "
          f"{np.__version__}, scikit-image {_version('scikit-image')}, opencv {_version('opencv-python')}, torch "
          f"{torch.__version__}, Python {platform.python_version()}; {args.workers} workers, seed {args.seed}\n"
          f"proxy classifier {os.path.basename(args.proxy)} digest {digest(model)}: clean accuracy "
          f"{float(hits.mean()):.3f} on {len(hits)} images; {frost_summary(ic)}\n"
          f"independent seeds per side, type, image and severity; {rule()}\n\n{HEADER}", flush=True)
    rows = compare(args.types, counts, args.seed, args.workers, args.proxy)
    verdicts = {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "FAIL", "UNRESOLVED")}
    print("\n" + summary(rows))
    print(f"\n{verdicts['PASS']}/{len(rows)} cells PASS, {verdicts['FAIL']} FAIL, {verdicts['UNRESOLVED']} UNRESOLVED; "
          f"largest se {100 * max(r['se'] for r in rows):.1f} points ({time.perf_counter() - t0:.0f} s)")
    return 0 if verdicts["PASS"] == len(rows) else 1


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
