"""The OpenAPI contract: every operation's stable id, the scope it needs and the errors it may answer, declared
once per route with `op(...)`; `install` publishes the problem schema for every error status, the bearer scheme
and serves /docs from local assets (no CDN: it works offline). A route that declares no scope is refused: `op()`
refuses `scope=None` unless the route says it is public (no key) or open to any key, and `check_routes` refuses, at
app build and again at start-up, any route that did not go through `op()`.

The schema is OpenAPI 3.1, which only Swagger UI 5 renders (4.x answers "Unable to render this definition"): /docs
serves swagger-ui-dist 5.x as the PyPI package fastapi-swagger ships it (its `resources` folder, the three files
below), from /docs-assets/, which the edge lets through without a key (editaudit.service.edge.PUBLIC_PREFIX)."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Mount, Route

from editaudit.contracts.scopes import Scope
from editaudit.service.errors import PROBLEM, TITLES

log = logging.getLogger(__name__)

# what any authenticated route may answer besides its own errors: a body that does not parse, no or a bad key, a
# missing scope, a body over the limit, NUL bytes or invalid parameters, the database down
COMMON_ERRORS = (400, 401, 403, 408, 413, 422, 503)
PUBLIC_ERRORS = (422, 503)
RETRY_AFTER: dict[str, Any] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "integer"}}}
# a route that reads or writes the object store (store=True) says so on its 503 (editaudit.service.errors)
STORE_UNAVAILABLE: dict[str, Any] = {
    "description": "Service Unavailable: the database or the object store is unavailable, or the stored object of "
                   "this resource is missing (`errors[].field` = `store`); retry after Retry-After",
    "headers": RETRY_AFTER}


class FieldError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` names each offending field. Routes add context members (e.g. `gate`)."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


class RouteDeclarationError(RuntimeError):
    """A route that does not say who may call it."""


def op(operation_id: str, scope: Scope | None, *errors: int, upload: bool = False, public: bool = False,
       any_key: bool = False, store: bool = False, responses: dict | None = None, console: bool = False) -> dict:
    """Route keyword arguments: `@router.get(path, **op("get_edit", Scope.audits_read, 404))`. A route names the
    scope it needs; `scope` None only with `public` (no key at all: health and metrics) or `any_key` (any valid
    key: the catalog of archs and methods). `store`: the route reads or writes the object store (its 503 says so).
    `responses`: the route's other documented answers. `console`: a web console page (editaudit.service.console),
    which the edge also authenticates from the console's cookie; `check_routes` holds it to GET unless public.
    Whatever the scope, the route's database session is its caller's tenant's (editaudit.service.deps.SessionDep)."""
    if (scope is None) == (not (public or any_key)) or (public and any_key):
        raise RouteDeclarationError(f"route {operation_id!r}: name the scope it needs, or declare it public=True "
                                    "(no key) or any_key=True (any valid key): one of the three")
    statuses = sorted(set(errors) | set(PUBLIC_ERRORS if public else COMMON_ERRORS))
    extra = {"x-required-scope": scope.value if scope else None, "x-public": public, "x-any-key": any_key,
             "x-upload": upload}
    if console:
        extra["x-console"] = True
    documented = {s: {"description": TITLES.get(s, "Error")} for s in statuses}
    if store:
        documented[503] = copy.deepcopy(STORE_UNAVAILABLE)
    return {"operation_id": operation_id, "openapi_extra": extra, "responses": {**documented, **(responses or {})}}


def _schema(app: FastAPI) -> dict:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.setdefault("schemas", {}).update({**problem_schema.pop("$defs", {}), "Problem": problem_schema})
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                "description": "an API key: editaudit keys create"}}
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in schema["paths"].values():
        for operation in item.values():
            public = operation.pop("x-public", False)
            operation.pop("x-upload", None)
            operation.pop("x-any-key", None)
            operation.pop("x-console", None)
            if operation.get("x-required-scope") is None:
                operation.pop("x-required-scope", None)
            operation["security"] = [] if public else [{"bearer": []}]
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    response["content"] = problem
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    return schema


