"""RFC 9457 problem+json for every error the API returns, with `errors: [{field, reason}]` naming what is wrong."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from editaudit.core.repo import NotFound

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5

PROBLEM = "application/problem+json"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Content Too Large",
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


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc.status, exc.detail, exc.errors, request.url.path, **exc.extra)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return problem_response(404, exc.detail, [{"field": exc.field, "reason": exc.detail}], request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": "body", "reason": f"invalid JSON at character {e['loc'][-1]}: {e.get('ctx', {}).get('error')}"}
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

    @app.exception_handler(DataError)
    async def _value_out_of_range(request: Request, exc: DataError):
        """A value the database cannot store (an integer past its column, a malformed literal): the request's
        fault, and a validator that should have caught it (logged so it gets one)."""
        log.warning("value refused by the database on %s: %s", request.url.path, str(exc).splitlines()[0][:200])
        return problem_response(422, "a value in the request is out of range or malformed for storage",
                                [{"field": "body", "reason": "out of range or malformed"}], request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem_response(exc.status_code, str(exc.detail), None, request.url.path)
