"""Image-folder imports end to end, and whether memory stays flat as the set grows: an N-image 224x224 JPEG tar is
scanned (`scan_archive`), decoded into uint8 shards (`decode_to_shards`, as the worker's ingest job does), loaded
back (`load_sharded`: every shard's sha256 checked) and audited by a tiny CNN on clean images and one corruption
(gaussian_noise, severity 3) in batches of 256, streamed from the shard files. Prints images/s and each step's peak
RSS; not a test.

    python bench/ingest.py [--n 20000] [--scale 4] [--batch 256] [--workdir DIR]   # quick look: --n 2000

Each size runs in fresh subprocesses (one for the ingest, one for the load and the audit), so each peak RSS is that
step's own (ru_maxrss of the process); with --scale 4 the same is run at 4N, and the peaks should stay about flat
while the archive and the shards grow 4x. The archive's members cycle through 512 distinct synthetic JPEGs (smooth
noise, quality 90, ~10-20 kB each), so writing it stays cheap; every member is decoded all the same.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from editaudit.core.tables import render

SIZE = 224
DISTINCT = 512
CLASSES = 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def jpegs(seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(DISTINCT):
        small = Image.fromarray(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8))
        arr = np.asarray(small.resize((SIZE, SIZE), Image.Resampling.BICUBIC)).astype(np.int16)
        arr = np.clip(arr + rng.integers(-12, 13, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_tar(path: Path, n: int, members: list[bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            data = members[i % len(members)]
            info = tarfile.TarInfo(f"images/class{i % CLASSES:02d}/img{i:07d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------------------------ the children


def child_ingest(tar: Path, out: Path) -> dict:
    from editaudit.contracts.formats.archive import ArchiveLimits, iter_archive, scan_archive
    from editaudit.worker.memory import steady_allocator
    from editaudit.worker.ml.ingest import decode_to_shards

    steady_allocator()  # as every worker process sets it (editaudit.worker.celery_app)
    limits = ArchiveLimits()
    (out / "shards").mkdir(parents=True)
    t0 = time.perf_counter()
    with open(tar, "rb") as f:
        summary = scan_archive(f, tar.name, limits)
    scan_s = time.perf_counter() - t0

    def put_shard(path: Path) -> tuple[str, str]:  # a local store: move the file, hash it streamed
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        key = f"shards/{digest}.safetensors"
        shutil.move(path, out / key)
        return key, digest

    t0 = time.perf_counter()
    with open(tar, "rb") as f:
        manifest = decode_to_shards(iter_archive(f, tar.name, limits), summary, {}, put_shard, limits, workdir=out)
    ingest_s = time.perf_counter() - t0
    (out / "manifest.json").write_text(json.dumps(manifest))
    return {"n": manifest["n"], "shards": len(manifest["shards"]), "scan_s": scan_s, "ingest_s": ingest_s,
            "shard_mb": sum(s["bytes"] for s in manifest["shards"]) / 2**20, "peak_rss_mb": peak_rss_mb()}


def child_audit(out: Path, batch: int) -> dict:
    import torch
    from torch import nn

    from editaudit.contracts.audit import AuditConfig
    from editaudit.worker.memory import steady_allocator
    from editaudit.worker.ml.archs.registry import Normalized
    from editaudit.worker.ml.audit.runner import evaluate_model
    from editaudit.worker.ml.sharded import load_sharded

    steady_allocator()  # as every worker process sets it (editaudit.worker.celery_app)
    manifest = json.loads((out / "manifest.json").read_text())
    t0 = time.perf_counter()
    ds = load_sharded(manifest, [out / s["key"] for s in manifest["shards"]])
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES))
    model = Normalized(net, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 3).eval()
    cfg = AuditConfig(batch_size=batch, corruptions={"names": ["gaussian_noise"], "severities": [3]}, compile="off")
    t0 = time.perf_counter()
    ev = evaluate_model(model, {"test": ds}, cfg, torch.device("cpu"))
    audit_s = time.perf_counter() - t0
    assert len(ev.preds["test"]) == len(ds)
    return {"n": len(ds), "load_s": load_s, "audit_s": audit_s, "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"child {args[0]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="images in the first archive")
    ap.add_argument("--scale", type=int, default=4, help="also run scale x n (1: only n)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workdir", default=None, help="where archives and shards go (default: a temporary folder)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        res = child_ingest(Path(rest[0]), Path(rest[1])) if kind == "ingest" else child_audit(Path(rest[0]),
                                                                                               int(rest[1]))
        print(json.dumps(res))
        return
    sizes = [args.n] if args.scale <= 1 else [args.n, args.n * args.scale]
    members = jpegs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.workdir) as tmp:
        for n in sizes:
            tar, out = Path(tmp) / f"set{n}.tar", Path(tmp) / f"out{n}"
            write_tar(tar, n, members)
            ing = run_child("ingest", str(tar), str(out))
            aud = run_child("audit", str(out), str(args.batch))
            rows.append([n, f"{os.path.getsize(tar) / 2**20:.0f}", f"{ing['shard_mb']:.0f} / {ing['shards']}",
                         f"{n / ing['scan_s']:.0f}", f"{n / ing['ingest_s']:.0f}", f"{ing['peak_rss_mb']:.0f}",
                         f"{n / aud['load_s']:.0f}", f"{n / aud['audit_s']:.0f}", f"{aud['peak_rss_mb']:.0f}"])
            print(f"N={n}: ingest {ing['ingest_s']:.1f} s, audit {aud['audit_s']:.1f} s", file=sys.stderr)
            tar.unlink()
            shutil.rmtree(out)
    import torch

    print(f"image-folder ingest and streaming audit, {SIZE}x{SIZE} JPEG, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(render(["N", "tar MiB", "shards MiB / count", "scan img/s", "ingest img/s", "ingest peak RSS MB",
                  "load+sha img/s", "audit img/s (clean + 1 corruption)", "audit peak RSS MB"], rows))


if __name__ == "__main__":
    main()
