"""A connection flood against the production stack, on loopback (issue 22): 20,000 connections that never send a
whole request head (half send nothing, half a partial head trickled a line every 2 s) and 200 uploads trickling
100 bytes a second, while one client keeps calling `/healthz` and an authenticated `GET /models` on a keep-alive
connection, and a health probe calls `/healthz` on a new connection every 0.5 s from 127.0.0.1 (as the compose
health check does). Prints the success rate and p50 / p99 of those calls, the API process's RSS and open file
descriptors, what the flood and the uploads saw, and the size of the API's log; exits 1 when under 99% of the calls
of any kind (keep-alive /healthz, /models, probe) answered 200 within 10 s. Not a test.

    python bench/flood.py [--connections 20000] [--uploads 200] [--seconds 60] [--sources 64] [--plain-uvicorn]

The stack: a fresh Postgres database (dropped afterwards), the Redis broker, a moto S3 server over HTTP as the
store, and the API as production runs it, `python -m editaudit.service.server`, in its own process with its default
connection limits, keys required (one read key for the client, one upload key). Everything is bounded: the flood
holds at most --connections sockets (a socket the server closes is reopened after 1 s, at most --max-attempts
connects in all) and every part stops after --seconds. The flood comes from --sources addresses in 127.0.1.0/24,
the uploads from 127.0.0.3 and the client from 127.0.0.2 (Linux routes 127.0.0.0/8 to loopback), so none of them
is the probe address 127.0.0.1 that the server exempts from its per-address cap: the client gets in on the same
terms as the flood. The flood runs in several processes (each under its own RLIMIT_NOFILE, raised to the hard
limit); the API's RSS and descriptors are sampled every 0.5 s with psutil. `--plain-uvicorn` runs the same against
`uvicorn editaudit.service.app:app` (uvicorn's defaults, no connection limits): the server before issue 22.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path
from typing import cast

MIB = 1024 * 1024
CALL_TIMEOUT_S = 10.0
SUCCESS_BOUND = 0.99
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux: the port is picked at connect()


def raise_nofile() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def new_socket(source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source, 0))
    return s


# ------------------------------------------------------------------------------------------- the flood (children)


def flood(host: str, port: int, sources: list[str], count: int, seconds: float, max_attempts: int) -> dict:
    """Holds up to `count` connections that never finish a request head; reopens one the server closed after 1 s."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    stats: Counter = Counter()
    reopen: deque[float] = deque()
    to_open, held, peak, n = count, 0, 0, 0
    slow: set[socket.socket] = set()
    start = time.monotonic()
    end, next_trickle = start + seconds, start + 2

    def drop(s: socket.socket, was_open: bool) -> None:
        nonlocal held
        sel.unregister(s)
        slow.discard(s)
        s.close()
        held -= was_open
        reopen.append(time.monotonic() + 1.0)

    while (now := time.monotonic()) < end:
        while reopen and reopen[0] <= now:
            reopen.popleft()
            to_open += 1
        for _ in range(min(to_open, 500)):
            if stats["attempts"] >= max_attempts:
                stats.setdefault("attempts_spent_at_s", round(now - start))
                break
            to_open -= 1
            n += 1
            stats["attempts"] += 1
            try:
                s = new_socket(sources[n % len(sources)])
                rc = s.connect_ex((host, port))
            except OSError:
                stats["connect_error"] += 1
                reopen.append(now + 1.0)
                continue
            if rc not in (0, errno.EINPROGRESS):
                stats["connect_error"] += 1
                s.close()
                reopen.append(now + 1.0)
                continue
            sel.register(s, selectors.EVENT_WRITE, ("connecting", n % 2 == 0))
        for key, _ in sel.select(timeout=0.05):
            s, (state, partial) = cast(socket.socket, key.fileobj), key.data
            if state == "connecting":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    stats["connect_failed"] += 1
                    drop(s, False)
                    continue
                stats["connected"] += 1
                held += 1
                peak = max(peak, held)
                if partial:
                    try:
                        s.send(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")
                        slow.add(s)
                    except OSError:
                        pass
                sel.modify(s, selectors.EVENT_READ, ("open", partial))
                continue
            try:
                data = s.recv(4096)
                stats["closed_by_server" if data == b"" else "answered"] += 1
            except OSError:
                stats["reset_by_server"] += 1
            drop(s, True)
        if now >= next_trickle:  # slowloris: a header line every 2 s, never the blank line that ends the head
            next_trickle = now + 2
            for s in list(slow):
                try:
                    s.send(b"X-Trickle: 1\r\n")
                except OSError:
                    pass
    stats["held_at_end"], stats["peak_held"] = held, peak
    for key in list(sel.get_map().values()):
        cast(socket.socket, key.fileobj).close()
    return dict(stats)


def trickling_uploads(host: str, port: int, source: str, count: int, seconds: float, token: str) -> dict:
    """`count` uploads announcing 100 MiB and sending 100 bytes a second; each one answered is reopened 1 s later.
    Returns the answers' status lines and how long after its head each came."""
    raise_nofile()
    boundary = "floodboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.npz\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    head = (f"POST /datasets HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(part) + 100 * MIB}"
            "\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    stats: Counter = Counter()
    cut_after: list[float] = []
    reopen: deque[float] = deque([0.0] * count)
    start = time.monotonic()
    end, next_tick = start + seconds, start + 1
    while (now := time.monotonic()) < end:
        while reopen and reopen[0] <= now:
            reopen.popleft()
            try:
                s = new_socket(source)
                s.setblocking(True)
                s.settimeout(5)
                s.connect((host, port))
                s.sendall(head + part)
                s.setblocking(False)
            except OSError:
                stats["connect_failed"] += 1
                reopen.append(now + 1.0)
                continue
            stats["started"] += 1
            sel.register(s, selectors.EVENT_READ, now)
        for key, _ in sel.select(timeout=0.1):
            s = cast(socket.socket, key.fileobj)
            try:
                reply = s.recv(4096)
                status = reply.split(b"\r\n", 1)[0].decode("latin-1") or "closed without an answer"
            except OSError:
                status = "reset"
            stats[status] += 1
            if status.startswith("HTTP/1.1 408"):
                cut_after.append(time.monotonic() - key.data)
            sel.unregister(s)
            s.close()
            reopen.append(time.monotonic() + 1.0)
        if now >= next_tick:
            next_tick = now + 1
            for key in list(sel.get_map().values()):
                try:
                    cast(socket.socket, key.fileobj).send(b"a" * 100)
                except OSError:
                    pass
    stats["open_at_end"] = len(sel.get_map())
    for key in list(sel.get_map().values()):
        cast(socket.socket, key.fileobj).close()
    return {"stats": dict(stats), "cut_after_s": cut_after}