DOCS_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
# nothing at page load comes from elsewhere: no validator badge (validator.swagger.io), FastAPI's defaults otherwise
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def swagger_ui_dir() -> Path | None:
    """The folder holding swagger-ui-dist's DOCS_ASSETS (fastapi-swagger's), or None when it is not installed."""
    try:
        import fastapi_swagger.resources as resources
    except ImportError:
        return None
    folder = Path(resources.__file__).parent
    return folder if all((folder / name).is_file() for name in DOCS_ASSETS) else None


def swagger_ui_version(folder: Path) -> str | None:
    """The Swagger UI version the bundle in `folder` declares (its build info), e.g. "5.34.0"."""
    text = (folder / "swagger-ui-bundle.js").read_text(encoding="utf-8", errors="replace")
    found = re.search(r'PACKAGE_VERSION:"(\d+\.\d+\.\d+[^"]*)"', text)
    return found.group(1) if found else None


class DocsAssets(StaticFiles):
    """Only swagger-ui's files: not the package's __init__.py or __pycache__."""

    def lookup_path(self, path: str):
        if path not in DOCS_ASSETS:
            return "", None
        return super().lookup_path(path)


def declared(route) -> bool:
    """Whether an operation says who may call it (it went through `op()`)."""
    extra = getattr(route, "openapi_extra", None) or {}
    return bool(extra.get("x-required-scope") or extra.get("x-public") or extra.get("x-any-key"))


class _Flat:
    """A route of a FastAPI that copies included routers' routes into the app's list (before 0.16x's lazy
    inclusion): already flat; `original_route` is itself, everything else is the route's."""

    def __init__(self, route):
        self.route = self.original_route = route

    def __getattr__(self, name: str):
        return getattr(self.route, name)


def flat_routes(routes) -> list:
    """Every route of an app's route list, included routers' routes in their place (with their prefixes), each
    with `matches(scope)`, `path`, `methods` and, for an operation, its `openapi_extra`."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: app.routes already holds every route, prefixed
        return [_Flat(r) for r in routes]
    return list(iter_route_contexts(routes))


CONSOLE_METHODS = frozenset({"GET", "HEAD"})


def console_route(route) -> bool:
    """Whether a route is a web console page: the edge takes its key from the console's cookie too."""
    return bool((getattr(route, "openapi_extra", None) or {}).get("x-console"))


def check_routes(app: FastAPI) -> None:
    """Refuse an app with a route that does not say who may call it: an APIRoute not declared with `op()`, or any
    other route but the schema's and the docs' assets. A console route that the cookie authenticates must only read
    (GET or HEAD): a cross-site request then carries nothing it could make write. Only a public one (sign in and
    out, which check the request's origin themselves) may take another method."""
    bad = []
    for route in flat_routes(app.routes):
        original = route.original_route
        if isinstance(original, APIRoute) and console_route(route) and not (original.openapi_extra or {}).get(
                "x-public") and not set(original.methods or ()) <= CONSOLE_METHODS:
            raise RouteDeclarationError(f"console route {sorted(original.methods or ())} {route.path}: a page the "
                                        "console's cookie authenticates only reads (GET); declare it public=True "
                                        "only if it checks the request's origin itself")
        if isinstance(original, APIRoute):
            ok = declared(route)
        elif isinstance(original, Mount):
            ok = isinstance(original.app, DocsAssets)
        else:
            ok = isinstance(original, Route) and route.path == app.openapi_url
        if not ok:
            methods = ",".join(sorted(getattr(route, "methods", None) or [])) or type(original).__name__
            bad.append(f"{methods} {route.path}")
    if bad:
        raise RouteDeclarationError(f"routes without a declared scope (op(..., scope) or public=True): {bad}")


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:  # built once, after every route is registered
            app.openapi_schema = _schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to supply the schema
    assets = swagger_ui_dir()
    if assets is None:  # the docs page needs the bundled assets; the schema itself does not
        log.warning("no /docs: Swagger UI's assets are missing (pip install fastapi-swagger)")
        return
    app.mount("/docs-assets", DocsAssets(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False, **op("docs", None, any_key=True))
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png",
                                   swagger_ui_parameters=SWAGGER_UI_PARAMETERS)
