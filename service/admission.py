"""Admission control: at most `api_threads` requests are inside the app at once; the others wait their turn on the
event loop, and one that has waited `db_pool_timeout_s` is answered 503 with Retry-After.

Why: a sync route holds its database connection from its first query until its request-scoped session closes, after
the response is sent, and in between it needs the threadpool again (FastAPI validates a sync route's response on
it). With more requests in flight than threads plus connections, every thread can end up waiting for a connection
held by a request that is waiting for a thread, and nothing moves until the pool timeout fails them all (measured
with bench/load.py: 128 clients on a pool of 40 got 503s). Admitting no more requests than there are connections
(api_threads <= db_pool_size + db_max_overflow, checked by Settings) keeps a connection free for every admitted
request; a saturated server still answers quickly, from here.

Uploads (multipart bodies) are not counted: their bodies can take minutes to arrive and hold no connection meanwhile.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import anyio
from anyio.lowlevel import RunVar

from editaudit.service.errors import unavailable_response

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


class Admission:
    """Pure ASGI: a slot per request, held until the response has been sent (the session closes then)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or dict(scope.get("headers") or ()).get(b"content-type", b"").startswith(
                b"multipart/"):
            return await self.app(scope, receive, send)
        app = scope["app"]
        slots = slots_for(app)
        try:
            with anyio.fail_after(app.state.services.settings.db_pool_timeout_s):
                await slots.acquire()
        except TimeoutError:
            response = unavailable_response("the server is at capacity; retry shortly", scope["path"])
            return await response(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()
