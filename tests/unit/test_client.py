"""The typed client's own behaviour, on a mock transport (no server): problems become ApiError with their fields,
downloads are verified before they land, listings are followed page by page, waiting reports each poll, and the
client package imports neither torch nor the server."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import httpx
import pytest

from editaudit.client import ApiError, ChecksumError, Client

BODY = b"safetensors bytes"


def client_for(handler) -> Client:
    return Client("http://api.test", key="ea_k", http=httpx.Client(base_url="http://api.test",
                                                                  transport=httpx.MockTransport(handler)))


def test_a_problem_becomes_an_api_error_with_its_fields():
    problem = {"type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": "spec.arch: unknown",
               "errors": [{"field": "spec.arch", "reason": "unknown architecture"}], "closest": ["editaudit/smallcnn"]}
    c = client_for(lambda r: httpx.Response(422, json=problem, headers={"content-type": "application/problem+json"}))
    with pytest.raises(ApiError) as e:
        c.get_model("m1")
    assert (e.value.status, e.value.detail, e.value.fields) == (422, "spec.arch: unknown", ["spec.arch"])
    assert e.value.body["closest"] == ["editaudit/smallcnn"] and str(e.value) == "HTTP 422: spec.arch: unknown"


def test_a_non_json_error_keeps_its_text_and_retry_after():
    c = client_for(lambda r: httpx.Response(503, text="<html>bad gateway</html>", headers={"Retry-After": "5"}))
    with pytest.raises(ApiError) as e:
        c.healthz()
    assert e.value.status == 503 and "bad gateway" in e.value.detail and e.value.retry_after == 5.0


@pytest.mark.parametrize("header, error", [(hashlib.sha256(BODY).hexdigest(), None),
                                           ("0" * 64, "does not match"), (None, "sent no")])
def test_downloads_are_verified_before_they_land(tmp_path, header, error):
    headers = {"X-Content-SHA256": header} if header else {}
    c = client_for(lambda r: httpx.Response(200, content=BODY, headers=headers))
    dest = tmp_path / "edited.safetensors"
    if error is None:
        got = c.download_edit_weights("e1", dest)
        assert dest.read_bytes() == BODY and got == {"path": str(dest), "size": len(BODY),
                                                     "sha256": hashlib.sha256(BODY).hexdigest()}
    else:
        with pytest.raises(ChecksumError, match=error):
            c.download_edit_weights("e1", dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if error else ["edited.safetensors"])


def test_a_refused_download_raises_the_problem(tmp_path):
    c = client_for(lambda r: httpx.Response(409, json={"status": 409, "detail": "edit e1 is running",
                                                       "errors": [{"field": "edit_id", "reason": "running"}]}))
    with pytest.raises(ApiError) as e:
        c.download_edit_weights("e1", tmp_path / "w.safetensors")
    assert e.value.status == 409 and e.value.fields == ["edit_id"] and not list(tmp_path.iterdir())


def test_iterators_follow_next_cursor():
    pages = {None: {"items": [{"id": "e3"}, {"id": "e2"}], "next_cursor": "c1"},
             "c1": {"items": [{"id": "e1"}], "next_cursor": None}}
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    assert [e["id"] for e in client_for(answer).iter_edits(status="failed", page_size=2)] == ["e3", "e2", "e1"]
    assert asked == [{"limit": "2", "status": "failed"}, {"limit": "2", "status": "failed", "cursor": "c1"}]


def test_wait_for_edit_reports_every_poll_until_a_final_status():
    states = iter([("queued", None), ("running", {"stage": "editing", "done": 3, "total": 30}),
                   ("succeeded", {"stage": "done", "done": 1, "total": 1})])

    def answer(request: httpx.Request) -> httpx.Response:
        status, progress = next(states)
        return httpx.Response(200, json={"id": "e1", "status": status, "progress": progress})

    seen = []
    edit = client_for(answer).wait_for_edit("e1", poll=0, on_progress=lambda e: seen.append(e["status"]))
    assert edit["status"] == "succeeded" and seen == ["queued", "running", "succeeded"]


def test_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("EDITAUDIT_API_KEY", raising=False)
    monkeypatch.setenv("EDITAUDIT_API_TOKEN", "ea_old_name")
    assert Client("http://x")._t.http.headers["authorization"] == "Bearer ea_old_name"
    monkeypatch.setenv("EDITAUDIT_API_KEY", "ea_new")
    assert Client("http://x")._t.http.headers["authorization"] == "Bearer ea_new"
    monkeypatch.delenv("EDITAUDIT_API_KEY")
    monkeypatch.delenv("EDITAUDIT_API_TOKEN")
    assert "authorization" not in Client("http://x")._t.http.headers


def test_the_client_imports_neither_torch_nor_the_server():
    code = ("import sys, editaudit.client, editaudit.cli.main; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('editaudit.service')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
