"""Admission control: at most `api_threads` requests are inside the app at once; the others wait their turn on the
event loop, and one that has waited `db_pool_timeout_s` is answered 503 with Retry-After.

Why: a sync route holds its database connection from its first query until its request-scoped session closes, after
the response is sent, and in between it needs the threadpool again (FastAPI validates a sync route's response on
it). With more requests in flight than threads plus connections, every thread can end up waiting for a connection
held by a request that is waiting for a thread, and nothing moves until the pool timeout fails them all (measured
with bench/load.py: 128 clients on a pool of 40 got 503s). Admitting no more requests than there are connections
(api_threads <= db_pool_size + db_max_overflow, checked by Settings) keeps a connection free for every admitted
request; a saturated server still answers quickly, from here.

A slot is taken once the request's body has arrived (at once for a request without one), never while a client
trickles a body in: the edge (outside this layer) has read every small body already, and an upload's arrives
before its route touches the database. So neither slow clients nor a content type can hold or skip a slot.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import anyio
from anyio.lowlevel import RunVar

from editaudit.service.errors import unavailable_response
from editaudit.service.interrupt import Interrupt, run_interruptible

_slots: RunVar[WeakKeyDictionary] = RunVar("editaudit_admission_slots")  # per event loop: app -> its semaphore


def slots_for(app) -> anyio.Semaphore:
    """The app's semaphore on the running event loop (a TestClient runs each of its sessions on a new loop)."""
    try:
        table = _slots.get()
    except LookupError:
        table = WeakKeyDictionary()
        _slots.set(table)
    if app not in table:
        table[app] = anyio.Semaphore(app.state.services.settings.api_threads)
    return table[app]


BODY_IN = "editaudit.body_in"  # set in the scope by the edge once it holds the whole body


def _body_pending(scope) -> bool:
    """Whether the body is still on its way (an upload streaming in): only then is the slot taken at its end."""
    if scope.get(BODY_IN):
        return False
    headers = dict(scope.get("headers") or ())
    return headers.get(b"content-length", b"0") != b"0" or b"chunked" in headers.get(b"transfer-encoding", b"")


class Admission:
    """Pure ASGI: a slot per request from the end of its body until its response has been sent (the session
    closes then)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        app = scope["app"]
        slots, timeout = slots_for(app), app.state.services.settings.db_pool_timeout_s
        held = False

        async def admit() -> None:
            nonlocal held
            try:
                with anyio.fail_after(timeout):
                    await slots.acquire()
                held = True
            except TimeoutError:
                raise Interrupt(unavailable_response("the server is at capacity; retry shortly", scope["path"])) \
                    from None

        async def admitted_receive():
            message = await receive()
            if not held and (message["type"] == "http.disconnect" or not message.get("more_body", False)):
                await admit()  # the whole body is here: from now on the request may use a connection
            return message

        try:
            if not _body_pending(scope):
                try:
                    await admit()
                except Interrupt as e:
                    return await e.response(scope, receive, send)
            await run_interruptible(self.app, scope, admitted_receive, send)
        finally:
            if held:
                slots.release()
