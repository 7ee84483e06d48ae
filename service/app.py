"""The FastAPI application factory. `python -m editaudit.service.server` serves it with settings from the env, under
the connection limits of editaudit.service.server (`uvicorn editaudit.service.app:app` still works, without them)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.gzip import GZipMiddleware

import editaudit
from editaudit.core import db
from editaudit.core.keys import credentials_exist
from editaudit.core.plugins import load_plugins
from editaudit.core.queue import broker_dirs, make_celery
from editaudit.core.settings import Settings, get_settings
from editaudit.core.storage import store_from_url
from editaudit.service import errors, observability, openapi
from editaudit.service.admission import Admission
from editaudit.service.console import routes as console
from editaudit.service.console.headers import ConsoleHeaders
from editaudit.service.deps import Services
from editaudit.service.edge import EdgeChecks
from editaudit.service.routes import (
    aliases,
    audit_profiles,
    audits,
    catalog,
    datasets,
    edits,
    gate,
    health,
    models,
    policies,
    studies,
    webhooks,
)

log = logging.getLogger(__name__)
RESOURCE_ROUTERS = (catalog.router, models.router, datasets.router, edits.router, audits.router, studies.router,
                    audit_profiles.router, policies.router, gate.router, aliases.router, webhooks.router)


def build_services(settings: Settings, allow_anonymous: bool = False) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker_dirs(settings)  # the embedded broker's folders exist before the first message is sent
    return Services(
        settings=settings,
        sessions=db.session_factory(settings.resolved_database_url),
        store=store_from_url(settings.resolved_store_url, settings.s3_endpoint_url, settings.s3_region),
        celery=make_celery(settings),
        allow_anonymous=allow_anonymous,
    )


def check_credentials(svc: Services) -> None:
    """Refuse to serve a network without keys: anonymous access is the embedded default's, on loopback only."""
    if svc.allow_anonymous:
        log.warning("no API key required: requests without one act as tenant 'default' with every scope "
                    "(loopback only; create a key with `editaudit keys create` to require keys)")
        return
    with db.unscoped_session(svc.sessions, "start-up: does any tenant have a key") as s:
        if not credentials_exist(s, svc.settings.api_token):
            raise RuntimeError("no API key exists and EDITAUDIT_API_TOKEN is not set: refusing to serve without "
                               "authentication; run `editaudit keys create --tenant NAME --scope admin` first")


def create_app(settings: Settings | None = None, *, allow_anonymous: bool = False,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The API. `allow_anonymous` is for `editaudit serve` on loopback (and tests): requests without a key act as
    tenant `default` until a key exists. `routers`: more routes (a deployment's, a test's), held to the same rules:
    every route declares its scope (or that it is public) or the app refuses to build, and start; every route's
    session is its caller's tenant's."""
    settings = settings or get_settings()
    load_plugins(settings.plugins)  # their params are valid in requests from now on
    services = build_services(settings, allow_anonymous)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        openapi.check_routes(_app)  # again: a router included after create_app is held to the same rule
        check_credentials(services)
        yield

    app = FastAPI(title="editaudit", version=editaudit.__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Edit image classifiers and audit the robustness of the edit before deployment. "
                              "Every route but /healthz, /readyz and /metrics takes an API key as a bearer token.")
    app.state.services = services
    errors.install(app)
    app.include_router(health.router)
    for r in (*RESOURCE_ROUTERS, *routers):
        app.include_router(r)
    app.state.console = settings.console
    if settings.console:  # off: not a route of it exists (/console/* is a 404), its cookie is never read
        app.include_router(console.router)
    openapi.install(app)
    # middleware, innermost first: at most api_threads requests inside (a database connection free for each),
    # admitted only once their body is in; the edge's checks before that; metrics and request ids outermost
    app.add_middleware(Admission)
    app.add_middleware(EdgeChecks, routes=app.routes, services=services)  # the live list: later routes included
    if settings.console:  # outside the edge: its redirects and refusals of console pages carry them too
        app.add_middleware(ConsoleHeaders)
    gzip = gzip_options()
    if gzip is not None:  # JSON, HTML and Markdown; never downloads or images
        app.add_middleware(GZipMiddleware, **gzip)
    observability.install(app)
    openapi.check_routes(app)
    return app


def gzip_options() -> dict | None:
    """Compress what compresses (an audit's JSON ~5x) for clients that accept gzip; weights, deltas and PNGs pass as
    they are (compressing floats costs CPU for nothing, and a download's Content-Length and digest stay its own).
    None on a Starlette too old to exclude content types (before 0.46): no compression then."""
    if "exclude_content_types" not in inspect.signature(GZipMiddleware.__init__).parameters:
        return None
    return {"minimum_size": 1024,
            "exclude_content_types": ("text/event-stream", "application/octet-stream", "image/png")}


def __getattr__(name: str):  # `uvicorn editaudit.service.app:app` without building an app at import time
    if name == "app":
        return create_app()
    raise AttributeError(name)
