"""Logs as one JSON object per line, each carrying the request or the edit it belongs to.

The API's middleware (editaudit.service.observability) sets the request id and the worker's task sets the edit id
(`log_context`); both are contextvars, so any line logged below them (a repo call, a retry warning, SQLAlchemy)
carries them without being passed along. `EDITAUDIT_LOG_FORMAT=json` turns this on for the API and the worker (the
compose file sets it); `text`, the embedded default, leaves uvicorn's and Celery's own formats as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("editaudit_request_id", default=None)
edit_id: ContextVar[str | None] = ContextVar("editaudit_edit_id", default=None)
ingest: ContextVar[str | None] = ContextVar("editaudit_ingest", default=None)  # "models/<id>" | "datasets/<id>"
audit_shard: ContextVar[str | None] = ContextVar("editaudit_audit_shard", default=None)  # an audit shard's id
CONTEXT = {"request_id": request_id, "edit_id": edit_id, "ingest": ingest, "audit_shard": audit_shard}

# a LogRecord's own attributes; anything else on a record came from `extra=` and goes into the line as a field
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message",
                                                                                 "taskName"}


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Lines logged inside carry these context fields (`request_id`, `edit_id`); the previous values come back after."""
    tokens = [(CONTEXT[name], CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id", "edit_id", ...extra fields, "exc_info"?}` on one line. An
    explicit `extra={"edit_id": ...}` wins over the context's value."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for name, var in CONTEXT.items():
            line[name] = getattr(record, name, None) or var.get()
        line.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS and k not in line)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_json_logs(level: int | str = logging.INFO, stream=None) -> logging.Handler:
    """Every log line of this process as JSON on stderr: one handler on the root logger, and the loggers that
    servers configured with handlers of their own (uvicorn, Celery) sent to it. uvicorn's access lines are dropped:
    the API's middleware logs each request itself, with its route, status, duration and request id."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:
            logger.handlers = []
            logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return handler
