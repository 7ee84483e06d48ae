"""A job's progress while a command waits: a bar redrawn in place on a terminal, one line per stage in a pipe or a
CI log (so a log is not flooded with carriage returns)."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

WIDTH = 30


def progress_line(edit: dict[str, Any]) -> tuple[str, str]:
    """(the bar line, the stage it shows) for an edit's `status` and `progress` {stage, done, total}."""
    p = edit.get("progress") or {}
    total = max(int(p.get("total") or 1), 1)
    done = min(max(int(p.get("done") or 0), 0), total)
    stage = f"{edit['status']} {p.get('stage', '')}".rstrip()
    return f"  [{'#' * int(WIDTH * done / total):<{WIDTH}}] {stage:<20} {done}/{total}", stage


def progress_printer(err: bool = False) -> Callable[[dict[str, Any]], None]:
    """A callback for `Client.wait_for_edit(on_progress=...)`, writing to stderr when `err` (stdout otherwise)."""
    tty = (sys.stderr if err else sys.stdout).isatty()
    last = {"line": "", "stage": None}

    def show(edit: dict[str, Any]) -> None:
        line, stage = progress_line(edit)
        if tty and line != last["line"]:
            click.echo("\r" + line, nl=False, err=err)
        elif not tty and stage != last["stage"]:
            click.echo(line, err=err)
        last["line"], last["stage"] = line, stage

    return show


def end_progress(err: bool = False) -> None:
    """Ends the bar's line on a terminal (a pipe already got whole lines)."""
    if (sys.stderr if err else sys.stdout).isatty():
        click.echo("", err=err)
