"""The FastAPI application factory. `uvicorn editaudit.service.app:app` serves it with settings from the env."""

from __future__ import annotations

from fastapi import Depends, FastAPI

import editaudit
from editaudit.core import db
from editaudit.core.plugins import load_plugins
from editaudit.core.queue import broker_dirs, make_celery
from editaudit.core.settings import Settings, get_settings
from editaudit.core.storage import store_from_url
from editaudit.service import errors
from editaudit.service.deps import Services, require_token
from editaudit.service.edge import EdgeChecks
from editaudit.service.routes import (aliases, audit_profiles, audits, catalog, datasets, edits, gate, health,
                                      models, policies)

RESOURCE_ROUTERS = (catalog.router, models.router, datasets.router, edits.router, audits.router,
                    audit_profiles.router, policies.router, gate.router, aliases.router)


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker_dirs(settings)  # the embedded broker's folders exist before the first message is sent
    return Services(
        settings=settings,
        sessions=db.session_factory(settings.resolved_database_url),
        store=store_from_url(settings.resolved_store_url, settings.s3_endpoint_url, settings.s3_region),
        celery=make_celery(settings),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    load_plugins(settings.plugins)  # their params are valid in requests from now on
    app = FastAPI(title="editaudit", version=editaudit.__version__,
                  description="Edit image classifiers and audit the robustness of the edit before deployment.")
    app.state.services = build_services(settings)
    errors.install(app)
    app.add_middleware(EdgeChecks)
    app.include_router(health.router)
    for r in RESOURCE_ROUTERS:
        app.include_router(r, dependencies=[Depends(require_token)])
    return app


def __getattr__(name: str):  # `uvicorn editaudit.service.app:app` without building an app at import time
    if name == "app":
        return create_app()
    raise AttributeError(name)
