"""The one way the API is served, in both run modes: uvicorn with the connection-level limits a production server
has (`editaudit serve` runs it on a thread; production runs `python -m editaudit.service.server`).

uvicorn alone gives a connection that never sends its request head all the time it likes, has no cap on
connections in total or per client address, and logs a traceback for every failed `accept()` once file descriptors
run out (issue 22: 19,990 half-open connections took every descriptor, /healthz timed out, 108 MB of log in 40 s).
Here, per connection (`GuardedH11Protocol`, uvicorn's h11 protocol with hooks) and per server (`ConnectionGuard`):

- **Header timeout.** A connection's request head must arrive within `header_timeout_s` of connecting, and of the
  end of its previous response (keep-alive); bytes trickling in do not extend it. Otherwise it is closed.
- **Caps.** At most `max_connections_per_ip` connections from one address (addresses in `connection_exempt_ips`,
  the loopback probe by default, are free of it); more are reset as they arrive, before anything is parsed. At most
  `max_connections` in all, lowered at start to fit the file descriptor limit (whose soft value is first raised to
  the hard one). At the cap a new connection closes the **oldest idle** one — idle: waiting for a request head, new
  or between keep-alive requests — since a connection inside a request is never evicted. A flood of connections
  that send nothing therefore only ever displaces itself: a real client's connection is the newest when it
  arrives and sends its head at once, leaving the idle set. Only when every open connection is inside a request is
  a new one refused, and exempt addresses may still open `connection_headroom` more (the health probe).
- **Bounded log.** Refusals, evictions, timeouts and `accept()` failures (EMFILE: asyncio's handler would log a
  traceback per attempt) are counted and logged once when they start, then once per 10 s with a count.

The body's limits are the edge's (editaudit.service.edge): a JSON body must arrive within `body_timeout_s`, an
upload must bring `body_min_bytes` per `body_timeout_s` spent waiting for it, else 408 — there, inside the app, so
the time the app itself spends between reads never counts against the client. A front proxy should enforce the same
limits as well (docs/operations.md, "Connection limits and the front proxy"); the service survives without one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from editaudit.core.settings import Settings

log = logging.getLogger("editaudit.server")

BURST_LOG_EVERY_S = 10.0
# asyncio accepts up to `backlog` connections each time the listening socket is readable, and everything they
# schedule runs before the loop comes back to the connections already open: with uvicorn's 2048, a connect flood
# made each pass of the loop last a second or more (measured: /healthz on an open keep-alive connection timed out
# at 10 s, bench/flood.py). So the loop takes ACCEPTS_PER_PASS at a time, and the kernel's queue stays deep.
ACCEPTS_PER_PASS = 16
LISTEN_BACKLOG = 2048  # the kernel's queue of connections waiting for accept() (capped by net.core.somaxconn)
FD_RESERVE = 256  # descriptors kept for everything but client sockets: database pool, broker, store, logs, files
LINGER_RESET = struct.pack("ii", 1, 0)
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE / ENFILE / ENOBUFS / ENOMEM


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (what a process may do unprivileged); returns the soft limit
    now in force (0 where there is no such limit)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(max_connections: int, fd_limit: int) -> int:
    """`max_connections`, lowered so that client sockets — each possibly with a spooled upload file beside it — and
    FD_RESERVE other descriptors fit the limit. 16 at the least."""
    if fd_limit <= 0:
        return max_connections
    return max(16, min(max_connections, (fd_limit - FD_RESERVE) // 2))


class BurstLog:
    """One line when a kind of event starts, then at most one line per `every_s` with how many more there were:
    a flood of refusals or failed accepts costs a few lines, not one each."""

    def __init__(self, logger: logging.Logger, every_s: float = BURST_LOG_EVERY_S):
        self.logger, self.every_s = logger, every_s
        self._last: dict[str, float] = {}
        self._pending: dict[str, tuple[int, int, str]] = {}  # kind -> (count, level, last message)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.lines = 0

    def note(self, kind: str, level: int, message: str) -> None:
        now = time.monotonic()
        held = self._pending.get(kind, (0, level, message))[0]
        self._pending[kind] = (held + 1, level, message)
        last = self._last.get(kind)
        if last is None or now - last >= self.every_s:
            self.flush(kind)  # the first of a burst (or a window already over): a line now
        elif kind not in self._timers:  # the first one held back in this window: a line at its end, with the count
            try:
                self._timers[kind] = asyncio.get_running_loop().call_later(last + self.every_s - now, self.flush,
                                                                           kind)
            except RuntimeError:  # no event loop: the next event after the window writes the line
                pass

    def flush(self, kind: str) -> None:
        timer = self._timers.pop(kind, None)
        if timer is not None:  # written before its timer fired (the loop ran late): the timer is not needed
            timer.cancel()
        pending = self._pending.pop(kind, None)
        if pending is None:
            return
        count, level, message = pending
        now = time.monotonic()
        last = self._last.get(kind)
        self._last[kind] = now
        if count > 1 and last is not None:
            message = f"{message} [{count} times in the last {now - last:.0f} s]"
        self._emit(level, message)

    def _emit(self, level: int, message: str) -> None:
        self.lines += 1
        self.logger.log(level, "connections: %s", message)


class ConnectionGuard:
    """One server's connections: which are idle (no request head yet, oldest first) and which inside a request,
    how many each client address holds, and the caps and timeouts they are held to."""

    def __init__(self, settings: Settings, cap: int, logger: logging.Logger = log):
        self.cap, self.per_ip = cap, settings.max_connections_per_ip
        self.headroom = settings.connection_headroom
        self.header_timeout_s = settings.header_timeout_s
        self.exempt_networks = [ipaddress.ip_network(e, strict=False) for e in settings.connection_exempt_ips]
        self.idle: dict[GuardedH11Protocol, None] = {}  # insertion order: the oldest idle connection first
        self.busy: set[GuardedH11Protocol] = set()
        self.by_ip: dict[str | None, int] = {}
        self.counts: dict[str, int] = {}  # events since start, by kind (what tests and benchmarks read)
        self.log = BurstLog(logger)
        self._exempt_cache: dict[str | None, bool] = {}

    @property
    def open(self) -> int:
        return len(self.idle) + len(self.busy)

    def exempt(self, ip: str | None) -> bool:
        hit = self._exempt_cache.get(ip)
        if hit is None:
            try:
                address = ipaddress.ip_address(ip) if ip is not None else None
            except ValueError:
                address = None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            # no address at all (a Unix socket): a local client, exempt
            hit = address is None or any(address in net for net in self.exempt_networks)
            if len(self._exempt_cache) > 65536:  # bounded, whatever addresses connect
                self._exempt_cache.clear()
            self._exempt_cache[ip] = hit
        return hit

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Whether a new connection may stay (it is then counted, idle); at the total cap the oldest idle one is
        closed for it."""
        ip, exempt = conn.ip, self.exempt(conn.ip)
        if not exempt and self.per_ip and self.by_ip.get(ip, 0) >= self.per_ip:
            self.count("refused_per_ip")
            self.log.note("refused_per_ip", logging.WARNING, f"refusing connections from {ip}: it holds "
                          f"{self.per_ip} already (max_connections_per_ip)")
            return False
        if self.open >= self.cap:
            if self.idle:
                oldest = next(iter(self.idle))
                self.count("evicted")
                self.log.note("evicted", logging.WARNING, f"at the cap of {self.cap} connections: closing the "
                              f"oldest idle ones (no request head yet) to admit new ones")
                oldest.evict()
            elif not (exempt and self.open < self.cap + self.headroom):
                self.count("refused_cap")
                self.log.note("refused_cap", logging.WARNING, f"refusing new connections: all {self.open} open "
                              f"ones are inside requests (max_connections {self.cap})")
                return False
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        self.idle[conn] = None
        self.count("admitted")
        return True

    def to_idle(self, conn: GuardedH11Protocol) -> None:
        self.busy.discard(conn)
        self.idle.pop(conn, None)
        self.idle[conn] = None  # now the newest idle one

    def to_busy(self, conn: GuardedH11Protocol) -> None:
        if conn in self.idle:
            del self.idle[conn]
            self.busy.add(conn)

    def release(self, conn: GuardedH11Protocol) -> None:
        """Forget a connection (closed, evicted, or handed to another protocol); idempotent."""
        if conn in self.idle or conn in self.busy:
            self.idle.pop(conn, None)
            self.busy.discard(conn)
            left = self.by_ip.get(conn.ip, 1) - 1
            if left > 0:
                self.by_ip[conn.ip] = left
            else:
                self.by_ip.pop(conn.ip, None)

    def header_timed_out(self, conn: GuardedH11Protocol) -> None:
        self.count("header_timeout")
        self.log.note("header_timeout", logging.INFO, f"closing connections that sent no request head within "
                      f"{self.header_timeout_s:g} s (header_timeout_s)")

    def on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: a failed accept() is counted and logged per burst (asyncio retries
        the listening socket a second later); anything else goes to the default handler."""
        if context.get("message") == ACCEPT_FAILED:
            self.count("accept_failed")
            exc = context.get("exception")
            self.log.note("accept_failed", logging.ERROR, f"accept() failed: {exc or 'out of resources'}; new "
                          f"connections wait in the listen backlog (open: {self.open}, cap {self.cap})")
            return
        loop.default_exception_handler(context)


def reset(transport: asyncio.Transport) -> None:
    """Close with a reset (SO_LINGER 0), not a FIN: the client learns at once, and the kernel keeps nothing of the
    connection (no FIN_WAIT, no TIME_WAIT) — what a refusal or an eviction under a flood should cost."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
    transport.abort()


