"""Celery tasks: thin adapters from a queued id to the job code in `editaudit.worker.jobs`."""

from __future__ import annotations

from editaudit.core.logs import log_context
from editaudit.core.queue import INGEST, RUN_EDIT
from editaudit.core.settings import get_settings
from editaudit.worker.celery_app import app


@app.task(name=RUN_EDIT)
def run_edit_task(edit_id: str) -> None:
    from editaudit.worker.jobs import run_edit_job

    with log_context(edit_id=edit_id):  # every line the job logs names its edit
        run_edit_job(get_settings(), edit_id)


@app.task(name=INGEST)
def ingest_task(kind: str, row_id: str) -> None:
    from editaudit.worker.jobs.ingest import run_ingest

    with log_context(ingest=f"{kind}/{row_id}"):
        run_ingest(get_settings(), kind, row_id)
