"""The reconciler: jobs never stay `running` or `queued` because a worker or a message was lost.

Each worker runs a pass every `reconcile_every_s` (a thread; several workers reconciling at once is safe, every
change is a conditional update and a duplicate message is dropped by the lease). A pass
  - sends again every top-level job whose lease lapsed (its worker was killed, ran out of memory or hung), back to
    `queued`, or marks it failed once it has used `max_attempts`;
  - sends again every job still `queued` `requeue_after_s` after it was last sent, when the broker's queue is empty
    (a broker that lost its messages, e.g. Redis without persistence restarted; while messages wait in the queue,
    queued jobs are behind them, not lost, and are left alone).
Sub-edits of a layer sweep are run by their sweep's job, so only the sweep is sent again.

Before each pass the thread also beats: it touches `worker_alive_file` (the container health check) and writes the
worker's row in `worker_heartbeats` (its name and the time), which /readyz and /metrics read. It beats whatever the
job thread is doing, so a worker deep in a long job still reads as alive; rows not beaten for HEARTBEAT_FORGET_S
are deleted (workers scaled away).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select

from editaudit.contracts.statuses import IngestStatus, Status
from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.worker.jobs.lease import give_up, lapsed, worker_name

log = logging.getLogger(__name__)


def reconcile(sessions, send: Callable[[str], None], settings: Settings, now: datetime | None = None,
              queue_depth: Callable[[], int] = lambda: 0) -> dict:
    """One pass; returns the ids it requeued, sent again and gave up on. `queue_depth`: messages waiting in the
    broker's queue (stale queued jobs are sent again only when it is 0)."""
    now = now or db.utcnow()
    report: dict[str, list[str]] = {"requeued": [], "resent": [], "failed": []}
    with sessions() as s:
        for edit in s.scalars(select(db.Edit).where(lapsed(now), db.Edit.sweep_id.is_(None))).all():
            if edit.attempt >= settings.max_attempts:
                give_up(s, edit, settings.max_attempts)
                report["failed"].append(edit.id)
                continue
            same_attempt = db.Edit.lease_token.is_not_distinct_from(edit.lease_token)  # NULL-safe
            moved = s.query(db.Edit).filter(db.Edit.id == edit.id, same_attempt, lapsed(now)).update(
                {"status": Status.queued, "lease_token": None, "enqueued_at": now,
                 "error": f"attempt {edit.attempt} stopped renewing its lease; sent again"}, synchronize_session=False)
            s.commit()
            if moved and _send(send, edit.id):
                report["requeued"].append(edit.id)
        if _depth(queue_depth):
            return _reported(report)
        sent_at = func.coalesce(db.Edit.enqueued_at, db.Edit.created_at)
        stale = select(db.Edit.id, db.Edit.enqueued_at).where(
            db.Edit.status == Status.queued, db.Edit.sweep_id.is_(None),
            sent_at < now - timedelta(seconds=settings.requeue_after_s))
        for edit_id, was in s.execute(stale).all():
            claimed = s.query(db.Edit).filter(db.Edit.id == edit_id, db.Edit.status == Status.queued,
                                              db.Edit.enqueued_at.is_not_distinct_from(was)).update(
                {"enqueued_at": now}, synchronize_session=False)
            s.commit()
            if claimed and _send(send, edit_id):
                report["resent"].append(edit_id)
    return _reported(report)


def _reported(report: dict) -> dict:
    if any(report.values()):
        log.warning("reconciler: %s", report)
    return report


def _depth(queue_depth: Callable[[], int]) -> int:
    try:
        return queue_depth()
    except Exception:  # noqa: BLE001 - the broker is down: nothing can be sent anyway
        log.warning("reconciler: could not read the queue depth; not resending this pass", exc_info=True)
        return 1


def _send(send: Callable[[str], None], edit_id: str) -> bool:
    try:
        send(edit_id)
        return True
    except Exception:  # noqa: BLE001 - broker down: the row stays queued and a later pass sends it again
        log.exception("reconciler: could not send edit %s; a later pass retries", edit_id)
        return False


