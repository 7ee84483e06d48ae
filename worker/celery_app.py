"""The worker's Celery application (the shared configuration is editaudit.core.queue's).

Run a worker with:  celery -A editaudit.worker.celery_app worker --pool=solo --concurrency=1   (one per GPU)
"""

from __future__ import annotations

from celery.signals import worker_init

from editaudit.core.queue import broker_dirs, make_celery
from editaudit.core.settings import get_settings

app = make_celery(get_settings(), include=["editaudit.worker.tasks"])  # importing creates nothing on disk ...


@worker_init.connect
def _make_broker_dirs(**_):  # ... folders are made when a worker starts (or an API that sends to them)
    broker_dirs(get_settings())
