"""RFC 9457 problem+json for every error the API returns, with `errors: [{field, reason}]` naming what is wrong;
on a web console path, the same error as an HTML page (a 404 for an unknown or another tenant's id, a bad query)."""

from __future__ import annotations

import functools
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from editaudit.core.repo import NotFound, NotReady
from editaudit.core.storage import ObjectMissing, StoreUnavailable
from editaudit.service.console.headers import HEADERS, console_path

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5

PROBLEM = "application/problem+json"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 409: "Conflict", 413: "Content Too Large",
          415: "Unsupported Media Type", 422: "Unprocessable Content", 503: "Service Unavailable",
          500: "Internal Server Error"}


class Problem(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None, errors: list[dict] | None = None, **extra):
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.errors = errors if errors is not None else ([{"field": field, "reason": detail}] if field else [])
        self.extra = extra


def validation_problem(e, prefix: str) -> Problem:
    """A pydantic ValidationError on a part of the request (`spec`, `hyperparams`, `policy`) as a 422 naming fields."""
    errors = [{"field": _loc((prefix, *x["loc"])), "reason": x["msg"]} for x in e.errors()]
    return Problem(422, "; ".join(f"{x['field']}: {x['reason']}" for x in errors), errors=errors)


def problem_response(status: int, detail: str, errors: list[dict] | None = None, instance: str | None = None,
                     **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def unavailable_response(detail: str, instance: str, errors: list[dict] | None = None, **extra) -> JSONResponse:
    """503 problem+json with Retry-After: a dependency is down, the client should come back shortly."""
    response = problem_response(503, detail, errors, instance, **extra)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _loc(loc) -> str:
    """`("body", "audit", "corruptions", "names", "list[literal[...]]", 0)` -> `audit.corruptions.names.0`:
    pydantic's union-member labels (they contain brackets) say nothing to a user."""
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path") and "[" not in str(p)) or "body"


def console_page(request: Request) -> bool:
    """Whether the request is for a page of the web console (when the app serves one): its errors are HTML."""
    return bool(getattr(request.app.state, "console", False)) and console_path(request.url.path)


def console_error(request: Request, status: int, detail: str, headers: dict | None = None):
    from editaudit.service.console.routes import error_page  # it imports this module (through deps)

    return error_page(request, status, TITLES.get(status, "Error"), detail, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc.status, exc.detail, exc.errors, request.url.path, **exc.extra)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return problem_response(404, exc.detail, [{"field": exc.field, "reason": exc.detail}], request.url.path)

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady):
        response = problem_response(409, exc.detail, [{"field": exc.field, "reason": exc.detail}], request.url.path,
                                    resource_status=exc.status)
        if exc.status == "validating":
            response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": "body",
                   "reason": f"invalid JSON at character {e['loc'][-1]}: {e.get('ctx', {}).get('error')}"}
                  if e.get("type") == "json_invalid" else {"field": _loc(e["loc"]), "reason": e["msg"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return problem_response(422, detail, errors, request.url.path)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception):
        """The database is down or saturated: a transient condition a client should retry, not a bug (500)."""
        log.warning("database unavailable on %s: %s", request.url.path, str(exc).splitlines()[0][:200])
        return unavailable_response("the database is unavailable; retry shortly", request.url.path)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, exc: StoreUnavailable):
        """The object store is down, refuses us, or its directory cannot be read or written: transient or an
        operator's to fix, never the request's. The detail stays generic (the log has the endpoint and the key)."""
        log.warning("object store unavailable on %s: %s", request.url.path, str(exc).splitlines()[0][:300])
        return unavailable_response("the object store is unavailable; retry shortly", request.url.path,
                                    [{"field": "store", "reason": "unavailable"}])

    @app.exception_handler(ObjectMissing)
    async def _object_missing(request: Request, exc: ObjectMissing):
        """A row names an object the store does not have (a store restored from an older backup, a bucket moved):
        the server's integrity fault, not the request's, logged as an error for an operator. 503 with Retry-After,
        as the store's other faults: the resource exists and comes back once the object does (a duplicate upload
        puts it back)."""
        log.error("a stored object is missing on %s: %s", request.url.path, exc)
        return unavailable_response("the stored object of this resource is missing from the object store; an "
                                    "operator must restore it (an upload of the same file does); retry later",
                                    request.url.path, [{"field": "store", "reason": "object missing"}])

    @app.exception_handler(IntegrityError)
    async def _conflict(request: Request, exc: IntegrityError):
        """A unique constraint another request got to first, where a route did not resolve the race itself (they
        do: names and aliases lock, uploads answer with the winner's row; this is the net under them): 409, retry."""
        log.warning("integrity conflict on %s: %s", request.url.path, str(exc).splitlines()[0][:200])
        return problem_response(409, "the request conflicts with a concurrent change; retry it", None,
                                request.url.path)

    @app.exception_handler(DataError)
    async def _value_out_of_range(request: Request, exc: DataError):
        """A value the database cannot store (an integer past its column, a malformed literal): the request's
        fault, and a validator that should have caught it (logged so it gets one)."""
        log.warning("value refused by the database on %s: %s", request.url.path, str(exc).splitlines()[0][:200])
        return problem_response(422, "a value in the request is out of range or malformed for storage",
                                [{"field": "body", "reason": "out of range or malformed"}], request.url.path)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        """A bug. Starlette answers it outermost, past the console's headers middleware: a console page gets its
        HTML 500 with those headers set here; anything else, the plain 500 Starlette would send (the exception is
        logged and re-raised by Starlette either way)."""
        if console_page(request):
            return console_error(request, 500, "the server failed on this page; the error is logged", HEADERS)
        return PlainTextResponse("Internal Server Error", status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        response = problem_response(exc.status_code, str(exc.detail), None, request.url.path)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: a 405 lists what the resource allows (every route on the path)
            response.headers["Allow"] = allowed_methods(request) or response.headers.get("Allow", "")
        return response

    for kind, handler in list(app.exception_handlers.items()):
        if handler is not _crash:  # a 500 is answered outermost: _crash sets the console's headers itself
            app.exception_handlers[kind] = html_on_console(handler)


def html_on_console(handler):
    """`handler`, whose answer on a web console path is the console's HTML error page instead of problem+json:
    the same status, detail and headers (Retry-After, Allow). Wrapped around every handler at install, so no
    handler, present or added later in install, needs a console branch of its own."""

    @functools.wraps(handler)
    async def answer(request: Request, exc: Exception):
        response = await handler(request, exc)
        if response is None or not console_page(request) or response.media_type != PROBLEM:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        return console_error(request, response.status_code, json.loads(response.body)["detail"], headers)

    return answer


def allowed_methods(request: Request) -> str:
    """The methods some route serves at this request's path (starlette's own 405 names one route's only)."""
    from starlette.routing import Match

    from editaudit.service.openapi import flat_routes  # it imports this module

    methods: set[str] = set()
    for route in flat_routes(request.app.routes):
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route.methods)
    return ", ".join(sorted(methods))
