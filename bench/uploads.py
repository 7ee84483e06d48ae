"""Streaming uploads, on loopback: how much the API's memory grows while a 1 GiB upload goes in, and how much of a
body it takes in before refusing one that is over the limit or carries no key. Prints a table; exits 1 when a
bound is violated. Not a test (it moves a few GiB through the disk).

    python bench/uploads.py [--size-mib 1024] [--skip-checkpoint]

Each case starts `editaudit serve` (embedded: SQLite, a local object directory, a local worker process) on a free
port in a fresh temporary directory, with the settings the case needs:

- a 1 GiB float32 safetensors dataset, then the same file again (200, the same id); a 1 GiB uint8 [N,H,W,C] one;
  an .npz that expands to 1 GiB of zeros (~1 MiB on the wire) and a bomb that would expand to 3 GiB (over the
  default 2 GiB limit: 422); a checkpoint of torchvision/vit_l_16 (~1.1 GiB of zeros, written from the torch-free
  architecture manifest). The files are written to disk in slices and sent by httpx from the file; a thread
  samples the API process's RSS (the server process itself; the worker is a child and not counted) every 10 ms.
  Bound: peak - baseline < 100 MB.
- EDITAUDIT_MAX_UPLOAD_MB=64 and a 512 MiB body, declared (Content-Length) and chunked: a raw socket sends as fast
  as the server takes it and stops when the answer arrives. Bound: 413, with at most 8 MiB sent (socket buffers
  included) for the declared body, at most the limit + 8 MiB for the chunked one.
- EDITAUDIT_API_TOKEN set and no Authorization header on a 512 MiB upload: 401, at most 8 MiB sent.

"file reads" is the API process's read_chars (/proc/PID/io) over an upload: how often it read the spooled file
(hash, validation, copy to the store), which shows the upload was read from disk rather than held in memory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil

from editaudit.core import arch_manifest
from editaudit.core.tables import render

MIB = 1024 * 1024
RSS_BOUND = 100 * 1000 * 1000
REFUSAL_SLACK = 8 * MIB
TOKEN = "bench-uploads-secret-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(tmp: Path, **env_extra: str):
    """`editaudit serve` in `tmp`; yields (base url, API process, headers that authenticate)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("EDITAUDIT_API_TOKEN", "EDITAUDIT_MAX_UPLOAD_MB")}
    # the spooled upload lands in TMPDIR: inside the bench's directory, removed with it
    env.update({"EDITAUDIT_DATA_DIR": str(tmp / "data"), "TMPDIR": str(tmp), **env_extra})
    log = (tmp / "serve.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "editaudit.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--data-dir", str(tmp / "data")], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {env_extra['EDITAUDIT_API_TOKEN']}"} if "EDITAUDIT_API_TOKEN" in env_extra \
        else {}
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}; see {tmp / 'serve.log'}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}/healthz did not answer within 120 s")
            time.sleep(0.2)
        yield base, psutil.Process(proc.pid), headers
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


# ---------------------------------------------------------------------------------------------------- files


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> int:
    """{name: (dtype, shape, itemsize)} of zeros, written in 8 MiB slices (never whole in memory)."""
    header, offset = {}, 0
    for name, (dtype, shape, itemsize) in tensors.items():
        n = itemsize
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the body aligned, as safetensors writes it
    zeros = bytes(8 * MIB)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        left = offset
        while left:
            k = min(left, len(zeros))
            f.write(zeros[:k])
            left -= k
    return path.stat().st_size


def dataset_file(tmp: Path, size_mib: int) -> Path:
    """x float32 [N,3,64,64] (zeros: in [0,1]) and y int64 [N], N chosen so that x is `size_mib` MiB."""
    n = size_mib * MIB // (3 * 64 * 64 * 4)
    path = tmp / "big.safetensors"
    write_safetensors(path, {"x": ("F32", [n, 3, 64, 64], 4), "y": ("I64", [n], 8)})
    return path


def uint8_dataset_file(tmp: Path, size_mib: int) -> Path:
    """x uint8 [N,64,64,3] (as images come) and y int64 [N]: the API must not widen it to float32 to check it."""
    n = size_mib * MIB // (64 * 64 * 3)
    path = tmp / "big-u8.safetensors"
    write_safetensors(path, {"x": ("U8", [n, 64, 64, 3], 1), "y": ("I64", [n], 8)})
    return path


