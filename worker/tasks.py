"""Celery tasks: thin adapters from a queued id to the job code in `editaudit.worker.jobs`."""

from __future__ import annotations

from editaudit.core.logs import log_context
from editaudit.core.queue import AUDIT_SHARD, INGEST, RUN_EDIT, enqueue_group
from editaudit.core.settings import get_settings
from editaudit.worker.celery_app import app


@app.task(name=RUN_EDIT)
def run_edit_task(edit_id: str) -> None:
    from editaudit.worker.jobs import run_edit_job

    with log_context(edit_id=edit_id):  # every line the job logs names its edit
        settings = get_settings()
        run_edit_job(settings, edit_id, dispatch=lambda ids: enqueue_group(app, settings, AUDIT_SHARD,
                                                                           [[i] for i in ids]))


@app.task(name=AUDIT_SHARD)
def audit_shard_task(shard_id: str) -> None:
    from editaudit.worker.jobs.shard_job import run_shard_job

    with log_context(audit_shard=shard_id):
        run_shard_job(get_settings(), shard_id)


@app.task(name=INGEST)
def ingest_task(kind: str, row_id: str) -> None:
    from editaudit.worker.jobs.ingest import run_ingest

    with log_context(ingest=f"{kind}/{row_id}"):
        run_ingest(get_settings(), kind, row_id)
