"""The worker's Celery application (the shared configuration is editaudit.core.queue's).

Run a worker with:  celery -A editaudit.worker.celery_app worker --pool=solo --concurrency=1   (one per GPU)
"""

from __future__ import annotations

import logging

from celery.signals import setup_logging, worker_init

from editaudit.core.logs import configure_json_logs
from editaudit.core.plugins import load_plugins
from editaudit.core.queue import broker_dirs, make_celery
from editaudit.core.settings import get_settings

app = make_celery(get_settings(), include=["editaudit.worker.tasks"])  # importing creates nothing on disk ...


def _json_logs(loglevel=None, **_):
    """EDITAUDIT_LOG_FORMAT=json: every line as JSON, with the id of the edit being run (editaudit.core.logs); prints
    become log lines too, as under Celery's own logging (its startup banner does not: `--quiet` drops it)."""
    configure_json_logs(loglevel or logging.INFO)
    if app.conf.worker_redirect_stdouts:
        app.log.redirect_stdouts(app.conf.worker_redirect_stdouts_level)


if get_settings().log_format == "json":  # text: Celery sets up its own logging, as before
    setup_logging.connect(_json_logs)


@worker_init.connect
def _on_start(sender=None, **_):
    """Folders are made when a worker starts (or an API that sends to them); a worker that could not run every
    method, attack and corruption the API accepts refuses to start; every worker runs the reconciler (which beats
    as the worker's Celery hostname) and sends the webhook outbox (two threads: neither waits behind a job)."""
    from editaudit.core import db
    from editaudit.core.queue import INGEST, RUN_EDIT, enqueue, queue_depth
    from editaudit.worker.jobs.reconcile import start_reconciler
    from editaudit.worker.jobs.webhooks import start_deliverer
    from editaudit.worker.memory import set_threads, steady_allocator
    from editaudit.worker.ml.parity import check_parity

    settings = get_settings()
    steady_allocator()  # before any job: batch-sized tensors must not fragment the heap (editaudit.worker.memory)
    set_threads(settings.torch_threads)
    broker_dirs(settings)
    load_plugins(settings.plugins)
    check_parity()
    sessions = db.session_factory(settings.resolved_database_url)
    start_reconciler(db.unscoped_sessions(sessions, "the reconciler: every tenant's lapsed and lost jobs"),
                     lambda edit_id: enqueue(app, settings, RUN_EDIT, edit_id), settings,
                     queue_depth=lambda: queue_depth(app, settings), name=getattr(sender, "hostname", None),
                     send_ingest=lambda kind, row_id: enqueue(app, settings, INGEST, kind, row_id))
    start_deliverer(db.unscoped_sessions(sessions, "webhook delivery: every tenant's outbox"), settings)
