"""mypy over the whole tree as Python imports it: `python -m tests.tools.typecheck [mypy args...]`.

setup.py installs `service/`, `worker/` and `migrations/` as `editaudit.service`, `editaudit.worker` and
`editaudit.migrations`; the editable install does that with an import hook, which mypy cannot follow, so checked in
place mypy sees neither those packages nor the imports of them. This tool lays the tree out as installed, in a
folder of symbolic links (editaudit/ holding a link to each entry of the repository's editaudit/ and one to each of
the three roots; tests/ linked as it is; bench/'s scripts on mypy's path, as `python bench/x.py` puts them on
Python's, since they import each other by their file names), runs mypy there with the repository's configuration
(pyproject.toml's [tool.mypy]: strict on the contracts, the gate and the client), and prints each finding with the
repository's own path (`service/app.py:12: error: ...`, not `editaudit/service/app.py`). Exit status: mypy's (0 when
there is no finding, 1 on a finding, 2 when mypy itself failed).

The folder lives in the system's temporary directory under a name fixed per checkout, so mypy's incremental cache
(.mypy_cache in the repository) stays valid from one run to the next.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# source folder -> where it sits in the link tree (setup.py's ROOTS, the other way round; bench/ is a folder of
# scripts, each a top-level module: its place is a directory on mypy's path)
MAPPED = {"service": "editaudit/service", "worker": "editaudit/worker", "migrations": "editaudit/migrations",
          "bench": "scripts/bench"}
# what mypy checks by default: the package with its three mapped roots, and the tools and plugins of the tests.
# The test modules and the benchmarks are not in it yet: their fakes stand in for typed objects by duck typing and
# their fixtures grow attributes at run time (`python -m tests.tools.typecheck tests bench` lists what that finds)
TARGETS = ["editaudit", "tests/tools", "tests/plugins", "tests/__init__.py"]
SKIP = {"__pycache__"}


def build_tree(repo: Path = REPO, root: Path | None = None) -> Path:
    """The import-shaped folder of links for `repo`, laid anew on each call (in `root`, default: a folder of the
    system's temporary directory named after the checkout)."""
    if root is None:
        digest = hashlib.sha256(str(repo).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()) / f"editaudit-typecheck-{digest}"
    if root.exists():
        shutil.rmtree(root)
    (root / "editaudit").mkdir(parents=True)
    for entry in (repo / "editaudit").iterdir():
        if entry.name not in SKIP:
            (root / "editaudit" / entry.name).symlink_to(entry)
    (root / "scripts").mkdir()
    for folder, place in MAPPED.items():
        (root / place).symlink_to(repo / folder)
    (root / "tests").symlink_to(repo / "tests")
    return root


def tree_path(path: str) -> str:
    """`worker/ml/impl.py` (the repository's path) -> `editaudit/worker/ml/impl.py` (the link tree's)."""
    for folder, place in MAPPED.items():
        if path.rstrip("/") == folder or path.startswith(folder + "/"):
            return place + path.rstrip("/")[len(folder):]
    return path


def repo_path(path: str) -> str:
    """`editaudit/worker/ml/impl.py` (a path in the link tree) -> `worker/ml/impl.py` (the repository's)."""
    for folder, place in MAPPED.items():
        if path == place or path.startswith(place + "/"):
            return folder + path[len(place):]
    return path


_LOCATION = re.compile(r"^(?P<path>[^:\s]+\.pyi?)(?P<rest>:.*)$")


def map_line(line: str) -> str:
    m = _LOCATION.match(line)
    return repo_path(m["path"]) + m["rest"] if m else line


def run(args: list[str], repo: Path = REPO) -> int:
    """mypy with `args`: options, and the repository's paths to check (all of TARGETS when none is named)."""
    root = build_tree(repo)
    options = [a for a in args if a.startswith("-")]
    paths = [tree_path(os.path.relpath(Path(a).resolve(), repo)) for a in args if not a.startswith("-")]
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(repo / "pyproject.toml"),
           "--cache-dir", str(repo / ".mypy_cache"), *options, *(paths or TARGETS)]
    env = {**os.environ, "MYPYPATH": str(root / MAPPED["bench"])}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        print(map_line(line))
    if proc.stderr:
        print(proc.stderr, end="", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
