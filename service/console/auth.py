"""The web console's sign-in: the API key in an HttpOnly, SameSite=Strict cookie scoped to /console, read by the
edge (editaudit.service.edge) on console pages only and authenticated there exactly as a bearer token. What keeps
it safe: the pages it authenticates only read (editaudit.service.openapi.check_routes), sign-in and sign-out refuse
a cross-site request (login CSRF), and `next` only ever leads back into the console (no open redirect)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from editaudit.core import db, keys
from editaudit.service.deps import Services

COOKIE = "editaudit_console"
COOKIE_PATH = "/console"
MAX_AGE_S = 8 * 3600
HOME = "/console/"
LOGIN = "/console/login"
# what `next` may be: a path under /console/ of plain characters (no scheme, no host, no backslash, no `//`)
NEXT_RE = re.compile(r"/console/(?!/)[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


def cookie_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in the console's cookie, or None when there is none, or more than one: which would count would be
    up to whoever parses them, and a second one is what a sibling domain tossing its own cookie looks like."""
    found = []
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key.strip() == COOKIE:
                found.append(unquote(val.strip().strip('"')))
    return found[0] if len(found) == 1 and found[0] else None


def login_redirect(scope) -> RedirectResponse:
    """303 to the sign-in page, which leads back to the page asked for once signed in."""
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return RedirectResponse(f"{LOGIN}?next={quote(target, safe='/')}", status_code=303,
                            headers={"Cache-Control": "no-store"})


def safe_next(target: str | None) -> str:
    """Where to go after signing in: `target` when it is a path inside the console, else the console's home (an
    absolute URL, `//host`, `/\\host`, a `..` segment or a path elsewhere would lead off the console)."""
    if not target or "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return HOME
    path = unquote(target.split("?", 1)[0])
    if not NEXT_RE.fullmatch(target) or "//" in path or "\\" in path or \
            any(segment in (".", "..") for segment in path.split("/")):
        return HOME
    return target


def cross_site(request: Request) -> str | None:
    """Why a sign-in or sign-out POST did not come from the console's own page, or None when it did: a browser
    names the page's origin (`Origin`) and the kind of request (`Sec-Fetch-Site`) on every form POST."""
    fetch = request.headers.get("sec-fetch-site")
    if fetch is not None and fetch.lower() not in SAME_SITE_FETCHES:
        return f"Sec-Fetch-Site is {fetch!r}"
    origin = request.headers.get("origin")
    if origin is None:
        return None  # not a browser's cross-site form (a browser sends Origin on every POST it makes)
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    if origin == "null" or parts.scheme not in DEFAULT_PORTS or _netloc(parts.scheme, parts.netloc) != \
            _netloc(parts.scheme, host):
        return f"Origin {origin!r} is not this server ({host!r})"
    return None


def _netloc(scheme: str, netloc: str) -> str:
    """host[:port] lower-cased, the scheme's default port dropped (`Origin` omits it; `Host` may not)."""
    netloc = netloc.lower()
    return netloc.removesuffix(f":{DEFAULT_PORTS.get(scheme, '')}")


def principal_for_token(svc: Services, token: str, why: str) -> keys.Principal | None:
    """The principal of an API key: the bootstrap key's, or a stored key's (`why`: the unscoped session's
    reason). The edge's lookup (it caches it) and the sign-in's (uncached: a sign-in is rare)."""
    found = keys.bootstrap_principal(svc.settings.api_token, token)
    if found is not None:
        return found
    with db.unscoped_session(svc.sessions, why) as s:
        return keys.principal_for(s, token)


def set_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, quote(token, safe=""), max_age=MAX_AGE_S, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
