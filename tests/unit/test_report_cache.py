"""Reports of a finished audit are kept (the HTML one draws plots: ~1 s each), keyed by everything they depend on:
a re-run, a policy's new version, another verdict or a withheld one is a new key, never a stale page; nothing of
the request is (no query string or Host header can make an entry); an unfinished audit is never kept, and the
cache stays bounded in entries and in bytes."""

from types import SimpleNamespace

from editaudit.service.services import reports
from editaudit.service.services.reports.view import Gate


def _audit(finished: str | None = "2026-11-30T12:00:00+00:00") -> SimpleNamespace:
    return SimpleNamespace(id="a1", status="succeeded" if finished else "running", finished_at=finished)


def test_the_key_names_what_the_report_depends_on():
    g1, g2 = Gate("pass", "team v1", [], []), Gate("pass", "team v2", [], [])
    key = reports.cache_key(_audit(), g1)
    assert key == reports.cache_key(_audit(), Gate("pass", "team v1", [], []))
    assert key != reports.cache_key(_audit(), g2), "a policy's new version"
    assert key != reports.cache_key(_audit(), Gate("fail", "team v1", [], []))
    assert key != reports.cache_key(_audit(), Gate(None, "team v1", [], [], why="no gate:read")), "withheld"
    assert key != reports.cache_key(_audit("2026-11-30T13:00:00+00:00"), g1), "finished again"
    assert reports.cache_key(_audit(None), g1) is None, "an unfinished audit is rendered each time"


def test_a_kept_value_is_made_once_and_the_cache_is_bounded(monkeypatch):
    calls = []
    first = reports._cached(("t", 1), lambda: calls.append(1) or object())
    assert reports._cached(("t", 1), lambda: calls.append(1) or object()) is first and calls == [1]
    reports._cached(None, lambda: calls.append(2))
    reports._cached(None, lambda: calls.append(2))
    assert calls.count(2) == 2
    for i in range(reports.CACHED * 2):
        reports._cached(("t", 1000 + i), lambda: "")
    assert len(reports._cache) <= reports.CACHED
    monkeypatch.setattr(reports, "CACHED_BYTES", 10_000)
    for i in range(5):
        reports._cached(("big", i), lambda: "x" * 4000)
    assert sum(map(reports._weight, reports._cache.values())) <= 10_000
    assert ("big", 4) in reports._cache