def _client_ip(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol held to its server's ConnectionGuard. `guard` is set on a per-server subclass."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ip: str | None = None
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.ip = _client_ip(transport)
        if not self.guard.admit(self):
            reset(transport)  # nothing parsed, nothing kept
            return
        self._counted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made: uvicorn never saw it
            return
        self._release()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self._counted:  # a request head arrived: no longer idle
            self._cancel_header_timer()
            self.guard.to_busy(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._counted and not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.guard.to_idle(self)  # keep-alive: waiting for the next head, under the same timeout
            self._arm_header_timer()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._release()  # the websocket protocol takes the transport over (the edge closes it at once)
        super().handle_websocket_upgrade(event)

    def evict(self) -> None:
        """Closed to make room for a new connection (at the total cap, oldest idle first)."""
        self._release()
        reset(self.transport)

    def _release(self) -> None:
        self._cancel_header_timer()
        if self._counted:
            self._counted = False
            self.guard.release(self)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.guard.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        self.guard.header_timed_out(self)
        self._release()
        self.transport.close()


class GuardedServer(uvicorn.Server):
    """uvicorn's server with the guard's handler for failed accepts on its event loop."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard):
        super().__init__(config)
        self.guard = guard

    async def serve(self, sockets: Any = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self.guard.on_loop_exception)
        await super().serve(sockets)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", ()):
            for listener in server.sockets or ():  # uvicorn listened with ACCEPTS_PER_PASS: deepen the queue
                with socket.fromfd(listener.fileno(), listener.family, listener.type) as dup:
                    dup.listen(LISTEN_BACKLOG)


def _text_log_handler(level: str) -> None:
    """In text mode, this module's lines go where uvicorn's do (stderr, uvicorn's format); in JSON mode
    editaudit.core.logs sends every logger to the root's JSON handler."""
    if log.handlers:
        return
    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


def make_server(app: Callable[..., Any], settings: Settings, host: str = "127.0.0.1", port: int = 8000, *,
                log_level: str = "info", access_log: bool = True, proxy_headers: bool = True,
                forwarded_allow_ips: str | None = None, fd_limit: int | None = None) -> GuardedServer:
    """A uvicorn server for `app` held to `settings`' connection limits (run it with `.run()`, on a thread if
    need be). The file descriptor limit is raised first and the connection cap sized below it."""
    fd_limit = raise_fd_limit() if fd_limit is None else fd_limit
    cap = connection_cap(settings.max_connections, fd_limit)
    if settings.log_format == "text":
        _text_log_handler(log_level)
    if cap < settings.max_connections:
        log.warning("connections: max_connections lowered from %d to %d to fit the file descriptor limit (%d); "
                    "raise `ulimit -n` (the hard limit) for more", settings.max_connections, cap, fd_limit)
    guard = ConnectionGuard(settings, cap)
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})
    config = uvicorn.Config(app, host=host, port=port, http=protocol, log_level=log_level, access_log=access_log,
                            proxy_headers=proxy_headers, forwarded_allow_ips=forwarded_allow_ips,
                            backlog=ACCEPTS_PER_PASS,  # accepts per loop pass; the listen queue is deepened after
                            # idle keep-alive connections close after 5 s, as uvicorn's default, or sooner
                            timeout_keep_alive=min(5, max(1, int(settings.header_timeout_s))))
    log.info("connections: at most %d at once, %s per address, request heads within %g s (file descriptor "
             "limit %d)", cap, settings.max_connections_per_ip or "no cap", settings.header_timeout_s, fd_limit)
    return GuardedServer(config, guard)


def serve(app: Callable[..., Any], settings: Settings, host: str = "127.0.0.1", port: int = 8000,
          **options: Any) -> None:
    """Serve `app` until SIGINT / SIGTERM (see make_server for the options)."""
    make_server(app, settings, host, port, **options).run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m editaudit.service.server",
                                description="Serve the API (production: settings from EDITAUDIT_* variables) with "
                                            "connection-level limits (docs/operations.md).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--proxy-headers", action=argparse.BooleanOptionalAction, default=True,
                   help="take the client address and scheme from X-Forwarded-* sent by --forwarded-allow-ips "
                        "(uvicorn's option; the connection caps always count the TCP peer)")
    p.add_argument("--forwarded-allow-ips", default=None,
                   help="proxies trusted for X-Forwarded-* (default: $FORWARDED_ALLOW_IPS or 127.0.0.1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug", "trace"])
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from editaudit.core.settings import get_settings
    from editaudit.service.app import create_app

    settings = get_settings()
    app = create_app(settings)
    # this process serves one app for its lifetime: what start-up built (~150k objects) leaves the cyclic
    # collector's scans, whose full passes (~50 ms each) would otherwise land on requests under load
    gc.collect()
    gc.freeze()
    serve(app, settings, args.host, args.port, log_level=args.log_level, access_log=args.access_log,
          proxy_headers=args.proxy_headers, forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
