"""The job behind the one Celery task: an edit and its audit (run), or a layer sweep (sweep); with its caches
(cache), reads and writes (persist) and progress (progress)."""

from __future__ import annotations

import logging

from editaudit.core import db
from editaudit.core.settings import Settings
from editaudit.core.storage import store_from_url
from editaudit.worker.jobs.run import Dispatch, run_single_edit
from editaudit.worker.jobs.sweep import run_sweep

log = logging.getLogger(__name__)


def job_parts(settings: Settings, why: str) -> tuple:
    """(unscoped sessions, the object store) of a worker's job: its rows are addressed by id, whichever tenant's."""
    sessions = db.unscoped_sessions(db.session_factory(settings.resolved_database_url), why)
    return sessions, store_from_url(settings.resolved_store_url, settings.s3_endpoint_url, settings.s3_region)


def run_edit_job(settings: Settings, edit_id: str, dispatch: Dispatch | None = None) -> None:
    """The Celery task's body: one edit and its audit, or a layer sweep (its sub-edits one after another).
    `dispatch` sends an audit's shards to the other workers (without it, this process runs them all)."""
    sessions, store = job_parts(settings, "a worker's job: the edit's rows are addressed by id, whichever tenant's")
    with sessions() as s:
        edit = s.get(db.Edit, edit_id)
        if edit is None:
            log.error("edit %s not found; dropping the message", edit_id)
            return
        is_sweep = edit.sweep
    (run_sweep if is_sweep else run_single_edit)(settings, sessions, store, edit_id, dispatch)
