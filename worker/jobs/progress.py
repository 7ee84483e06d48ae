"""Progress and cooperative cancellation: the job writes (stage, done, total) to its edit row, and learns there that
it was canceled."""

from __future__ import annotations

import time

from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.worker.jobs.lease import Lease, LeaseLost


class Canceled(Exception):
    """The edit was canceled through the API; raised between batches (cooperative cancellation)."""


class ProgressWriter:
    """Writes (stage, done, total) to the edit row at most every `every` seconds and at a stage's end; each write
    also checks whether the edit was canceled, so a cancel takes effect within one batch plus `every` seconds."""

    def __init__(self, sessions, edit_id: str, every: float = 0.5, lease: Lease | None = None):
        self.sessions, self.edit_id, self.every, self._last = sessions, edit_id, every, 0.0
        self.lease = lease

    def __call__(self, stage: str, done: int, total: int, **extra) -> None:
        if self.lease is not None:
            self.lease.check()
        now = time.monotonic()
        if done < total and now - self._last < self.every:
            return
        self._last = now
        with self.sessions() as s:
            edit = s.get(db.Edit, self.edit_id)
            if edit.status == Status.canceled:
                raise Canceled(self.edit_id)
            if self.lease is not None and edit.lease_token != self.lease.token:
                raise LeaseLost(self.edit_id)
            edit.progress = {"stage": stage, "done": done, "total": total, **extra}
            s.commit()
