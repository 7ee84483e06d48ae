"""The API's edge, as a pure ASGI layer in front of every route: NUL bytes are refused before anything reaches
the database (Postgres refuses them in text, which would surface as a 500), in the path, the query and JSON bodies.
JSON bodies are small: they are read here (at most MAX_JSON_BYTES) and replayed to the app."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from editaudit.service.errors import problem_response

MAX_JSON_BYTES = 1024 * 1024


class EdgeChecks:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if b"\x00" in unquote_to_bytes(raw_path) or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            return await self._refuse(scope, receive, send, 422, "the URL holds a NUL byte", "url")
        headers = dict(scope.get("headers") or [])
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BYTES:
                return await self._refuse(scope, receive, send, 413,
                                          f"a JSON body is at most {MAX_JSON_BYTES} bytes", "body")
        if b"\x00" in body or b"\\u0000" in body:
            return await self._refuse(scope, receive, send, 422, "the JSON body holds a NUL character", "body")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str, field: str):
        response = problem_response(status, detail, [{"field": field, "reason": detail}], scope.get("path"))
        await response(scope, receive, send)
