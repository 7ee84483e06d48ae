"""The security headers of every console response (pages, errors, the edge's redirects): never cached (they show a
tenant's data), never framed (clickjacking), no script and nothing from another origin (a script injected past the
autoescaping could run nothing), no referrer leaving the site."""

from __future__ import annotations

CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": CSP,
           "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}
PREFIX = "/console"


def console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ConsoleHeaders:
    """Pure ASGI: sets HEADERS on every response to a /console path, replacing what the app set for those names.
    Outside the edge, so its redirects and refusals carry them too."""

    def __init__(self, app):
        self.app = app
        self._names = {name.lower().encode() for name in HEADERS}
        self._headers = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not console_path(scope["path"]):
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers") or () if k.lower() not in self._names]
                message = {**message, "headers": kept + self._headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
