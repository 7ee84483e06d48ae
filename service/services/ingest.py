"""Sending an upload the API cannot check to a worker's ingest job (editaudit.worker.jobs.ingest)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from editaudit.core import db
from editaudit.core.queue import INGEST

log = logging.getLogger(__name__)


def enqueue_ingest(svc, s: Session, row: db.Model | db.Dataset) -> None:
    """After the row is committed. A broker that is down leaves the row `validating`: each worker's reconciler
    sends stale ones again (its ingest is idempotent), so the upload is neither lost nor failed for a broker hiccup."""
    try:
        svc.enqueue(INGEST, row.__tablename__, row.id)
    except Exception:  # noqa: BLE001 - the reconciler sends it again
        log.exception("could not enqueue the ingest of %s %s; the reconciler will send it", row.__tablename__, row.id)