def resend_ingests(sessions, send_ingest: Callable[[str, str], None], settings: Settings,
                   now: datetime | None = None, queue_depth: Callable[[], int] = lambda: 0) -> list[str]:
    """Send again the ingest of every upload still `validating` whose job shows no sign of life for
    `requeue_after_s` (created that long ago, and no progress written since), when the queue is empty: its message
    was lost or its worker died. The ingest is idempotent, so a duplicate costs time, never data."""
    now = now or db.utcnow()
    if _depth(queue_depth):
        return []
    cutoff = now - timedelta(seconds=settings.requeue_after_s)
    sent = []
    with sessions() as s:
        waiting = (db.Model.status == IngestStatus.validating, db.Model.created_at < cutoff)
        stale: list[tuple[str, str, dict | None]] = [
            ("models", row_id, None) for row_id in s.scalars(select(db.Model.id).where(*waiting))]
        stale += [("datasets", row_id, progress) for row_id, progress in s.execute(
            select(db.Dataset.id, db.Dataset.progress).where(db.Dataset.status == IngestStatus.validating,
                                                             db.Dataset.created_at < cutoff)).all()]
    for kind, row_id, progress in stale:
        at = (progress or {}).get("at")  # the ingest's last progress write (epoch seconds)
        if at is not None and at > cutoff.timestamp():
            continue
        try:
            send_ingest(kind, row_id)
            sent.append(f"{kind}/{row_id}")
        except Exception:  # noqa: BLE001 - broker down: a later pass retries
            log.exception("reconciler: could not send the ingest of %s %s", kind, row_id)
            break
    if sent:
        log.warning("reconciler: sent again the ingest of %s", sent)
    return sent


HEARTBEAT_FORGET_S = 24 * 3600


def beat(sessions, name: str, started_at: datetime, now: datetime | None = None) -> None:
    """Write this worker's heartbeat row (insert or update), and forget workers silent for HEARTBEAT_FORGET_S."""
    now = now or db.utcnow()
    with sessions() as s:
        row = s.get(db.WorkerHeartbeat, name)
        if row is None:
            s.add(db.WorkerHeartbeat(name=name, beat_at=now, started_at=started_at))
        else:
            row.beat_at, row.started_at = now, started_at
        s.query(db.WorkerHeartbeat).filter(db.WorkerHeartbeat.beat_at < now - timedelta(
            seconds=HEARTBEAT_FORGET_S)).delete(synchronize_session=False)
        s.commit()


def start_reconciler(sessions, send: Callable[[str], None], settings: Settings,
                     queue_depth: Callable[[], int] = lambda: 0, name: str | None = None,
                     send_ingest: Callable[[str, str], None] | None = None) -> threading.Event:
    """Run `reconcile` every `reconcile_every_s` on a daemon thread, beating before each pass as `name` (Celery's
    hostname; by default host:pid); set the returned event to stop it."""
    stop = threading.Event()
    name = name or worker_name()
    started_at = db.utcnow()

    def beat_now() -> None:
        from editaudit.worker.health import touch

        touch(settings.worker_alive_file)  # before the pass: a database outage is not the worker's death
        try:
            beat(sessions, name, started_at)
        except Exception as e:  # noqa: BLE001 - the database is down: /readyz reports that, and the beat resumes
            log.warning("could not write the heartbeat of %s: %s", name, str(e).splitlines()[0][:200] if str(e)
                        else type(e).__name__)

    def loop():
        beat_now()
        while not stop.wait(settings.reconcile_every_s):
            beat_now()
            try:
                reconcile(sessions, send, settings, queue_depth=queue_depth)
                if send_ingest is not None:
                    resend_ingests(sessions, send_ingest, settings, queue_depth=queue_depth)
            except Exception:  # noqa: BLE001 - a database outage must not end the loop
                log.exception("reconciler pass failed; retrying")

    threading.Thread(target=loop, name="editaudit-reconciler", daemon=True).start()
    return stop