def child_main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    kind = spec.pop("kind")
    out = flood(**spec) if kind == "flood" else trickling_uploads(**spec)
    print(json.dumps(out), flush=True)
    return 0


def spawn(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            text=True)


# ----------------------------------------------------------------------------------------------- the stack


@contextmanager
def production_stack(tmp: Path, plain_uvicorn: bool = False):
    """Postgres (a fresh database), Redis, moto S3 over HTTP, and `python -m editaudit.service.server`; yields
    (base url, server pid, read headers, upload token, server log path)."""
    import boto3
    import psycopg
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from load import PG_ADMIN, REDIS, add_audit, api_key, free_port, reachable, wait_healthy

    from editaudit.core import db, keys
    from editaudit.core.migrate import upgrade

    for (host, port), what in ((("127.0.0.1", 5432), "Postgres"), (("127.0.0.1", 6379), "Redis")):
        if not reachable(host, port):
            raise SystemExit(f"{what} is not reachable on {host}:{port}: it is part of the production stack")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({k: os.environ.get(k, v) for k, v in creds.items()})
    s3_port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{s3_port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="editaudit-flood")
    name = f"editaudit_flood_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    proc, log_path = None, tmp / "api.log"
    try:
        upgrade(url)
        add_audit(url)  # a model (and an edit and audit) for the listing to return
        headers = api_key(url)
        with db.unscoped_sessions(db.session_factory(url), "bench: an upload key")() as s:
            _, upload_token = keys.create_key(s, "default", "flood-uploads", ["models:write"])
        db.engine_for(url).dispose()
        port = free_port()
        env = {**os.environ, "EDITAUDIT_DATABASE_URL": url, "EDITAUDIT_BROKER_URL": REDIS,
               "EDITAUDIT_STORE_URL": "s3://editaudit-flood", "EDITAUDIT_S3_ENDPOINT_URL": endpoint,
               "EDITAUDIT_DATA_DIR": str(tmp), "EDITAUDIT_QUEUE": f"editaudit-flood-{uuid.uuid4().hex[:8]}",
               "TMPDIR": str(tmp)}
        server = ["uvicorn", "editaudit.service.app:app"] if plain_uvicorn else ["editaudit.service.server"]
        with log_path.open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", *server, "--host", "127.0.0.1", "--port", str(port),
                                     "--log-level", "warning", "--no-access-log"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc, headers)
        yield base, proc.pid, headers, upload_token, log_path
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        db.engine_for(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        moto.stop()


# ------------------------------------------------------------------------------------------- the measurement


def client_loop(base: str, source: str, headers: dict, until: float) -> dict[str, list]:
    """/healthz and GET /models (a key's listing, from Postgres), alternately, on one keep-alive client: (seconds,
    status or error) per call."""
    import httpx

    calls: dict[str, list] = {"healthz": [], "models": []}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=CALL_TIMEOUT_S) as client:
        while time.monotonic() < until:
            for name, path, extra in (("healthz", "/healthz", {}), ("models", "/models", headers)):
                t0 = time.perf_counter()
                try:
                    outcome: int | str = client.get(base + path, headers=extra).status_code
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                calls[name].append((time.perf_counter() - t0, outcome))
    return calls


