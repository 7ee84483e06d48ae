"""The progress shown while a command waits for an edit: durations and the ETA as text, the ETA from the rate within
the current stage, and the cadence of lines without a terminal. A fake clock drives every case (no sleeps)."""

from __future__ import annotations

import io

import pytest

from editaudit.cli.progress import ProgressReporter, format_duration, format_eta, stage_eta


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def edit(status: str, stage: str | None = None, done: int = 0, total: int = 0) -> dict:
    return {"id": "e1", "status": status, "progress": {"stage": stage, "done": done, "total": total} if stage else None}


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (0.4, "0s"), (42, "42s"), (59.6, "1m00s"), (65, "1m05s"),
                                           (3599, "59m59s"), (3600, "1h00m"), (7380, "2h03m"), (None, "?"),
                                           (-1, "?"), (float("nan"), "?"), (10 ** 9, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_eta():
    assert format_eta(None) == "ETA ?" and format_eta(125) == "ETA 2m05s" and format_eta(0) == "ETA 0s"


def test_stage_eta_is_the_rate_within_the_stage():
    assert stage_eta(0, 0, 10, 50, 100) == pytest.approx(10.0)  # 5/s, 50 left
    assert stage_eta(10, 40, 20, 60, 100) == pytest.approx(20.0)  # 2/s since the stage was first seen at 40
    assert stage_eta(0, 0, 0, 0, 100) is None  # no time yet
    assert stage_eta(0, 10, 5, 10, 100) is None  # nothing done since first seen: no rate
    assert stage_eta(0, 0, 5, 100, 100) == 0.0 and stage_eta(0, 0, 5, 0, 0) is None


def test_without_a_terminal_a_line_every_few_seconds_and_at_each_stage():
    clock, out = FakeClock(), io.StringIO()
    show = ProgressReporter("edit", stream=out, tty=False, every=5.0, clock=clock)
    polls = [(0, edit("queued")), (1, edit("queued")), (2, edit("running", "loading", 0, 1)),
             (3, edit("running", "auditing", 0, 100)), (4, edit("running", "auditing", 10, 100)),
             (5, edit("running", "auditing", 20, 100)), (7, edit("running", "auditing", 40, 100)),
             (8, edit("running", "auditing", 50, 100)), (9, edit("running", "auditing", 60, 100)),
             (13, edit("running", "auditing", 100, 100)), (14, edit("succeeded", "done", 1, 1))]
    for t, e in polls:
        clock.t = 100.0 + t
        show(e)
    lines = out.getvalue().splitlines()
    assert lines == [
        "edit e1 queued: waiting for a worker, 0s elapsed, ETA ?",        # the first poll (none at 1 s)
        "edit e1 running: loading 0/1 (0%), 2s elapsed, ETA ?",           # a new status and stage
        "edit e1 running: auditing 0/100 (0%), 3s elapsed, ETA ?",        # a new stage: no rate in it yet
        "edit e1 running: auditing 50/100 (50%), 8s elapsed, ETA 5s",     # 5 s after the last line; 10/s since 3 s
        "edit e1 running: auditing 100/100 (100%), 13s elapsed, ETA 0s",  # 5 s later again (none at 9 s)
        "edit e1 succeeded: done 1/1 (100%), 14s elapsed",                # the final status, without an ETA
    ]
    assert show.lines == lines


def test_the_cadence_follows_every_and_the_clock_not_the_polls():
    clock, out = FakeClock(0.0), io.StringIO()
    show = ProgressReporter("edit", stream=out, tty=False, every=2.5, clock=clock)
    for i in range(21):  # a poll every 0.5 s for 10 s, always the same stage
        clock.t = i * 0.5
        show(edit("running", "auditing", i, 100))
    assert [line.split(", ")[1] for line in out.getvalue().splitlines()] == [
        "0s elapsed", "2s elapsed", "5s elapsed", "8s elapsed", "10s elapsed"]  # at 0, 2.5, 5, 7.5, 10 s


def test_every_zero_prints_every_poll_and_a_stage_restart_resets_the_rate():
    clock, out = FakeClock(0.0), io.StringIO()
    show = ProgressReporter("edit", stream=out, tty=False, every=0, clock=clock)
    for t, done in ((0, 0), (10, 50), (11, 0), (12, 10)):  # the stage starts over (a second pass): new rate
        clock.t = t
        show(edit("running", "auditing", done, 100))
    assert [line.rsplit(", ", 1)[1] for line in out.getvalue().splitlines()] == [
        "ETA ?", "ETA 10s", "ETA ?", "ETA 9s"]


def test_on_a_terminal_one_bar_redrawn_in_place_with_the_same_facts():
    clock, out = FakeClock(0.0), io.StringIO()
    show = ProgressReporter("edit", stream=out, tty=True, every=5.0, clock=clock)
    for t, e in ((0, edit("running", "auditing", 0, 100)), (1, edit("running", "auditing", 50, 100)),
                 (2, edit("succeeded", "done", 1, 1))):
        clock.t = t
        show(e)
    show.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1, "redrawn, one line in the end"
    frames = [f.rstrip() for f in text.strip("\n").split("\r") if f]
    assert frames[1] == "  [############            ] running auditing 50/100  1s  ETA 1s"
    assert frames[2].startswith("  [########################] succeeded done 1/1  2s") and "ETA" not in frames[2]


def test_the_default_stream_is_stderr_and_a_pipe_is_not_a_terminal(capsys):
    show = ProgressReporter("edit", every=0, clock=FakeClock())
    assert show.tty is False  # pytest's capture is not a terminal
    show(edit("running", "editing", 1, 2))
    show.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "edit e1 running: editing 1/2 (50%), 0s elapsed, ETA ?\n"
