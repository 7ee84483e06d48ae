"""Install editaudit the way users do, from the built wheel, and use it: `python -m tests.tools.install_check`.

1. Build the sdist from the checkout and the wheel from that sdist (so both carry everything), then check the wheel
   against the source tree: every module of every source root at its import path, the package data, no strays.
2. Three fresh venvs, each with the wheel installed non-editable:
   - `gate` (the base install, as CI installs it): no server package, no torch;
   - `api`: no torch; `editaudit --version`, `editaudit serve` answering /healthz;
   - `worker`: the Celery app and every registered method, attack and corruption import.
3. The split deployment they make together: the api venv serves a data directory, a worker from the worker venv
   runs its jobs, and the gate venv's CLI uploads a model and data, submits an edit, waits and gates it; the gate's
   verdict (0 pass or 1 blocked) is the check, anything else fails.

torch and torchvision (4 GB unpacked) are hard-linked into the worker venv from the running interpreter's own
install of the same versions, file by file from their RECORDs, instead of unpacking the same wheels again; every
other dependency of the `worker` extra is resolved and installed by pip as a user's install would be.
Exit 0 when everything holds; otherwise the first failure and its output, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

from tests.tools.import_contract import ROOTS

REPO = Path(__file__).resolve().parents[2]
DATA_GLOBS = {"editaudit": ["data/*.json.gz", "policies/*.yaml"], "migrations": ["script.py.mako"]}
NOT_IN_API = ("torch", "torchvision", "art", "sklearn")
NOT_IN_GATE = (*NOT_IN_API, "fastapi", "sqlalchemy", "uvicorn", "celery", "numpy", "boto3")
LINKED = ("torch", "torchvision")  # hard-linked with their dependency closure (see the module docstring)


class Failed(Exception):
    pass


def step(title: str) -> None:
    print(f"install-check: {title}", flush=True)


def run(*cmd: str | Path, env: dict | None = None, ok: tuple[int, ...] = (0,), timeout: float = 1800) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode not in ok:
        raise Failed(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                     f"{proc.stderr[-4000:]}")
    return proc.stdout


# -- 1. the artefacts -------------------------------------------------------------------------------------------

def tracked_files() -> list[str]:
    """The checkout's files as git knows them (untracked files in a working tree are not part of a release)."""
    out = run("git", "-C", REPO, "ls-files", "-z")
    return [f for f in out.split("\0") if f]


def expected_wheel_files(tracked: list[str]) -> set[str]:
    """Every module and data file of the four roots, at the path it has in the wheel."""
    want = set()
    for f in tracked:
        top, _, rest = f.partition("/")
        if top not in ROOTS or not rest:
            continue
        target = "/".join(ROOTS[top].split(".")) + "/" + rest
        if f.endswith(".py") or any(Path(rest).match(g) for g in DATA_GLOBS.get(top, [])):
            want.add(target)
    return want


def build(out: Path) -> tuple[Path, Path]:
    step("building the sdist and, from it, the wheel")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, REPO)
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def check_artefacts(sdist: Path, wheel: Path) -> None:
    tracked = tracked_files()
    with zipfile.ZipFile(wheel) as z:
        names = {n for n in z.namelist() if ".dist-info/" not in n}
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata_text = z.read(meta).decode()
        entry_points = z.read(meta.replace("METADATA", "entry_points.txt")).decode()
    missing = sorted(expected_wheel_files(tracked) - names)
    strays = sorted(n for n in names if not n.startswith("editaudit/") or "__pycache__" in n)
    if missing or strays:
        raise Failed(f"the wheel lacks {missing[:20]} (of {len(missing)}) and holds strays {strays[:20]}")
    for extra in ("gate", "api", "worker"):
        if f"Provides-Extra: {extra}" not in metadata_text:
            raise Failed(f"the wheel declares no `{extra}` extra")
    if "editaudit = editaudit.cli.main:main" not in entry_points:
        raise Failed("the wheel's console script is not editaudit.cli.main:main")
    with tarfile.open(sdist) as t:
        top = t.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(top + "/") for n in t.getnames()}
    lost = sorted(f for f in tracked if f.split("/")[0] in ROOTS and f not in in_sdist)
    if lost:
        raise Failed(f"the sdist lacks {lost[:20]}")
    step(f"wheel {wheel.name}: {len(names)} files, every module of {', '.join(ROOTS)} and the package data")


# -- 2. the venvs -------------------------------------------------------------------------------------------------

def venv(path: Path) -> Path:
    run(sys.executable, "-m", "venv", path)
    return path / "bin"


def pip_install(bin_: Path, requirement: str) -> None:
    run(bin_ / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement)


