"""A job's progress while a command waits (`edits submit --wait`, `edits wait`, `gate --wait`, `demo`).

On a terminal: one bar redrawn in place. Without one (a pipe, a CI log): one whole line every `every` seconds (5 by
default), and at each change of status or stage, so a log is neither flooded nor silent for minutes. Both show the
same facts: status, stage, done/total, the time since the wait began, and an ETA for the current stage estimated
from the rate seen within it ("ETA ?" until there is a rate).

The clock and the stream are parameters, so the cadence and the ETA are tested with a fake clock."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import click

WIDTH = 24
DEFAULT_EVERY = 5.0
TERMINAL = frozenset({"succeeded", "failed", "canceled", "ready", "invalid"})  # jobs; models and datasets checked


def format_duration(seconds: float | None) -> str:
    """42s, 1m05s, 2h03m; '?' for None or a negative or absurd value."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 99 * 3600:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def stage_eta(t0: float, done0: int, now: float, done: int, total: int) -> float | None:
    """Seconds left in a stage at the rate seen since (t0, done0), the first sight of the stage; None while there is
    no rate (no time elapsed, nothing done since) or nothing to do."""
    if total <= 0 or done >= total:
        return 0.0 if total > 0 else None
    if now <= t0 or done <= done0:
        return None
    return (total - done) / ((done - done0) / (now - t0))


def format_eta(seconds: float | None) -> str:
    return "ETA ?" if seconds is None else f"ETA {format_duration(seconds)}"


class ProgressReporter:
    """A callback for `Client.wait_for_edit(on_progress=...)`: it sees every poll's edit and decides what to show.

    `stream` defaults to stderr; `tty` to whether the stream is a terminal; `every` is the seconds between lines
    without a terminal; `clock` a monotonic clock in seconds. Call `close()` when the wait ends (it ends the bar's
    line on a terminal)."""

    def __init__(self, label: str = "edit", stream: IO[str] | None = None, tty: bool | None = None,
                 every: float = DEFAULT_EVERY, clock: Callable[[], float] = time.monotonic):
        self.label, self.every, self.clock = label, max(float(every), 0.0), clock
        self.stream = stream
        self.tty = tty if tty is not None else _isatty(stream or sys.stderr)
        self.start: float | None = None
        self._stage_key: tuple | None = None
        self._stage_t0 = 0.0
        self._stage_done0 = 0
        self._last_done = 0
        self._last_line_at: float | None = None
        self._last_key: tuple | None = None
        self._drawn = 0  # characters of the bar on screen (terminal)
        self.lines: list[str] = []  # what was shown (tests read it)

    # --- what to show ---

    def facts(self, edit: Mapping[str, Any], now: float) -> dict[str, Any]:
        """status, stage, done, total, elapsed and eta (seconds or None) for this poll."""
        if self.start is None:
            self.start = now
        status = str(edit.get("status") or "?")
        p = edit.get("progress") or {}
        stage = str(p.get("stage") or "")
        total = max(int(p.get("total") or 0), 0)
        done = min(max(int(p.get("done") or 0), 0), total) if total else 0
        if status == "queued":  # the server's placeholder progress (queued 0/1) says nothing more
            stage, done, total = "waiting for a worker", 0, 0
        elif stage == status:
            stage = ""
        key = (status, stage, total)
        if key != self._stage_key or done < self._last_done:  # a new stage, or the same one starting over
            self._stage_key, self._stage_t0, self._stage_done0 = key, now, done
        self._last_done = done
        eta = None if status in TERMINAL or not total else stage_eta(self._stage_t0, self._stage_done0, now, done,
                                                                     total)
        return {"id": edit.get("id"), "status": status, "stage": stage, "done": done, "total": total,
                "elapsed": now - self.start, "eta": eta}

    def line(self, f: dict[str, Any]) -> str:
        """`edit 01J… running: auditing 120/450 (27%), 1m05s elapsed, ETA 2m40s`"""
        what = f"{self.label} {f['id']} {f['status']}" if f.get("id") else f"{self.label} {f['status']}"
        stage = f": {f['stage']}" if f["stage"] else ""
        count = f" {f['done']}/{f['total']} ({100 * f['done'] // f['total']}%)" if f["total"] else ""
        tail = f", {format_duration(f['elapsed'])} elapsed"
        if f["status"] not in TERMINAL:
            tail += f", {format_eta(f['eta'])}"
        return what + stage + count + tail

    def bar(self, f: dict[str, Any]) -> str:
        filled = int(WIDTH * f["done"] / f["total"]) if f["total"] else 0
        stage = f" {f['stage']}" if f["stage"] else ""
        count = f" {f['done']}/{f['total']}" if f["total"] else ""
        eta = "" if f["status"] in TERMINAL else f"  {format_eta(f['eta'])}"
        return (f"  [{'#' * filled:<{WIDTH}}] {f['status']}{stage}{count}  {format_duration(f['elapsed'])}"
                f"{eta}")

    # --- when to show it ---

    def __call__(self, edit: Mapping[str, Any]) -> None:
        now = self.clock()
        f = self.facts(edit, now)
        if self.tty:
            self._draw(self.bar(f))
            return
        key = (f["status"], f["stage"])
        due = (self._last_line_at is None or key != self._last_key or f["status"] in TERMINAL
               or now - self._last_line_at >= self.every)
        if due:
            self._last_line_at, self._last_key = now, key
            self._write(self.line(f) + "\n")

    def close(self) -> None:
        if self.tty and self._drawn:
            self._write("\n")
            self._drawn = 0

    def _draw(self, text: str) -> None:
        if self.stream is None:  # a real terminal: a line longer than it would wrap, and \r redraw only the tail
            import shutil

            text = text[:max(shutil.get_terminal_size().columns - 1, 20)]
        pad = " " * max(self._drawn - len(text), 0)
        self._write("\r" + text + pad)
        self._drawn = len(text)

    def _write(self, text: str) -> None:
        if text.strip():
            self.lines.append(text.strip("\r\n"))
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
        else:
            click.echo(text, nl=False, err=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


every_option = click.option("--progress-every", "progress_every", default=DEFAULT_EVERY, show_default=True,
                            type=click.FloatRange(0), metavar="SECONDS",
                            help="Without a terminal, a progress line at least this often (and at each new stage).")
