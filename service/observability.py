"""What an operator watches: a request id on every request and its log lines, request latency, and `/metrics`.

`Observability` is a pure ASGI layer, the outermost one the app adds, so it times everything (the edge's refusals
included) and its request id is set for every line logged below it. Latency is labelled with the matched route's
template (`/audits/{audit_id}`), never the raw path, so the number of series stays bounded whatever clients send.

`/metrics` is public and shows only figures about the service, none about a tenant's work: request latency by route
template, the queue depth and each worker's heartbeat age. Job state (edits by status, audit durations) counts every
tenant's jobs, so it is shown only to a scrape that presents `Authorization: Bearer <EDITAUDIT_METRICS_TOKEN>` (an
operator's secret, no tenant's key; unset: never shown). Job state and heartbeats are read from the database, and the
queue depth from the broker, when Prometheus scrapes, so every API replica reports the same numbers: aggregate those
with max, not sum. Each app has its own registries (tests build many apps in one process).

On startup it also sizes anyio's threadpool, where FastAPI runs the sync routes, to `api_threads` (the database
pool is sized to cover it), and switches the process to JSON logs when `log_format` is json.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
import uuid
from datetime import datetime

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from starlette.routing import Match

from editaudit.contracts.statuses import Status
from editaudit.core import db
from editaudit.core.logs import configure_json_logs, request_id
from editaudit.core.queue import queue_depth
from editaudit.service.errors import Problem
from editaudit.service.openapi import op

log = logging.getLogger(__name__)
access_log = logging.getLogger("editaudit.access")

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # an X-Request-ID taken as is; others get a new one
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (404s, refusals of unknown paths)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 2 * 3600, 4 * 3600, 6 * 3600)
MAX_AUDITS_PER_SCRAPE = 1000


class Metrics:
    """One app's registries: `registry` (public: no tenant's figures) and `jobs` (every tenant's job state: operator
    scrapes only). Request latency is observed as requests finish; the rest is read at scrape time."""

    def __init__(self, services) -> None:
        self.services = services
        self.registry = CollectorRegistry()
        self.jobs = CollectorRegistry()
        self.latency = Histogram("editaudit_http_request_duration_seconds", "Requests by route template, method and "
                                 "status", ["method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.queue_depth = Gauge("editaudit_queue_depth", "Jobs waiting in the broker's queue", registry=self.registry)
        self.heartbeat_age = Gauge("editaudit_worker_heartbeat_age_seconds", "Seconds since each worker's last "
                                   "heartbeat (written every reconcile_every_s, even while it runs a job)", ["worker"],
                                   registry=self.registry)
        self.edits = Gauge("editaudit_edits", "Edits by status, read from the database at scrape time", ["status"],
                           registry=self.jobs)
        self.audit_duration = Histogram("editaudit_audit_duration_seconds", "Finished audits: from their job's "
                                        "(last) start to the audit's end", ["status"], buckets=JOB_BUCKETS,
                                        registry=self.jobs)
        self.audit_turnaround = Histogram("editaudit_audit_turnaround_seconds", "Finished audits: from submission "
                                          "(queue wait included) to the audit's end", ["status"], buckets=JOB_BUCKETS,
                                          registry=self.jobs)
        self.source_up = Gauge("editaudit_metrics_source_up", "1 when the source answered the last scrape",
                               ["source"], registry=self.registry)
        # audits are observed once each, as they finish after this process started (not the whole history)
        self._since: datetime = db.utcnow()
        self._lock = threading.Lock()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method if method in METHODS else "other", route, str(status)).observe(seconds)

    def render(self, jobs: bool = False) -> bytes:
        """The exposition text, after reading the database and the broker; a source that fails is reported as down
        (`editaudit_metrics_source_up`) and its series keep their last values. `jobs`: add every tenant's job state
        (an operator's scrape)."""
        with self._lock:  # concurrent scrapes must not observe the same audits twice

            def database() -> None:
                self._read_heartbeats()
                if jobs:
                    self._read_database()

            for source, read in (("database", database), ("broker", self._read_broker)):
                try:
                    read()
                    self.source_up.labels(source).set(1)
                except Exception as e:  # noqa: BLE001 - a scrape reports a dependency down, it never fails
                    log.warning("metrics: the %s did not answer: %s", source, str(e).splitlines()[0][:200] if str(e)
                                else type(e).__name__)
                    self.source_up.labels(source).set(0)
            return generate_latest(self.registry) + (generate_latest(self.jobs) if jobs else b"")

    def _read_heartbeats(self) -> None:
        with self.services.sessions() as s:  # worker_heartbeats belongs to no tenant: a plain session reads it
            ages = db.heartbeat_ages(s)
        self.heartbeat_age.clear()  # workers forgotten since the last scrape drop out
        for name, age in ages.items():
            self.heartbeat_age.labels(name).set(round(age, 3))

    def _read_database(self) -> None:
        with db.unscoped_session(self.services.sessions, "operator metrics: counts over every tenant") as s:
            counts = dict(s.execute(select(db.Edit.status, func.count()).group_by(db.Edit.status)).all())
            rows = s.execute(
                select(db.Audit.status, db.Audit.created_at, db.Audit.finished_at, db.Edit.started_at)
                .join(db.Edit, db.Edit.id == db.Audit.edit_id)
                .where(db.Audit.finished_at > self._since).order_by(db.Audit.finished_at)
                .limit(MAX_AUDITS_PER_SCRAPE)).all()  # a backlog larger than this is read over the next scrapes
        for status in {*(member.value for member in Status), *counts}:
            self.edits.labels(status).set(counts.get(status, 0))
        for status, created, finished, started in rows:
            if finished is None:  # not asked for (finished_at > since)
                continue
            self.audit_turnaround.labels(status).observe(max(0.0, (finished - created).total_seconds()))
            if started is not None:
                self.audit_duration.labels(status).observe(max(0.0, (finished - started).total_seconds()))
            self._since = finished

    def _read_broker(self) -> None:
        self.queue_depth.set(queue_depth(self.services.celery, self.services.settings))


def metrics_of(app) -> Metrics:
    """The app's Metrics, made on first use (by the middleware, on the event loop's thread)."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:
        metrics = app.state.metrics = Metrics(app.state.services)
    return metrics


def route_template(scope) -> str:
    """The path template of the route that served (or would have served) the request; `unmatched` for none."""
    route = scope.get("route")  # set by the router once it matched
    path = getattr(route, "path", None) if route is not None else _match(getattr(scope.get("app"), "routes", ()), scope)
    return path or UNMATCHED


def _match(routes, scope) -> str | None:
    """For a request refused before routing (the edge's checks): the template the router would have matched,
    looking into included routers (FastAPI keeps them as one route each, holding `original_router`)."""
    for candidate in routes:
        if candidate.matches(scope)[0] is Match.NONE:
            continue
        inner = getattr(getattr(candidate, "original_router", None), "routes", None)
        found = _match(inner, scope) if inner is not None else getattr(candidate, "path", None)
        if found:
            return found
    return None


def on_startup(app) -> None:
    """Process-wide settings the app's configuration asks for, applied where they take effect: on the event loop."""
    settings = app.state.services.settings
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    if settings.log_format == "json":
        configure_json_logs()


class Observability:
    """Pure ASGI (streaming bodies pass through untouched): request id in, timed, labelled, echoed back."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, self._startup_hook(scope, receive), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        metrics = metrics_of(scope["app"])
        incoming = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        status = 500  # unless a response starts: an exception the server turns into a 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)

        token = request_id.set(rid)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            metrics.observe_request(scope["method"], route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, seconds * 1000,
                                extra={"method": scope["method"], "route": route, "path": scope["path"],
                                       "status": status, "duration_ms": round(seconds * 1000, 3)})
            request_id.reset(token)

    @staticmethod
    def _startup_hook(scope, receive):
        async def receive_and_start():
            message = await receive()
            if message["type"] == "lifespan.startup":
                on_startup(scope["app"])
            return message

        return receive_and_start


router = APIRouter(tags=["health"])


def install(app) -> None:
    """`/metrics` (unauthenticated, like /healthz) and the middleware. Call it last in create_app: the middleware
    added last is the outermost."""
    app.include_router(router)
    app.add_middleware(Observability)
    if app.state.services.settings.log_format == "json":
        configure_json_logs()  # now, for the server's startup lines; again on startup, once it has set up its own


@router.get("/metrics", response_class=Response,
            **op("get_metrics", None, 401, public=True, responses={200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}))
def get_metrics(request: Request) -> Response:
    """Public, like /healthz, with no tenant's figures: request latency by route template, method and status; queue
    depth; each worker's heartbeat age. With `Authorization: Bearer <EDITAUDIT_METRICS_TOKEN>` (the operator's
    Prometheus), also edits by status and audit durations, which count every tenant's jobs. Any other credential is
    a 401."""
    token = request.app.state.services.settings.metrics_token
    credential = request.headers.get("authorization")
    if credential is not None and (token is None or not hmac.compare_digest(
            credential.encode("latin-1", "replace"), f"Bearer {token}".encode("latin-1", "replace"))):
        raise Problem(401, "/metrics takes no API key: without Authorization it shows the public figures; with "
                      "'Bearer <EDITAUDIT_METRICS_TOKEN>' (the operator's) also every tenant's job figures",
                      field="Authorization")
    return Response(metrics_of(request.app).render(jobs=credential is not None), media_type=CONTENT_TYPE_LATEST)
