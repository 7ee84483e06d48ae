"""Exactly-once execution of a job that may be delivered more than once (acks_late, redelivery, a reconciler).

An attempt starts by taking the edit's lease: one conditional UPDATE moves a `queued` edit, or a `running` one
whose lease lapsed (its worker died or hung), to `running` under a fresh token, and counts the attempt. A heartbeat
thread renews the lease every third of its length while the attempt works. Every later write of the attempt is
conditional on still holding the token, so once another attempt has taken over, the old one can neither overwrite
nor duplicate the result: its final write matches no row and it drops what it made. A message that arrives while
a live lease is held is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import and_, or_

from editaudit.contracts.statuses import Status
from editaudit.core import db, repo

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another attempt holds the job now (this one's lease lapsed): stop, write nothing."""


class TimeLimitExceeded(Exception):
    """The attempt ran past `job_time_limit_s`."""


def worker_name() -> str:
    """This process as a job row records it (host:pid): which worker ran an attempt."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lapsed(now):
    """Running rows whose lease is over (or that never had one: rows from before leases existed)."""
    return and_(db.Edit.status == Status.running,
                or_(db.Edit.lease_expires_at.is_(None), db.Edit.lease_expires_at < now))


def take(s, edit_id: str, lease_s: float, max_attempts: int) -> str | None:
    """The attempt token if this attempt now holds the edit's lease, else None (finished, canceled, or leased by a
    live attempt). A lapsed edit that has used up its attempts is marked failed instead."""
    now, token = db.utcnow(), db.new_id()
    taken = s.query(db.Edit).filter(
        db.Edit.id == edit_id, db.Edit.attempt < max_attempts,
        or_(db.Edit.status == Status.queued, lapsed(now)),
    ).update({"status": Status.running, "started_at": now, "error": None, "lease_token": token,
              "lease_expires_at": now + timedelta(seconds=lease_s), "attempt": db.Edit.attempt + 1,
              "worker": worker_name(), "progress": {"stage": "loading", "done": 0, "total": 1}},
             synchronize_session=False)
    if taken:
        s.commit()
        return token
    edit = s.get(db.Edit, edit_id)
    if edit is not None and edit.attempt >= max_attempts and s.query(db.Edit).filter(
            db.Edit.id == edit_id, or_(db.Edit.status == Status.queued, lapsed(now))).count():
        give_up(s, edit, max_attempts)
    log.info("edit %s: not taken (%s, attempt %s)", edit_id, edit and edit.status, edit and edit.attempt)
    return None


def give_up(s, edit: db.Edit, max_attempts: int) -> None:
    repo.finish_edit(s, edit, Status.failed, f"gave up after {max_attempts} attempts: each one's worker stopped "
                                             "renewing its lease (killed, out of memory, or hung)")
    s.commit()


def held(edit_id: str, token: str):
    """The filter of `edit_id` while `token` holds its lease."""
    return and_(db.Edit.id == edit_id, db.Edit.lease_token == token, db.Edit.status == Status.running)


class Lease:
    """One attempt's hold on an edit: `renew()` extends it, `lost` says another attempt took over (or the edit left
    `running`, e.g. canceled)."""

    def __init__(self, sessions, edit_id: str, token: str, seconds: float, time_limit_s: float | None = None):
        self.sessions, self.edit_id, self.token, self.seconds = sessions, edit_id, token, seconds
        self.lost = False
        self.time_limit_s = time_limit_s
        self._deadline = None if time_limit_s is None else time.monotonic() + time_limit_s

    def overdue(self) -> bool:
        """Past the attempt's time limit: the heartbeat stops renewing, the next batch raises TimeLimitExceeded."""
        return self._deadline is not None and time.monotonic() > self._deadline

    def check(self) -> None:
        """Between batches: LeaseLost once another attempt holds the job, TimeLimitExceeded past the time limit."""
        if self.lost:
            raise LeaseLost(self.edit_id)
        if self.overdue():
            raise TimeLimitExceeded(f"the attempt ran past its time limit of {self.time_limit_s:g} s "
                                    "(job_time_limit_s); ask for less work (fewer attacks, steps, samples)")

    table: type = db.Edit  # the leased rows' table, and the filter of a row while a token holds it
    held = staticmethod(held)

    def renew(self) -> bool:
        with self.sessions() as s:
            kept = s.query(self.table).filter(self.held(self.edit_id, self.token)).update(
                {"lease_expires_at": db.utcnow() + timedelta(seconds=self.seconds)}, synchronize_session=False)
            s.commit()
        if not kept:
            self.lost = True
        return bool(kept)


@contextmanager
def heartbeat(*leases: Lease) -> Iterator[None]:
    """Renew the leases every third of their length on a thread while the body runs. A database error skips a beat
    (the lease has two more before it lapses); a lost lease stops renewing it."""
    stop = threading.Event()
    every = min(lease.seconds for lease in leases) / 3

    def beat():
        while not stop.wait(every):
            for lease in leases:
                if lease.lost:
                    continue
                if lease.overdue():  # a hung attempt (no batches, so no check) must lose its lease
                    log.warning("edit %s: past its time limit; no longer renewing the lease", lease.edit_id)
                    continue
                try:
                    if not lease.renew():
                        log.warning("edit %s: lease lost (another attempt holds it, or it left running)",
                                    lease.edit_id)
                except Exception:  # noqa: BLE001 - a transient outage must not kill the heartbeat
                    log.exception("edit %s: renewing the lease failed; retrying", lease.edit_id)

    thread = threading.Thread(target=beat, name="editaudit-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
