"""The connection guard's bookkeeping (editaudit.service.server) without sockets: the cap fits the descriptor limit,
the oldest idle connection is the one evicted, exempt addresses get the headroom, and a burst is a line or two.
The same over real sockets: tests/integration/test_connection_limits.py."""

from __future__ import annotations

import io
import logging

from editaudit.core.settings import Settings
from editaudit.service.server import BurstLog, ConnectionGuard, connection_cap


class Conn:
    """What the guard needs of a connection: its address, and being told to go."""

    def __init__(self, guard: ConnectionGuard, ip: str):
        self.guard, self.ip, self.evicted = guard, ip, False

    def evict(self) -> None:
        self.evicted = True
        self.guard.release(self)  # type: ignore[arg-type]


def guard(**settings) -> ConnectionGuard:
    s = Settings(**settings)
    return ConnectionGuard(s, connection_cap(s.max_connections, 0), logging.getLogger("test.guard"))


def test_the_cap_leaves_descriptors_for_uploads_and_the_rest():
    assert connection_cap(10_000, 1_048_576) == 10_000
    assert connection_cap(10_000, 20_000) == (20_000 - 256) // 2
    assert connection_cap(10_000, 1024) == 384
    assert connection_cap(10_000, 100) == 16  # never below 16
    assert connection_cap(10_000, 0) == 10_000  # no limit known


def test_at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_never_do():
    g = guard(max_connections=16, max_connections_per_ip=0)
    conns = [Conn(g, f"10.0.0.{i}") for i in range(16)]
    assert all(g.admit(c) for c in conns)  # type: ignore[arg-type]
    g.to_busy(conns[0])  # type: ignore[arg-type]  # inside a request: not evictable
    g.to_idle(conns[1])  # type: ignore[arg-type]  # its keep-alive wait starts now: the newest idle one
    newcomer = Conn(g, "10.0.1.1")
    assert g.admit(newcomer)  # type: ignore[arg-type]
    assert conns[2].evicted and not conns[0].evicted and not conns[1].evicted
    assert g.open == 16 and g.counts["evicted"] == 1


def test_with_every_connection_busy_only_exempt_addresses_get_in_up_to_the_headroom():
    g = guard(max_connections=16, max_connections_per_ip=0, connection_headroom=2)
    for i in range(16):
        c = Conn(g, f"10.0.0.{i}")
        assert g.admit(c)  # type: ignore[arg-type]
        g.to_busy(c)  # type: ignore[arg-type]
    assert not g.admit(Conn(g, "10.0.1.1"))  # type: ignore[arg-type]
    for probe in (Conn(g, "127.0.0.1"), Conn(g, "::ffff:127.0.0.1")):
        assert g.admit(probe)  # type: ignore[arg-type]
        g.to_busy(probe)  # type: ignore[arg-type]
    assert not g.admit(Conn(g, "127.0.0.1"))  # type: ignore[arg-type]  # the headroom is spent


def test_one_address_is_capped_and_gets_its_places_back():
    g = guard(max_connections_per_ip=2, connection_exempt_ips=["192.168.0.0/16"])
    a, b = Conn(g, "10.0.0.1"), Conn(g, "10.0.0.1")
    assert g.admit(a) and g.admit(b)  # type: ignore[arg-type]
    assert not g.admit(Conn(g, "10.0.0.1"))  # type: ignore[arg-type]
    assert all(g.admit(Conn(g, "192.168.3.4")) for _ in range(5))  # type: ignore[arg-type]  # an exempt network
    g.release(a)  # type: ignore[arg-type]
    g.release(a)  # type: ignore[arg-type]  # idempotent
    assert g.by_ip["10.0.0.1"] == 1 and g.admit(Conn(g, "10.0.0.1"))  # type: ignore[arg-type]


def test_a_burst_is_one_line_then_one_per_window_with_the_count():
    out = io.StringIO()
    logger = logging.getLogger("test.burst")
    logger.handlers, logger.propagate = [logging.StreamHandler(out)], False
    logger.setLevel(logging.INFO)
    burst = BurstLog(logger, every_s=3600)
    for _ in range(10_000):
        burst.note("refused", logging.WARNING, "refusing")
    assert out.getvalue().splitlines() == ["connections: refusing"]
    burst.flush("refused")  # the window's end
    assert out.getvalue().splitlines()[1].startswith("connections: refusing [9999 times in the last")
