"""API under concurrent load, on loopback: latency and throughput of `/healthz` (one `SELECT 1`) and
`GET /audits/{id}` (a full audit of 15 corruptions × 5 severities on three splits, ~40 kB of JSON) with 64 and 128
clients each, and how much slower the audit read is than the health check. Prints a table; not a test.

    python bench/load.py [--seconds 30] [--mode auto|production|embedded] [--clients 64 128]

production (the default when Postgres answers on 127.0.0.1:5432): `python -m editaudit.service.server` in its own
process on a fresh Postgres database, with a Redis broker and a local object directory, and an API key from
editaudit.core.keys; embedded: `editaudit serve` in a temporary directory (SQLite, anonymous on loopback). The
audit row is written straight into the database, so no worker has to run an edit first. Every request must answer
200: any error, or a server whose /metrics disagrees with the client's count, exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx

from editaudit.contracts import metrics as M
from editaudit.contracts.audit import CORRUPTION_NAMES
from editaudit.contracts.audit_result import AuditResult
from editaudit.core import db
from editaudit.core.migrate import upgrade
from editaudit.core.tables import render

PG_ADMIN = os.environ.get("EDITAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("EDITAUDIT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def audit_result() -> dict:
    """A finished audit as the worker stores it: every metric on three splits, paired deltas, sample ids."""
    names = [name for split in M.SPLITS for name in (
        M.accuracy(split), M.agreement(split), M.adv_accuracy(split, "pgd"), M.corruption_accuracy(split),
        *(M.corruption_accuracy(split, c, sev) for c in CORRUPTION_NAMES for sev in range(1, 6)))]
    base = {n: 0.9 - i * 1e-4 for i, n in enumerate(names)}
    cand = {n: v - 0.004 for n, v in base.items()}
    deltas = {n: {"value": -0.004, "ci95": [-0.011, 0.003], "p_value": 0.31} for n in names}
    samples = {"test": {"n": 450, "ids": None, "of": 450}, "edit": {"n": 8, "ids": None, "of": 8},
               "generalization": {"n": 112, "ids": None, "of": 112}}
    result = {"metrics": {"baseline": base, "candidate": cand}, "deltas": deltas, "samples": samples,
              "durations_s": {"audit": 41.2, "edit": 1.3}, "device": "cpu"}
    return AuditResult.model_validate(result).stored()  # the shape a worker stores, checked by the contract


def _unscoped(factory):
    """Sessions that may write any tenant's rows, where this version scopes sessions (editaudit.core.db)."""
    scope = getattr(db, "unscoped_sessions", None)
    return scope(factory, "bench: rows written behind the API") if scope else factory


def add_audit(url: str, tenant: str = "default") -> str:
    """A succeeded edit with its audit, written through the ORM; returns the audit id."""
    sessions = _unscoped(db.session_factory(url))
    now = db.utcnow()
    with sessions() as s:
        owned = {"tenant": tenant} if hasattr(db.Edit, "tenant") else {}
        model = db.Model(sha256="0" * 64, arch="editaudit/smallcnn", spec={"arch": "editaudit/smallcnn",
                         "num_classes": 10, "input_shape": [1, 8, 8]}, object_key="bench", size_bytes=1, **owned)
        s.add(model)
        s.flush()
        edit = db.Edit(model_id=model.id, method="finetune_layer", layers=["fc"], hyperparams={"steps": 30},
                       edit_set="bench", test_set="builtin:digits-test", status="succeeded",
                       started_at=now - timedelta(seconds=43), finished_at=now, **owned)
        s.add(edit)
        s.flush()
        audit = db.Audit(edit_id=edit.id, status="succeeded", config={"attacks": [], "seed": 0},
                         result=audit_result(), versions={"editaudit": "bench"}, finished_at=now, **owned)
        s.add(audit)
        s.commit()
        return audit.id


def api_key(url: str) -> dict[str, str]:
    """An Authorization header from a fresh key, where this version has keys (editaudit.core.keys)."""
    try:
        from editaudit.core import keys
    except ImportError:
        return {}
    sessions = _unscoped(db.session_factory(url))
    with sessions() as s:
        made = keys.create_key(s, tenant="default", name="bench", scopes=["audits:read"])
    token = made[1] if isinstance(made, tuple) else made
    return {"Authorization": f"Bearer {token}"}


def wait_healthy(base: str, proc: subprocess.Popen, headers: dict, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base}/healthz did not answer within {timeout_s:.0f} s")