def npz_file(tmp: Path, name: str, expanded_mib: int) -> Path:
    """An .npz whose x.npy expands to `expanded_mib` MiB of zeros, deflated (a few MiB on the wire), streamed
    through the zip writer."""
    n = expanded_mib * MIB // (3 * 32 * 32 * 4)
    path = tmp / name
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n, 3, 32, 32)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo("x.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as out:
            out.write(header.getvalue())
            zeros, left = bytes(8 * MIB), n * 3 * 32 * 32 * 4
            while left:
                out.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
        with zf.open("y.npy", "w") as out:
            np.lib.format.write_array(out, np.zeros(n, np.int64))
    return path


def checkpoint_file(tmp: Path, arch: str) -> Path:
    shapes = arch_manifest.expected_shapes(arch, 10, 3)
    path = tmp / "model.safetensors"
    write_safetensors(path, {k: ("F32", list(v), 4) for k, v in shapes.items()})
    return path


# ----------------------------------------------------------------------------------------------- measurements


class PeakRss:
    """Samples a process's RSS on a thread while the block runs."""

    def __init__(self, proc: psutil.Process, every_s: float = 0.01):
        self.proc, self.every_s = proc, every_s
        self.baseline = self.peak = proc.memory_info().rss
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def upload(base: str, route: str, path: Path, field: str, headers: dict, data: dict | None = None) -> httpx.Response:
    with path.open("rb") as f:  # httpx streams a file part from the file, 64 KiB at a time
        return httpx.post(base + route, files={field: (path.name, f, "application/octet-stream")}, data=data,
                          headers=headers, timeout=1800)


def raw_send(base: str, route: str, body_bytes: int, headers: dict[str, str], chunked: bool) -> tuple[int, int]:
    """Send a multipart upload of `body_bytes` as fast as the server takes it, stopping when an answer arrives.
    Returns (HTTP status, body bytes sent before the answer)."""
    host, port = base.removeprefix("http://").split(":")
    boundary = "benchboundary"
    preamble = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.safetensors\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
    lines = [f"POST {route} HTTP/1.1", f"Host: {host}:{port}",
             f"Content-Type: multipart/form-data; boundary={boundary}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(preamble) + body_bytes}")
    piece = bytes(256 * 1024)
    frame = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.sendall((f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n") if chunked else preamble)
        sock.setblocking(False)
        sent, pending, answer = 0, memoryview(frame), b""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < body_bytes else [], [], 1.0)
            if not readable and not writable and sent >= body_bytes:
                break
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                answer += chunk
                if not chunk or b"\r\n" in answer:
                    break
                continue
            if writable:
                try:
                    k = sock.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += k
                pending = pending[k:] or memoryview(frame)
        if not answer:  # the whole body went in: wait for the answer
            sock.setblocking(True)
            sock.settimeout(60)
            try:
                answer = sock.recv(65536)
            except OSError:
                pass
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent


def read_chars(proc: psutil.Process) -> int:
    return proc.io_counters().read_chars


# ------------------------------------------------------------------------------------------------------ cases


def warm_up(base: str, headers: dict, tmp: Path) -> None:
    """A small dataset and model first, so imports and pools are in the baseline, not in the growth."""
    small = tmp / "small.safetensors"
    write_safetensors(small, {"x": ("F32", [4, 3, 8, 8], 4), "y": ("I64", [4], 8)})
    r = upload(base, "/datasets", small, "file", headers)
    assert r.status_code == 201, r.text


def measured_upload(base: str, proc: psutil.Process, label: str, route: str, path: Path, field: str,
                    headers: dict, want: int, data: dict | None = None) -> tuple[list, httpx.Response]:
    """One upload with the API's peak RSS sampled; the row says whether it answered `want` within the bound."""
    before = read_chars(proc)
    with PeakRss(proc) as rss:
        t0 = time.monotonic()
        r = upload(base, route, path, field, headers, data)
        seconds = time.monotonic() - t0
    ok = r.status_code == want and rss.growth < RSS_BOUND
    return [label, f"{path.stat().st_size / MIB:.0f} MiB", r.status_code, f"{rss.growth / 1e6:.1f} MB",
            f"< {RSS_BOUND / 1e6:.0f} MB", f"{(read_chars(proc) - before) / MIB:.0f} MiB", f"{seconds:.1f} s",
            "ok" if ok else "FAIL"], r


def memory_cases(tmp: Path, size_mib: int, checkpoint: bool) -> list[list]:
    rows = []
    with server(tmp) as (base, proc, headers):
        warm_up(base, headers, tmp)
        path = dataset_file(tmp, size_mib)
        row, first = measured_upload(base, proc, "dataset: float32 safetensors", "/datasets", path, "file", headers,
                                     201)
        rows.append(row)
        row, again = measured_upload(base, proc, "the same dataset again", "/datasets", path, "file", headers, 200)
        if again.json().get("id") != first.json().get("id"):
            row[-1] = "FAIL"
        rows.append(row)
        path.unlink()

        path = uint8_dataset_file(tmp, size_mib)
        rows.append(measured_upload(base, proc, "dataset: uint8 [N,H,W,C] safetensors", "/datasets", path, "file",
                                    headers, 201)[0])
        path.unlink()

        path = npz_file(tmp, "zeros.npz", size_mib)
        rows.append(measured_upload(base, proc, f"npz: {size_mib} MiB of zeros, deflated", "/datasets", path, "file",
                                    headers, 201)[0])
        path.unlink()
        path = npz_file(tmp, "bomb.npz", 3 * 1024)
        rows.append(measured_upload(base, proc, "npz bomb: 3 GiB of zeros (limit 2 GiB)", "/datasets", path, "file",
                                    headers, 422)[0])
        path.unlink()

        if checkpoint:
            arch = "torchvision/vit_l_16"
            path = checkpoint_file(tmp, arch)
            spec = json.dumps({"arch": arch, "num_classes": 10, "input_shape": [3, 224, 224]})
            rows.append(measured_upload(base, proc, f"checkpoint: {arch}", "/models", path, "weights", headers, 201,
                                        data={"spec": spec})[0])
            path.unlink()
    return rows


def refusal_cases(tmp: Path) -> list[list]:
    rows = []
    body = 512 * MIB
    limit_mb = 64
    with server(tmp / "limit", EDITAUDIT_MAX_UPLOAD_MB=str(limit_mb)) as (base, proc, headers):
        for chunked in (False, True):
            with PeakRss(proc) as rss:
                status, sent = raw_send(base, "/datasets", body, headers, chunked)
            bound = REFUSAL_SLACK if not chunked else (limit_mb + 1) * MIB + REFUSAL_SLACK
            ok = status == 413 and sent <= bound
            rows.append([f"over the {limit_mb} MiB limit, " + ("chunked" if chunked else "Content-Length"),
                         f"{body / MIB:.0f} MiB", status, f"{rss.growth / 1e6:.1f} MB", "", "",
                         f"sent {sent / MIB:.2f} MiB (<= {bound / MIB:.0f})", "ok" if ok else "FAIL"])
    with server(tmp / "auth", EDITAUDIT_API_TOKEN=TOKEN) as (base, _, _):
        status, sent = raw_send(base, "/datasets", body, {}, chunked=False)
        ok = status == 401 and sent <= REFUSAL_SLACK
        rows.append(["no Authorization (keys required)", f"{body / MIB:.0f} MiB", status, "", "", "",
                     f"sent {sent / MIB:.2f} MiB (<= {REFUSAL_SLACK / MIB:.0f})", "ok" if ok else "FAIL"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the dataset upload (default 1 GiB)")
    ap.add_argument("--skip-checkpoint", action="store_true", help="only the dataset upload")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="editaudit-bench-uploads-") as d:
        tmp = Path(d)
        for sub in ("mem", "limit", "auth"):
            (tmp / sub).mkdir()
        rows = memory_cases(tmp / "mem", args.size_mib, not args.skip_checkpoint) + refusal_cases(tmp)
    print(render(["case", "body", "status", "API RSS growth", "bound", "file reads", "time / sent", "verdict"],
                 rows, align_right={1, 2, 3, 5}))
    failed = [r[0] for r in rows if r[-1] != "ok"]
    if failed:
        print(f"\nbounds violated: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