def probe_loop(base: str, until: float, out: list) -> None:
    """`GET /healthz` on a new connection every 0.5 s (the compose health check's way), from 127.0.0.1."""
    import httpx

    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            outcome: int | str = httpx.get(base + "/healthz", timeout=CALL_TIMEOUT_S).status_code
        except httpx.HTTPError as e:
            outcome = type(e).__name__
        out.append((time.perf_counter() - t0, outcome))
        time.sleep(0.5)


class Sampler(threading.Thread):
    """The API process's RSS and open descriptors every 0.5 s."""

    def __init__(self, pid: int):
        import psutil

        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.rss: list[int] = []
        self.fds: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.rss.append(self.proc.memory_info().rss)
                self.fds.append(self.proc.num_fds())
            except Exception:  # noqa: BLE001 - the process ended
                return


def pick(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=20_000, help="half-open connections held at once")
    ap.add_argument("--uploads", type=int, default=200, help="trickling uploads held at once")
    ap.add_argument("--seconds", type=float, default=60, help="how long the flood, the uploads and the client run")
    ap.add_argument("--sources", type=int, default=64, help="flood source addresses (127.0.1.x), at most 250")
    ap.add_argument("--processes", type=int, default=4, help="flood processes (each holds its share of sockets)")
    ap.add_argument("--max-attempts", type=int, default=400_000, help="connects the flood may make in all")
    ap.add_argument("--plain-uvicorn", action="store_true", help="serve with `uvicorn editaudit.service.app:app` "
                    "(no connection limits) instead of `python -m editaudit.service.server`")
    args = ap.parse_args()

    from editaudit.core.tables import render

    sources = [f"127.0.1.{i + 1}" for i in range(max(1, min(args.sources, 250)))]
    with tempfile.TemporaryDirectory(prefix="editaudit-flood-") as tmp_dir, \
            production_stack(Path(tmp_dir), args.plain_uvicorn) as (base, pid, headers, upload_token, log_path):
        host, port = base.removeprefix("http://").split(":")
        sampler = Sampler(pid)
        baseline_rss, baseline_fds = sampler.proc.memory_info().rss, sampler.proc.num_fds()
        log_before = log_path.stat().st_size
        server = "uvicorn editaudit.service.app:app" if args.plain_uvicorn else "python -m editaudit.service.server"
        print(f"API ({server}, pid {pid}) on {base}: RSS {baseline_rss / 1e6:.0f} MB, "
              f"{baseline_fds} fds; {os.cpu_count()} CPU cores; flooding for {args.seconds:.0f} s", flush=True)
        sampler.start()
        share = [args.connections // args.processes + (i < args.connections % args.processes)
                 for i in range(args.processes)]
        children = [spawn({"kind": "flood", "host": host, "port": int(port), "count": share[i],
                           "sources": sources[i::args.processes] or sources, "seconds": args.seconds,
                           "max_attempts": args.max_attempts // args.processes}) for i in range(args.processes)]
        uploads = spawn({"kind": "uploads", "host": host, "port": int(port), "source": "127.0.0.3",
                         "count": args.uploads, "seconds": args.seconds, "token": upload_token})
        until = time.monotonic() + args.seconds
        probes: list = []
        prober = threading.Thread(target=probe_loop, args=(base, until, probes), daemon=True)
        prober.start()
        calls = client_loop(base, "127.0.0.2", headers, until)
        prober.join(CALL_TIMEOUT_S + 5)
        calls["healthz, new connection"] = probes
        flood_stats: Counter = Counter()
        spent_at = []
        for child in children:
            out, _ = child.communicate(timeout=args.seconds + 120)
            child_stats = json.loads(out)
            spent_at.append(child_stats.pop("attempts_spent_at_s", None))
            flood_stats.update(child_stats)
        up_out, _ = uploads.communicate(timeout=args.seconds + 120)
        up = json.loads(up_out)
        time.sleep(1)
        sampler.stop.set()
        sampler.join()
        after_fds = sampler.proc.num_fds()
        log_text = log_path.read_bytes()[log_before:].decode("utf-8", "replace")

    rows, ok_all, total_all, worst = [], 0, 0, 1.0
    for name, results in calls.items():
        ok = [t for t, outcome in results if outcome == 200]
        errors = Counter(str(outcome) for _, outcome in results if outcome != 200)
        ok_all, total_all = ok_all + len(ok), total_all + len(results)
        worst = min(worst, len(ok) / max(1, len(results)))
        lat = sorted(t for t, _ in results)
        rows.append([name, len(results), f"{len(ok) / max(1, len(results)):.2%}", dict(errors) or 0,
                     f"{pick(lat, 0.5) * 1e3:.1f}", f"{pick(lat, 0.99) * 1e3:.1f}", f"{lat[-1] * 1e3:.0f}" if lat
                     else "-"])
    rate = ok_all / max(1, total_all)
    print()
    print(render(["client call", "calls", "200s", "errors", "p50 ms", "p99 ms", "max ms"], rows))
    print(f"\nsuccess rate {rate:.2%} of {total_all} calls, {worst:.2%} for the worst kind (bound "
          f"{SUCCESS_BOUND:.0%} for each)")
    print(f"API RSS: {baseline_rss / 1e6:.0f} MB before, peak {max(sampler.rss, default=0) / 1e6:.0f} MB; "
          f"open fds: {baseline_fds} before, peak {max(sampler.fds, default=0)}, {after_fds} after")
    spent = f" (all spent {max(spent_at)} s in)" if all(t is not None for t in spent_at) else ""
    print(f"flood: {flood_stats['attempts']} connects{spent}, {flood_stats['connected']} completed, peak "
          f"{flood_stats['peak_held']} held (client side), closed by the server {flood_stats['closed_by_server']}, "
          f"reset by the server {flood_stats['reset_by_server']}, connect failures "
          f"{flood_stats['connect_failed'] + flood_stats['connect_error']}, answered {flood_stats['answered']}")
    cut = sorted(up["cut_after_s"])
    print(f"trickling uploads: {up['stats'].get('started', 0)} started, answers "
          f"{ {k: v for k, v in up['stats'].items() if k not in ('started', 'open_at_end')} }; 408 after "
          f"{pick(cut, 0.5):.1f} s (median), {cut[-1] if cut else float('nan'):.1f} s (max); "
          f"{up['stats'].get('open_at_end', 0)} still open at the end")
    lines = [line for line in log_text.splitlines() if line.strip()]
    print(f"API log during the run: {len(lines)} lines, {len(log_text.encode()) / 1024:.1f} KiB, "
          f"{log_text.count('Traceback')} tracebacks")
    for line in lines[:12]:
        print(f"  | {line[:200]}")
    if worst < SUCCESS_BOUND:
        print(f"FAILED: {worst:.2%} of one kind of call answered 200 (bound {SUCCESS_BOUND:.0%})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