@contextmanager
def production_server(tmp: Path):
    """The production server on the app, on a fresh Postgres database (dropped afterwards) and a Redis broker."""
    import psycopg

    name = f"editaudit_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    proc = None
    try:
        upgrade(url)
        audit_id, headers = add_audit(url), api_key(url)
        db.engine_for(url).dispose()  # the server gets the connections, not this process
        port = free_port()
        env = {**os.environ, "EDITAUDIT_DATABASE_URL": url, "EDITAUDIT_BROKER_URL": REDIS,
               "EDITAUDIT_STORE_URL": (tmp / "objects").as_uri(), "EDITAUDIT_DATA_DIR": str(tmp),
               "EDITAUDIT_QUEUE": f"editaudit-bench-{uuid.uuid4().hex[:8]}"}
        proc = subprocess.Popen([sys.executable, "-m", "editaudit.service.server", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--no-access-log"], env=env)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, headers)
        yield base, audit_id, headers
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        db.engine_for(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def embedded_server(tmp: Path):
    """`editaudit serve` on a SQLite file in `tmp` (migrated and given the audit row before it starts)."""
    url = f"sqlite:///{(tmp / 'editaudit.db').resolve()}"
    upgrade(url)
    audit_id = add_audit(url)
    db.engine_for(url).dispose()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "editaudit.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--data-dir", str(tmp)], stdout=(tmp / "serve.log").open("ab"),
                            stderr=subprocess.STDOUT, env={**os.environ, "EDITAUDIT_DATA_DIR": str(tmp)})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, {})
        yield base, audit_id, {}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def hammer(url: str, clients: int, seconds: float, headers: dict) -> dict:
    """`clients` concurrent loops of GET `url` for `seconds` (after a short warm-up): latencies and errors."""
    # idle connections are dropped by the client before uvicorn's keep-alive timeout (5 s) closes them: with equal
    # timeouts a request sent as the server closes is reset (a ReadError that says nothing about the API)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    warm_ok = 0
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:
        async def loop(until: float, record: bool) -> None:
            nonlocal warm_ok
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                try:
                    response = await client.get(url)
                    why = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as e:
                    why = type(e).__name__
                if why is not None:
                    errors[why] = errors.get(why, 0) + 1
                elif record:
                    latencies.append(time.perf_counter() - t0)
                else:
                    warm_ok += 1

        await asyncio.gather(*(loop(time.perf_counter() + 1.0, False) for _ in range(clients)))  # connections up
        start = time.perf_counter()
        await asyncio.gather(*(loop(start + seconds, True) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies) + sum(errors.values()), "ok": len(latencies), "warm_ok": warm_ok,
            "errors": errors, "p50": pick(0.50), "p99": pick(0.99), "rps": len(latencies) / elapsed}


def server_count(base: str, route: str) -> int:
    """GET 200s the server's /metrics (unauthenticated) counted under the route template `route`."""
    text = httpx.get(base + "/metrics", timeout=30).text
    pattern = re.compile(r'^editaudit_http_request_duration_seconds_count\{(.*)\} (\S+)$', re.M)
    return int(sum(float(v) for labels, v in pattern.findall(text)
                   if f'route="{route}"' in labels and 'status="200"' in labels and 'method="GET"' in labels))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30, help="measured time per endpoint and concurrency")
    ap.add_argument("--clients", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--mode", choices=["auto", "production", "embedded"], default="auto")
    args = ap.parse_args()
    mode = args.mode if args.mode != "auto" else "production" if reachable("127.0.0.1", 5432) and \
        reachable("127.0.0.1", 6379) else "embedded"

    rows, results, failed = [], {}, False
    with tempfile.TemporaryDirectory(prefix="editaudit-load-") as tmp:
        server = production_server if mode == "production" else embedded_server
        with server(Path(tmp)) as (base, audit_id, headers):
            print(f"{mode} server on {base}; {os.cpu_count()} CPU cores; {args.seconds:.0f} s per run", flush=True)
            for clients in args.clients:
                for name, path, route in (("healthz", "/healthz", "/healthz"),
                                          ("audit", f"/audits/{audit_id}", "/audits/{audit_id}")):
                    before = server_count(base, route)
                    r = asyncio.run(hammer(base + path, clients, args.seconds, headers))
                    # the server's /metrics counted every 200 the client saw (warm-up included) under the template
                    counted = server_count(base, route) - before
                    results[name, clients] = r
                    failed |= bool(r["errors"]) or counted != r["ok"] + r["warm_ok"]
                    rows.append([name, clients, r["requests"], sum(r["errors"].values()), f"{r['p50'] * 1e3:.1f}",
                                 f"{r['p99'] * 1e3:.1f}", f"{r['rps']:.0f}", f"{counted}/{r['ok'] + r['warm_ok']}"])
                    print(f"  {name} × {clients}: {r['requests']} requests, errors {r['errors'] or 0}", flush=True)
    print()
    print(render(["endpoint", "clients", "requests", "errors", "p50 ms", "p99 ms", "req/s", "/metrics count/client"],
                 rows))
    print()
    print(render(["clients", "audit/healthz p50", "audit/healthz p99"],
                 [[c, f"{results['audit', c]['p50'] / results['healthz', c]['p50']:.2f}",
                   f"{results['audit', c]['p99'] / results['healthz', c]['p99']:.2f}"] for c in args.clients]))
    if failed:
        print("FAILED: a request did not answer 200, or /metrics counted other than the client", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
