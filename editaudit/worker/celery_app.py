"""The Celery application: configured for long GPU jobs, importable without torch (the API enqueues by name).

Run a worker with:  celery -A editaudit.worker.celery_app worker --pool=solo --concurrency=1   (one per GPU)
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init

from editaudit.service.settings import Settings, get_settings

RUN_EDIT = "editaudit.run_edit"


def broker_dirs(settings: Settings) -> None:
    """The embedded broker's folders (no-op for a real broker)."""
    if settings.embedded:
        for sub in ("queue", "processed", "control"):
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings) -> Celery:
    app = Celery("editaudit", include=["editaudit.worker.tasks"])
    conf = dict(
        broker_url=settings.resolved_broker_url,
        task_default_queue=settings.queue,
        task_ignore_result=True,  # job state lives in the database, not in a result backend
        task_acks_late=True,  # a job is acknowledged only once it has finished ...
        task_reject_on_worker_lost=True,  # ... and goes back to the queue if its worker dies
        worker_prefetch_multiplier=1,  # one long job at a time per worker process
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    )
    if settings.embedded:  # the embedded default: a broker made of files under the data directory
        folder = settings.broker_folder
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"), "store_processed": False, "polling_interval": 0.2,
            "control_folder": str(folder / "control"),
        }
    app.conf.update(conf)
    return app


app = make_celery(get_settings())  # importing creates nothing on disk: folders are made when a worker starts ...


@worker_init.connect
def _make_broker_dirs(**_):
    broker_dirs(get_settings())
