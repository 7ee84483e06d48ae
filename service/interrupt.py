"""Ending a request from inside its body: a middleware's wrapped `receive` raises `Interrupt(response)` (a body over
its limit, a request the server has no room for), and `run_interruptible` answers with that response instead of
whatever the app makes of the failed read (FastAPI turns any error while parsing a body into a 400)."""

from __future__ import annotations

from starlette.responses import Response


class Interrupt(Exception):
    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


async def run_interruptible(app, scope, receive, send) -> None:
    """Run `app` with `receive` (which may raise Interrupt); on an interrupt the app's answer is dropped and the
    interrupt's response sent, unless the app had already started answering."""
    interrupted: Interrupt | None = None
    started = False

    async def noting_receive():
        nonlocal interrupted
        try:
            return await receive()
        except Interrupt as e:
            interrupted = e
            raise

    async def guarded_send(message):
        nonlocal started
        if interrupted is not None and not started:
            return
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, noting_receive, guarded_send)
    except Interrupt:
        pass
    if interrupted is not None and not started:
        await interrupted.response(scope, receive, send)