def assert_absent(bin_: Path, modules: tuple[str, ...], what: str) -> None:
    code = f"import importlib.util as u, sys; found = [m for m in {modules!r} if u.find_spec(m)]\n" \
           "if found: sys.exit(', '.join(found))"
    proc = subprocess.run([bin_ / "python", "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise Failed(f"the {what} install has {proc.stderr.strip()}")


def closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions `names` need, themselves included (markers evaluated for this interpreter)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def link_torch(bin_: Path) -> None:
    """Hard-link torch, torchvision and what they need from this interpreter's site-packages into the venv's."""
    site = Path(run(bin_ / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    dists = closure(LINKED)
    if not any(d.metadata["Name"] == "torch" for d in dists):
        raise Failed("this interpreter has no torch to link; run from the project's venv (make install)")
    for dist in dists:
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f))).resolve()
            dst = site / f
            if not src.is_file() or ".." in f.parts:
                continue  # scripts outside site-packages (bin/) are not needed to import
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    step(f"worker venv: linked {len(dists)} distributions (torch, torchvision and their dependencies)")


# -- 3. the deployment --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, deadline_s: float = 180) -> None:
    """Poll until `url` answers 200; the deadline only bounds a failure."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise Failed(f"the server exited {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise Failed(f"{url} did not answer within {deadline_s:.0f} s")


def deployment(gate: Path, api: Path, worker: Path, tmp: Path) -> int:
    data, assets = tmp / "data", tmp / "assets"
    env = {**os.environ, "EDITAUDIT_DATA_DIR": str(data)}
    for name in [k for k in env if k.startswith("EDITAUDIT_") and k != "EDITAUDIT_DATA_DIR"]:
        env.pop(name)  # only the data directory: nothing of the caller's configuration leaks in
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("serve", "worker")}  # noqa: SIM115
    try:
        step(f"api venv: editaudit serve on {url} (no torch: no local worker)")
        procs.append(subprocess.Popen([api / "editaudit", "serve", "--port", str(port), "--data-dir", data],
                                      env=env, stdout=logs["serve"], stderr=subprocess.STDOUT))
        wait_http(f"{url}/healthz", procs[0])
        step("worker venv: a Celery worker on the same data directory")
        procs.append(subprocess.Popen([worker / "celery", "-A", "editaudit.worker.celery_app", "worker",
                                       "--pool=solo", "--concurrency=1", "--without-gossip", "--without-mingle",
                                       "--loglevel=INFO"], env=env, stdout=logs["worker"],
                                      stderr=subprocess.STDOUT))
        run(worker / "python", "-m", "editaudit.worker.demo_assets", assets, "--epochs", "2", env=env)
        cli, common = [gate / "editaudit"], ["--url", url]
        step("gate venv: submit an edit whose files the CLI uploads, wait, gate")
        body = {"model_id": "@model.safetensors", "method": "finetune_layer", "layers": ["fc"],
                "edit_set": "@edit-set.npz", "test_set": "builtin:digits-test",
                "audit": {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.03, "steps": 3}], "seed": 0}}
        (assets / "edit.json").write_text(json.dumps(body))  # model.json (its spec) lies beside model.safetensors
        edit = run(*cli, "edits", "submit", assets / "edit.json", "--wait", "-q", *common, env=env,
                   timeout=900).strip()
        proc = subprocess.run([*map(str, cli), "gate", edit, "--max-drop", "test.accuracy=0.05", *common],
                              capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode not in (0, 1):
            raise Failed(f"the gate exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        step(f"gate of edit {edit}: exit {proc.returncode} ({'pass' if proc.returncode == 0 else 'blocked'})")
        return proc.returncode
    except Failed:
        for name, f in logs.items():
            f.flush()
            print(f"--- {name}.log (tail)\n{(tmp / f'{name}.log').read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="build and install here (kept) instead of a "
                        "temporary directory")
    args = parser.parse_args()
    tmp = (args.keep or Path(tempfile.mkdtemp(prefix="editaudit-install-"))).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    os.chdir(tmp)  # never import the checkout's own folders by accident: only what the venvs installed
    t0 = time.monotonic()
    try:
        sdist, wheel = build(tmp / "dist")
        check_artefacts(sdist, wheel)
        step("gate venv: the base install")
        gate = venv(tmp / "gate")
        pip_install(gate, str(wheel))
        assert_absent(gate, NOT_IN_GATE, "base (gate)")
        version = run(gate / "editaudit", "--version").strip()
        step(f"gate venv: {version}")
        step("api venv: the `api` extra")
        api = venv(tmp / "api")
        pip_install(api, f"editaudit[api] @ {wheel.as_uri()}")
        assert_absent(api, NOT_IN_API, "api")
        run(api / "python", "-c", "import editaudit.service.app, editaudit.cli.main, editaudit.migrations")
        run(api / "editaudit", "--version")
        step("worker venv: the `worker` extra")
        worker = venv(tmp / "worker")
        link_torch(worker)
        pip_install(worker, f"editaudit[worker] @ {wheel.as_uri()}")
        run(worker / "python", "-c", "import editaudit.worker.celery_app, editaudit.worker.tasks\n"
                                     "from editaudit.worker.ml.parity import check_parity\ncheck_parity()")
        deployment(gate, api, worker, tmp)
    except Failed as e:
        print(f"install-check FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    step(f"all good ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
