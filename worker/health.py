"""Worker liveness that holds during a long job: the reconciler thread touches a file every pass, whatever the job
thread is doing, so a container health check reads its age instead of a Celery ping (a solo-pool worker busy with
a 3-hour audit cannot answer pings, and restarting it would kill the job).

    python -m editaudit.worker.health [--max-age-s 120]   # exit 0 alive, 1 stale or missing
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from editaudit.core.settings import get_settings


def touch(path: Path | None) -> None:
    if path is not None:
        try:
            path.touch()
        except OSError:  # a full or read-only disk must not stop the reconciler; the check then reports stale
            pass


def age_s(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def parser() -> argparse.ArgumentParser:
    """The command line (tests/unit/test_deploy_files.py parses the compose health check's arguments with it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-age-s", type=float, default=120.0, help="older than this: not alive")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = get_settings().worker_alive_file
    if path is None:
        print("EDITAUDIT_WORKER_ALIVE_FILE is not set", file=sys.stderr)
        return 1
    age = age_s(path)
    if age is None or age > args.max_age_s:
        print(f"worker not alive: {path} " + ("missing" if age is None else f"last touched {age:.0f} s ago"),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
