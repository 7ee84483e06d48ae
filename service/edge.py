"""The API's edge, as a pure ASGI layer in front of every route, so nothing is read before it is allowed:

1. NUL bytes in the URL are refused (Postgres refuses them in text, which would surface as a 500).
2. The credential: `Authorization: Bearer <key>` names the tenant, the actor and the scopes (editaudit.core.keys);
   the matched route names the scope it needs (`x-required-scope`, set by editaudit.service.openapi.op). 401 / 403
   are answered from the headers alone; a request with two Authorization headers is a 400 (on every path). Only
   /healthz, /readyz and /metrics are public, and the web console's sign-in and sign-out.
   A web console page (`x-console`, editaudit.service.console) also takes the key from the console's cookie when
   the request has no Authorization header, authenticated exactly as a bearer token; without a valid one it is a
   303 to the sign-in page instead of a 401. The cookie is never read on any other route, and console pages only
   read (editaudit.service.openapi.check_routes), so a cross-site request can make the cookie read, never write.
3. The body limit: `Content-Length` over the route's limit is a 413 before a byte is read. An upload's body is
   counted as it streams and cut off with a 413 at the limit, or a 408 when it arrives slower than
   `body_min_bytes` per `body_timeout_s` of waiting; every other body (at most MAX_JSON_BYTES) is read
   here within `body_timeout_s`, checked for NULs, lone surrogates and non-finite numbers (NaN, Infinity, 1e999:
   422 naming the field, in both database modes), and replayed to the app, so a request is admitted
   (editaudit.service.admission) only once its body is in.

Key lookups are cached for `key_cache_s` (a revoked key stops working within that time)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from urllib.parse import unquote_to_bytes

import anyio
from starlette.routing import Match

from editaudit.contracts.scopes import grants
from editaudit.core import db, keys
from editaudit.service.admission import BODY_IN
from editaudit.service.console.auth import cookie_token, login_redirect, principal_for_token
from editaudit.service.errors import problem_response, unavailable_response
from editaudit.service.interrupt import Interrupt, run_interruptible
from editaudit.service.openapi import flat_routes

MAX_JSON_BYTES = 1024 * 1024
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PREFIX = "/docs-assets/"  # swagger-ui's own scripts; /docs and /openapi.json need a key like any route
DATABASE_DOWN = "the database is unavailable; retry shortly"
LOOKUP = "the edge: which tenant a key belongs to"


class EdgeChecks:
    def __init__(self, app, routes, services):
        """`routes`: the app's route list itself (app.routes), so routes included after the middleware was added
        are matched too."""
        self.app, self.routes, self.svc = app, routes, services
        self._flat: tuple[int, list] = (-1, [])
        self._cache: dict[str, tuple[float, keys.Principal | None]] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # no route takes one: refused rather than let past the checks below
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if b"\x00" in unquote_to_bytes(scope.get("raw_path") or scope["path"].encode()) or \
                b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            return await _refuse(scope, receive, send, 422, "the URL holds a NUL byte", "url")
        if sum(name.lower() == b"authorization" for name, _ in scope.get("headers") or ()) > 1:
            # which one counts would be up to whoever reads them (here the last; a proxy, the first): none does
            return await _refuse(scope, receive, send, 400, "more than one Authorization header: send exactly one",
                                 "Authorization")
        headers = dict(scope.get("headers") or [])
        route = self._route(scope)
        extra = getattr(route, "openapi_extra", None) or {}
        console = bool(extra.get("x-console")) and self.svc.settings.console  # off: the cookie is inert
        public = scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIX) or \
            (console and bool(extra.get("x-public")))
        if not public:
            try:
                principal = await self._caller(scope, headers, console)
            except Exception:  # noqa: BLE001 - the key store is the database: down is a 503, not a 500
                response = unavailable_response(DATABASE_DOWN, scope["path"], [{"field": "database",
                                                                              "reason": DATABASE_DOWN}])
                return await response(scope, receive, send)
            if principal is None and console:  # a browser: the sign-in page, then back here
                return await login_redirect(scope)(scope, receive, send)
            if principal is None:
                return await _refuse(scope, receive, send, 401, "a valid API key is required: "
                                     "'Authorization: Bearer <key>' (editaudit keys create)", "Authorization",
                                     {"WWW-Authenticate": 'Bearer realm="editaudit"'})
            needed = (getattr(route, "openapi_extra", None) or {}).get("x-required-scope")
            if not grants(principal.scopes, needed):
                return await _refuse(scope, receive, send, 403, f"this key lacks the scope {needed!r}", "Authorization",
                                     scopes=sorted(principal.scopes), required_scope=needed)
            scope.setdefault("state", {})["principal"] = principal
        limit = self._limit(route)
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _refuse(scope, receive, send, 400, "Content-Length is not a number", "Content-Length")
            if int(declared) > limit:
                return await _refuse(scope, receive, send, 413, f"the body is larger than {limit} bytes", "body",
                                     limit_bytes=limit)
        if self._upload(route):
            return await self._counted(scope, receive, send, limit)
        return await self._buffered(scope, receive, send, limit)

    def _route(self, scope):
        """The route the request matches. The flattened list is rebuilt when the app's list grows, and once more
        before answering "no route": a route added to an included router after the first request (the app's list
        does not grow then) is matched, and held to its scope, all the same."""
        for fresh in (False, True):
            if fresh or self._flat[0] != len(self.routes):
                self._flat = (len(self.routes), flat_routes(self.routes))
            for route in self._flat[1]:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    return route
        return None

    @staticmethod
    def _upload(route) -> bool:
        return (getattr(route, "openapi_extra", None) or {}).get("x-upload", False)

    def _limit(self, route) -> int:
        return (self.svc.settings.max_upload_mb + 1) * 1024 * 1024 if self._upload(route) else MAX_JSON_BYTES

    async def _caller(self, scope, headers: dict, console: bool) -> keys.Principal | None:
        """The principal of the Authorization header; on a console page without one, of the console's cookie
        first (a cookie that authenticates nothing is as no credential: anonymous where that is allowed)."""
        if console and b"authorization" not in headers:
            token = cookie_token(scope.get("headers") or ())
            found = await self._token_principal(token) if token else None
            if found is not None:
                return found
        return await self._principal(headers.get(b"authorization", b""))

    async def _principal(self, authorization: bytes) -> keys.Principal | None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if not authorization:
            anonymous = self.svc.allow_anonymous and not await self._cached("", self._credentials_exist)
            return keys.ANONYMOUS if anonymous else None
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await self._token_principal(token.strip())

    async def _token_principal(self, token: str) -> keys.Principal | None:
        """A bearer token's principal, whether it came in the Authorization header or the console's cookie (the
        lookup the console's sign-in makes too, cached here)."""
        slot = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        return await self._cached(slot, lambda: principal_for_token(self.svc, token, LOOKUP))

    async def _cached(self, slot: str, fetch):
        now = time.monotonic()
        hit = self._cache.get(slot)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await anyio.to_thread.run_sync(fetch)
        if len(self._cache) > 4096:  # bounded: a flood of random tokens cannot grow it
            self._cache.clear()
        self._cache[slot] = (now + self.svc.settings.key_cache_s, value)
        return value

    def _credentials_exist(self) -> bool:
        with db.unscoped_session(self.svc.sessions, "the edge: does any tenant have a key") as s:
            return keys.credentials_exist(s, self.svc.settings.api_token)

    async def _buffered(self, scope, receive, send, limit: int):
        """Every body but an upload's is small: read it whole here, within `body_timeout_s` (a client trickling a
        body holds nothing but its socket, and not for long), check it, and replay it to the app."""
        body, more = b"", True
        try:
            with anyio.fail_after(self.svc.settings.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > limit:
                        return await _refuse(scope, receive, send, 413, f"a JSON body is at most {limit} bytes",
                                             "body", limit_bytes=limit)
        except TimeoutError:
            return await _refuse(scope, receive, send, 408, f"the body did not arrive within "
                                 f"{self.svc.settings.body_timeout_s:g} s", "body")
        why = unstorable(body)
        if why:
            return await _refuse(scope, receive, send, 422, f"the body holds {why}", "body")
        # a large body's parse goes to a thread: the event loop serves every other connection meanwhile
        found = nonfinite(body) if len(body) <= 64 * 1024 else await anyio.to_thread.run_sync(nonfinite, body)
        if found:
            field, literal = found
            return await _refuse(scope, receive, send, 422, f"{field} is {literal}: numbers must be finite (JSON "
                                 "has no NaN or Infinity; Python's json writes them unless allow_nan=False)", field)
        scope[BODY_IN] = True
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _counted(self, scope, receive, send, limit: int):
        """Stream the body to the app, counting: past the limit the app's reading fails and its response is
        replaced by a 413 (unless it already started answering). And timing: in every `body_timeout_s` the app
        spends waiting for the body, at least `body_min_bytes` of it (or the rest) must arrive, else a 408 — only
        time spent inside `receive()` counts, never the app's own work between reads."""
        seen, got, waited = 0, 0, 0.0
        window_s, minimum = self.svc.settings.body_timeout_s, self.svc.settings.body_min_bytes

        def too_slow() -> Interrupt:
            return Interrupt(refusal(scope, 408, f"the upload arrived too slowly: less than {minimum} bytes in "
                                     f"{window_s:g} s (body_min_bytes per body_timeout_s)", "body",
                                     min_bytes=minimum, window_s=window_s))

        async def counted_receive():
            nonlocal seen, got, waited
            start = time.monotonic()
            try:
                with anyio.fail_after(max(0.0, window_s - waited) if minimum else None):
                    message = await receive()
            except TimeoutError:
                raise too_slow() from None
            waited += time.monotonic() - start
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                got += len(message.get("body", b""))
                if seen > limit:
                    raise Interrupt(refusal(scope, 413, f"the body is larger than {limit} bytes", "body",
                                            limit_bytes=limit))
                if got >= minimum:
                    got, waited = 0, 0.0  # a new window
                elif waited >= window_s and message.get("more_body", False):
                    raise too_slow()
            return message

        await run_interruptible(self.app, scope, counted_receive, send)


def unstorable(body: bytes) -> str | None:
    """What in a JSON body no database can store as text, whatever the content type claimed: a NUL character
    (Postgres refuses it) or a lone surrogate (not encodable as UTF-8). None when clean or not JSON at all (the
    app then names the parse error)."""
    if b"\x00" in body or b"\\u0000" in body:
        return "a NUL character"
    if b"\\u" not in body.lower():
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    try:
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate escape (not a character)"
    return None


class _NonFinite:
    """Where json.loads met NaN, Infinity, -Infinity or a number too large for a float (1e999)."""

    def __init__(self, literal: str):
        self.literal = literal


def nonfinite(body: bytes) -> tuple[str, str] | None:
    """(the field, the literal) of the first non-finite number in a JSON body, whatever its content type claimed:
    Python's json reads NaN / Infinity (not JSON, but what json.dumps writes) and 1e999 as floats, which SQLite
    stores as text and Postgres refuses, so both modes refuse them here alike. The field is the dotted path the
    validation errors use (`policy.rules.0.max`). None when finite or not JSON (the app names the parse error)."""
    if not body.strip():
        return None
    seen: list[str] = []

    def marked(literal: str) -> _NonFinite:
        seen.append(literal)
        return _NonFinite(literal)

    def finite_or_marked(text: str) -> float | _NonFinite:
        value = float(text)
        return value if math.isfinite(value) else marked(text)

    try:
        decoded = json.loads(body, parse_constant=marked, parse_float=finite_or_marked)
    except (ValueError, RecursionError):
        return None
    if not seen:  # the common case: nothing to locate
        return None
    stack: list[tuple[tuple, object]] = [((), decoded)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _NonFinite):
            literal = value.literal if len(value.literal) <= 24 else value.literal[:21] + "..."
            return ".".join(str(p) for p in path) or "body", literal
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(value))))
    return None


def refusal(scope, status: int, detail: str, field: str, headers: dict | None = None, **extra):
    """A problem answered from the edge; the connection closes after it, so the server stops reading a body it
    refused (a client that keeps sending gets a reset, not a sink)."""
    response = problem_response(status, detail, [{"field": field, "reason": detail}], scope.get("path"), **extra)
    response.headers.update({**(headers or {}), "Connection": "close"})
    return response


async def _refuse(scope, receive, send, status: int, detail: str, field: str, headers: dict | None = None, **extra):
    await refusal(scope, status, detail, field, headers, **extra)(scope, receive, send)
