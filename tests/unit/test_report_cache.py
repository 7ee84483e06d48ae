"""Rendered reports of a finished audit are kept (the HTML one draws plots: ~1 s each), keyed by the audit and
its finish time; an unfinished audit is rendered every time, and the cache stays bounded."""

from types import SimpleNamespace

from editaudit.service.services import reports


def _audit(i: int, finished: str | None = "2026-11-30T12:00:00+00:00") -> SimpleNamespace:
    """What `rendered` reads of an AuditOut."""
    return SimpleNamespace(id=f"a{i}", status="succeeded" if finished else "running", finished_at=finished)


def test_a_finished_audit_is_rendered_once(monkeypatch):
    calls = []
    monkeypatch.setitem(reports.RENDERERS, "md", lambda a: calls.append(a.id) or f"report {a.id} {len(calls)}")
    first = reports.rendered(_audit(1), "md")
    assert reports.rendered(_audit(1), "md") is first and calls == ["a1"]
    assert reports.rendered(_audit(1, "2026-11-30T13:00:00+00:00"), "md") != first  # finished again: new key
    running = _audit(2, None)
    reports.rendered(running, "md")
    reports.rendered(running, "md")
    assert calls.count("a2") == 2


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setitem(reports.RENDERERS, "md", lambda a: a.id)
    for i in range(reports.CACHED_REPORTS * 2):
        reports.rendered(_audit(1000 + i), "md")
    assert len(reports._rendered) <= reports.CACHED_REPORTS
