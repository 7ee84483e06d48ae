"""Sharded audits on this machine's production parts (Postgres, Redis, real `celery worker` processes): the same
edit and audit with 1 and with 2 worker processes, a digest of the merged numbers (metrics, intervals, deltas: they
must be equal), the speedup, and a sharded audit of --big images with each worker's peak RSS. Prints a table; not a
test. The large audit runs the corruptions only (no PGD), so that it ends in minutes on a CPU.

    python bench/scale.py [--n 4000] [--big 20000] [--shard 1024] [--threads 1]     # quick look: --n 1000 --big 0

The model is a small CNN trained here for a few seconds on 3x32x32 images (sklearn's digits, upsampled, tinted and
noised: --n distinct images, seeded); the audit is PGD-10 at eps 8/255 plus gaussian_noise and contrast at severity
3, batches of 128, shards of --shard samples. Each run is a different tenant, so no run reuses another's cached
baseline evaluation. Each worker gets --threads torch threads (EDITAUDIT_TORCH_THREADS): two single-thread workers
on two cores is the comparison that shows what sharding adds; a worker's peak RSS is its VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from editaudit.core.tables import render

AUDIT = {"attacks": [{"id": "pgd", "name": "pgd", "norm": "inf", "eps": 8 / 255, "steps": 10}],
         "corruptions": {"names": ["gaussian_noise", "contrast"], "severities": [3]}, "batch_size": 128}
SPEC = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [3, 32, 32]}
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 3x32x32 float32 images in [0, 1]: digits upsampled 4x, tinted per image, with pixel noise."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(d.images), n)
    x = np.kron(d.images[pick] / 16.0, np.ones((4, 4)))[:, None].astype(np.float32)  # 8x8 -> 32x32
    tint = rng.uniform(0.4, 1.0, (n, 3, 1, 1)).astype(np.float32)
    x = np.clip(x * tint + rng.normal(0, 0.08, (n, 3, 32, 32)).astype(np.float32), 0, 1)
    return x.astype(np.float32), d.target[pick].astype(np.int64)


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def trained_weights(seed: int = 0) -> bytes:
    import safetensors.torch
    import torch

    from editaudit.worker.ml.archs import build_inner
    from editaudit.worker.ml.train import train_classifier

    torch.manual_seed(seed)
    net = build_inner(SPEC["arch"], SPEC["num_classes"], SPEC["input_shape"])
    x, y = images(3000, seed + 100)
    train_classifier(net, torch.from_numpy(x), torch.from_numpy(y), epochs=3, settle_epochs=1)
    return safetensors.torch.save({k: v.contiguous() for k, v in net.state_dict().items()})


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def digest(audit: dict) -> str:
    stable = {k: audit[k] for k in ("metrics", "intervals", "deltas", "curves")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


class Stack:
    """A fresh Postgres database, a Redis queue of its own, the API in-process; workers started on demand."""

    def __init__(self, workdir: Path, shard: int, threads: int):
        import psycopg

        from editaudit.core.migrate import upgrade
        from editaudit.core.settings import Settings

        self.db = f"editaudit_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.settings = Settings(data_dir=workdir, database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}",
                                 broker_url="redis://127.0.0.1:6379/0", queue=f"editaudit-bench-{uuid.uuid4().hex[:8]}",
                                 device="cpu", audit_shard_samples=shard, torch_threads=threads, key_cache_s=0)
        upgrade(self.settings.resolved_database_url)
        self.workdir, self.workers = workdir, []

    def client(self):
        from fastapi.testclient import TestClient

        from editaudit.service.app import create_app

        return TestClient(create_app(self.settings, allow_anonymous=False))

    def headers(self, tenant: str) -> dict:
        from editaudit.core import db, keys

        sessions = db.unscoped_sessions(db.session_factory(self.settings.resolved_database_url), "bench setup")
        with sessions() as s:
            _, token = keys.create_key(s, tenant, f"{tenant}-key", ["admin"])
        return {"Authorization": f"Bearer {token}"}

    def start_workers(self, n: int) -> None:
        from editaudit.cli.embedded import start_worker

        self.stop_workers()
        self.workers = [start_worker(self.settings, self.workdir / f"worker-{i}.log", node=f"w{i}") for i in range(n)]

    def stop_workers(self) -> list[float]:
        peaks = []
        for w in self.workers:
            peaks.append(peak_rss_mb(w.pid) if w.poll() is None else float("nan"))
            w.terminate()
            w.wait(timeout=60)
        self.workers = []
        return peaks

    def close(self) -> None:
        import psycopg

        from editaudit.core.db import engine_for

        self.stop_workers()
        engine_for(self.settings.resolved_database_url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def run(c, headers: dict, weights: bytes, test: bytes, edit: bytes, audit: dict = AUDIT) -> tuple[dict, float, dict]:
    """Upload, submit, wait: (the audit, seconds from the job's start to its end, its progress at the end)."""
    model = c.post("/models", headers=headers, files={"weights": ("m.safetensors", weights)},
                   data={"spec": json.dumps(SPEC)})
    assert model.status_code == 201, model.text
    model = model.json()
    test_id = c.post("/datasets", headers=headers, files={"file": ("test.npz", test)}).json()["id"]
    edit_id = c.post("/datasets", headers=headers, files={"file": ("edit.npz", edit)}).json()["id"]
    job = c.post("/edits", headers=headers, json={"model_id": model["id"], "method": "finetune_layer",
                                                  "layers": ["fc"], "edit_set": edit_id, "test_set": test_id,
                                                  "hyperparams": {"locality_weight": 0}, "audit": audit})
    assert job.status_code == 202, job.text
    job = job.json()
    while True:
        e = c.get(f"/edits/{job['id']}", headers=headers).json()
        if e["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    if e["status"] != "succeeded":
        raise SystemExit(f"the edit ended {e['status']}: {e.get('error')}")
    audit = c.get(f"/audits/{job['audit_id']}", headers=headers).json()
    return audit, audit["durations_s"]["audit"], e["progress"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="test images of the 1- vs 2-worker comparison")
    ap.add_argument("--big", type=int, default=20000, help="test images of the large sharded audit (0: skip it)")
    ap.add_argument("--shard", type=int, default=1024, help="samples per shard (audit_shard_samples)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (EDITAUDIT_TORCH_THREADS)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="editaudit-scale-"))
    print(f"training the model ... (python {sys.version.split()[0]}, {os.cpu_count()} cores)", flush=True)
    weights = trained_weights()
    x, y = images(max(args.n, args.big), seed=1)
    edit = npz(*images(8, seed=2))
    stack = Stack(workdir, args.shard, args.threads)
    rows, digests = [], {}
    try:
        tenants = {name: stack.headers(name) for name in ("scale-1", "scale-2", "scale-big")}  # before the API starts
        with stack.client() as c:
            test = npz(x[: args.n], y[: args.n])
            for workers in (1, 2):
                stack.start_workers(workers)
                audit, seconds, progress = run(c, tenants[f"scale-{workers}"], weights, test, edit)
                peaks = stack.stop_workers()
                digests[workers] = digest(audit)
                rows.append([f"{args.n}", workers, audit["sections"]["inputs"]["shards"], f"{seconds:.1f}",
                             f"{args.n / seconds:.0f}", digests[workers], " / ".join(f"{p:.0f}" for p in peaks)])
            if args.big:
                stack.start_workers(2)
                audit, seconds, _ = run(c, tenants["scale-big"], weights, npz(x[: args.big], y[: args.big]),
                                        edit, {**AUDIT, "attacks": []})
                peaks = stack.stop_workers()
                rows.append([f"{args.big}", 2, audit["sections"]["inputs"]["shards"], f"{seconds:.1f}",
                             f"{args.big / seconds:.0f}", digest(audit), " / ".join(f"{p:.0f}" for p in peaks)])
    finally:
        stack.close()
    print(render(["images", "workers", "shards", "audit s", "images/s", "digest", "peak RSS MB per worker"], rows))
    same = digests[1] == digests[2]
    speedup = float(rows[0][3]) / float(rows[1][3])
    print(f"\n1 vs 2 workers: digests {'identical' if same else 'DIFFER'}; speedup {speedup:.2f}x "
          f"(goal >= 1.8x where the machine has the cores: {os.cpu_count()} here)")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
