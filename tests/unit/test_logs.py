"""JSON log lines: one object per line, with the edit id the worker's task sets and the exception's text."""

from __future__ import annotations

import io
import json
import logging

from editaudit.core.logs import JsonFormatter, configure_json_logs, log_context


def capture(logger_name: str):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_a_worker_line_carries_the_edit_id_and_its_exception():
    log, stream = capture("editaudit.test.worker")
    with log_context(edit_id="e" * 32):
        log.info("audit %s of %d samples", "pgd", 450, extra={"attempt": 2})
        try:
            raise ValueError("no such layer: fc9")
        except ValueError:
            log.exception("the job failed")
    log.warning("outside any job")

    first, failed, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "audit pgd of 450 samples" and first["level"] == "INFO"
    assert first["logger"] == "editaudit.test.worker" and first["attempt"] == 2
    assert first["edit_id"] == "e" * 32 and first["request_id"] is None
    assert first["ts"].endswith("+00:00")
    assert failed["level"] == "ERROR" and failed["edit_id"] == "e" * 32
    assert "Traceback" in failed["exc_info"] and "ValueError: no such layer: fc9" in failed["exc_info"]
    assert outside["edit_id"] is None and "exc_info" not in outside


def test_contexts_nest_and_an_explicit_field_wins():
    log, stream = capture("editaudit.test.nested")
    with log_context(request_id="r1"), log_context(edit_id="outer"):
        with log_context(edit_id="inner"):
            log.info("a")
        log.info("b")
        log.info("c", extra={"edit_id": "explicit"})
    a, b, c = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (a["edit_id"], b["edit_id"], c["edit_id"]) == ("inner", "outer", "explicit")
    assert a["request_id"] == b["request_id"] == "r1"


def test_configure_json_logs_sends_every_logger_to_one_json_handler():
    loggers = [logging.getLogger(),
               *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    saved = [(x, x.handlers[:], x.propagate, x.level) for x in loggers]  # the process's logging is put back after
    server = logging.getLogger("editaudit.test.server")
    server.addHandler(logging.StreamHandler(io.StringIO()))  # a server's own text handler (uvicorn, Celery)
    server.propagate = False
    stream = io.StringIO()
    try:
        configure_json_logs(stream=stream)
        server.info("started on port %d", 8000)
    finally:
        for x, handlers, propagate, level in saved:
            x.handlers, x.propagate = handlers, propagate
            x.setLevel(level)
        server.handlers, server.propagate = [], True
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["msg"] == "started on port 8000" and json.loads(line)["logger"] == "editaudit.test.server"
