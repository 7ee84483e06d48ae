"""The Celery application as both sides configure it, importable without torch: the API sends tasks by name
through it, the worker runs them (`editaudit.worker.celery_app`). Configured for long GPU jobs."""

from __future__ import annotations

from celery import Celery

from editaudit.core.settings import Settings

RUN_EDIT = "editaudit.run_edit"  # an edit and its audit (or a layer sweep), by edit id
INGEST = "editaudit.ingest"  # check a model or decode a dataset the API cannot: ("models" | "datasets", id)
AUDIT_SHARD = "editaudit.audit_shard"  # one shard of a running audit, by shard id (sent by the edit's worker)


def broker_dirs(settings: Settings) -> None:
    """The embedded broker's folders (no-op for a real broker)."""
    if settings.embedded:
        for sub in ("queue", "processed", "control"):
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    app = Celery("editaudit", include=include or [])
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


def enqueue(celery: Celery, settings: Settings, task: str, *args) -> None:
    """Send a task by name (the sender needs none of the task's code)."""
    celery.send_task(task, args=list(args), queue=settings.queue)


def enqueue_group(celery: Celery, settings: Settings, task: str, arg_lists: list[list]) -> None:
    """Send one task per argument list as a Celery group: any idle worker takes any of them."""
    from celery import group

    group(celery.signature(task, args=args, queue=settings.queue) for args in arg_lists).apply_async()


def queue_depth(celery: Celery, settings: Settings) -> int:
    """Messages waiting in the job queue (a passive declare: works on Redis, AMQP and the filesystem broker)."""
    from amqp.exceptions import ChannelError

    with celery.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=settings.queue, passive=True).message_count)
        except ChannelError as e:  # 404: no such queue (Redis drops an empty list): nothing waits in it
            if "NOT_FOUND" in str(e):
                return 0
            raise
