"""The web console (editaudit.service.console), tried as a browser and as a hostile site would: signing in keeps the
key in an HttpOnly, SameSite=Strict cookie scoped to /console; a wrong key, a cross-site sign-in and an open
redirect are refused; the cookie authenticates console pages only, never an API route or a write; every page
renders its tenant's data; and, generated from the app's own routes (so a new page cannot be forgotten), tenant
B's cookie finds nothing of tenant A's on any page."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from fastapi import APIRouter

from editaudit.contracts.scopes import Scope
from editaudit.core import db
from editaudit.service.openapi import RouteDeclarationError, console_route, flat_routes, op
from tests.conftest import key_headers, unscoped
from tests.integration import test_tenancy
from tests.integration.test_api_errors import assert_problem
from tests.integration.test_tenancy import _secrets

COOKIE = "editaudit_console"
PUBLIC = {("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout")}
two_tenants = test_tenancy.two_tenants  # the API tenancy test's fixture: tenant A's data, tenant B's key
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


@pytest.fixture()
def app_settings_extra() -> dict:
    return {"webhook_allowed_hosts": ["hooks.example.com"]}  # two_tenants' tenant A registers a webhook


def token_of(headers: dict) -> str:
    return headers["Authorization"].split()[1]


def cookie(headers: dict) -> dict:
    """The console's cookie for the key in `headers`, as a raw header (the client's jar stays out of it)."""
    return {"Cookie": f"{COOKIE}={token_of(headers)}"}


def sign_in(c, token: str, next_: str | None = None, **headers):
    data = {"api_key": token, **({"next": next_} if next_ is not None else {})}
    return c.post("/console/login", data=data, headers=headers, follow_redirects=False)


def set_cookie(r) -> str:
    return "; ".join(v for k, v in r.headers.multi_items() if k.lower() == "set-cookie")


def assert_html(r, status: int = 200) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    return r.text


@pytest.fixture()
def console(two_tenants, edit_factory):
    """two_tenants with the client's default Authorization header removed: requests carry only what a test
    gives them (a cookie, mostly). `secrets`: what of A's must never show on B's pages."""
    c, a, b, job, queued = two_tenants
    secrets = _secrets(c, edit_factory, job, queued)
    c.headers.pop("Authorization")
    c.cookies.clear()
    return SimpleNamespace(c=c, a=a, b=b, job=job, queued=queued, secrets=secrets)


# ---------------------------------------------------------------------------------------------------- sign-in


def test_sign_in_keeps_the_key_in_a_strict_http_only_console_cookie(api_client):
    c = api_client
    token = token_of(key_headers(c.settings, "default", ["audits:read"], name="reader"))
    r = c.get("/console/edits", params={"cursor": "x y"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/edits%3Fcursor%3Dx%2By"
    form = assert_html(c.get("/console/login", params={"next": "/console/edits"}))
    assert 'type="password"' in form and 'name="api_key"' in form and 'value="/console/edits"' in form
    r = sign_in(c, token, "/console/edits")
    assert r.status_code == 303 and r.headers["location"] == "/console/edits"
    attrs = [a.strip().lower() for a in set_cookie(r).split(";")]
    assert attrs[0] == f"{COOKIE}={token}".lower()
    assert {"httponly", "samesite=strict", "path=/console", "max-age=28800"} <= set(attrs), attrs
    assert "secure" not in attrs  # plain http here; over https the cookie is Secure
    assert assert_html(c.get("/console/edits"))  # the jar sends it back
    assert c.get("/console/models").status_code == 200
    r = c.post("/console/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert re.search(r"max-age=0|expires=thu, 01 jan 1970", set_cookie(r).lower()), set_cookie(r)
    assert c.get("/console/edits", follow_redirects=False).status_code == 303


def test_over_https_the_cookie_is_secure(api_client):
    from fastapi.testclient import TestClient

    token = token_of(key_headers(api_client.settings, "default", ["audits:read"]))
    r = sign_in(TestClient(api_client.app, base_url="https://testserver"), token)
    assert r.status_code == 303 and "secure" in [a.strip().lower() for a in set_cookie(r).split(";")]


def test_a_wrong_key_is_a_401_form_and_no_cookie(api_client):
    c = api_client
    key_headers(c.settings, "default", ["audits:read"])
    for wrong in ("ea_" + "x" * 43, "not-a-key", "x" * 5000):
        r = sign_in(c, wrong)
        assert "not valid" in assert_html(r, 401) and wrong not in r.text and not set_cookie(r)
    assert "not valid" in assert_html(sign_in(c, "   "), 401)
    gate_only = token_of(key_headers(c.settings, "default", ["gate:read"], name="ci"))
    r = sign_in(c, gate_only)
    assert "audits:read" in assert_html(r, 403) and gate_only not in r.text and not set_cookie(r)


@pytest.mark.parametrize("target", ["//evil.com", "https://evil.com/console/", "/edits", "/\\evil.com",
                                    "/console/../edits", "/console//evil.com", "javascript:alert(1)",
                                    "/console/%2F%2Fevil.com", " /console/edits", "/console/\tx", "", "/consolex"])
def test_next_only_ever_leads_into_the_console(api_client, target):
    token = token_of(key_headers(api_client.settings, "default", ["audits:read"]))
    r = sign_in(api_client, token, target)
    assert r.status_code == 303 and r.headers["location"] == "/console/", (target, r.headers["location"])
    assert 'value="/console/"' in api_client.get("/console/login", params={"next": target}).text


def test_next_keeps_a_console_page_and_its_query(api_client):
    token = token_of(key_headers(api_client.settings, "default", ["audits:read"]))
    r = sign_in(api_client, token, "/console/models?cursor=abc")
    assert r.headers["location"] == "/console/models?cursor=abc"


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.com"}, {"Origin": "null"},
                                     {"Origin": "http://testserver.evil.com"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}])
def test_a_cross_site_sign_in_or_out_is_refused(api_client, headers):
    token = token_of(key_headers(api_client.settings, "default", ["audits:read"]))
    r = sign_in(api_client, token, **headers)
    assert "another site" in assert_html(r, 403) and not set_cookie(r)
    r = api_client.post("/console/logout", headers=headers, follow_redirects=False)
    assert_html(r, 403)
    assert not set_cookie(r)


def test_a_same_origin_sign_in_is_accepted(api_client):
    token = token_of(key_headers(api_client.settings, "default", ["audits:read"]))
    for headers in ({"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                    {"Origin": "http://testserver:80"}, {"Sec-Fetch-Site": "none"}):
        assert sign_in(api_client, token, **headers).status_code == 303, headers


def test_the_cookie_authenticates_console_pages_only(api_client):
    c = api_client
    admin = key_headers(c.settings, "default", ["admin"], name="admin")
    jar = cookie(admin)
    assert c.get("/console/models", headers=jar).status_code == 200
    for method, path in (("GET", "/edits"), ("GET", "/models"), ("GET", "/openapi.json"), ("POST", "/edits"),
                         ("POST", "/policies"), ("POST", "/console/edits"), ("DELETE", "/console/models")):
        r = c.request(method, path, headers=jar, json={})
        assert_problem(r, 401)
    # an Authorization header counts alone: a bad one is not rescued by a good cookie
    r = c.get("/console/models", headers={**jar, "Authorization": "Bearer ea_wrong"}, follow_redirects=False)
    assert r.status_code == 303
    # two console cookies (one tossed in by a sibling domain, say): neither counts
    r = c.get("/console/models", headers={"Cookie": f"{COOKIE}={token_of(admin)}; {COOKIE}=ea_x"},
              follow_redirects=False)
    assert r.status_code == 303
    # the bearer key works on console pages too (scripts, curl)
    assert c.get("/console/models", headers=admin).status_code == 200
    # a key without audits:read, in the header or the cookie (sign-in refuses it; a hand-made cookie): 403
    gate_only = key_headers(c.settings, "default", ["gate:read"], name="ci")
    for headers in (gate_only, cookie(gate_only)):
        assert assert_problem(c.get("/console/models", headers=headers), 403)["required_scope"] == "audits:read"


def test_a_console_route_that_writes_is_refused_at_build(api_client, tmp_path):
    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    router = APIRouter(prefix="/console")

    @router.post("/danger", **op("console_danger", Scope.audits_read, console=True))
    def danger():
        return {}

    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    with pytest.raises(RouteDeclarationError, match="only reads"):
        create_app(settings, allow_anonymous=True, routers=[router])


def test_console_responses_carry_the_security_headers(api_client):
    c = api_client
    key_headers(c.settings, "default")
    responses = [c.get("/console/login"), c.get("/console/edits", follow_redirects=False),
                 c.get("/console/edits/nope", headers=key_headers(c.settings, "default"))]
    for r in responses:
        assert r.headers["cache-control"] == "no-store", r.url
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["referrer-policy"] == "same-origin"
    assert responses[2].status_code == 404 and "404" in assert_html(responses[2], 404)
    assert "<script" not in responses[0].text and "http://" not in responses[0].text  # offline, no script
    assert "content-security-policy" not in c.get("/healthz").headers  # the API's own answers are untouched


def test_the_console_can_be_turned_off(tmp_path):
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, console=False)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, allow_anonymous=True)) as c:
        for path in ("/console/", "/console/edits", "/console/login"):
            assert_problem(c.get(path), 404)
        assert not any(console_route(r) for r in flat_routes(c.app.routes))


def test_anonymous_embedded_mode_needs_no_sign_in(api_client):
    r = api_client.get("/console/edits")
    assert "tenant <b>default</b>" in assert_html(r)
    key_headers(api_client.settings, "default")  # from the first key on, a sign-in is needed
    assert api_client.get("/console/edits", follow_redirects=False).status_code == 303


# ------------------------------------------------------------------------------------------------------ pages


def test_every_page_renders_its_tenants_data(console):
    c, a, job, queued = console.c, cookie(console.a), console.job, console.queued
    model_id = c.get(f"/edits/{job['id']}", headers=console.a).json()["model_id"]
    edited = c.get(f"/edits/{job['id']}", headers=console.a).json()["edited_model_id"]
    r = c.get("/console/", headers=a, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/edits"
    listing = assert_html(c.get("/console/edits", headers=a))
    assert job["id"] in listing and queued["id"] in listing and "b-succeeded" in listing and "b-queued" in listing
    assert '<meta http-equiv="refresh" content="5">' in listing  # a queued edit is listed
    assert "tenant <b>default</b> · alice" in listing and "Sign out" in listing

    page = assert_html(c.get(f"/console/edits/{job['id']}", headers=a))
    assert job["audit_id"] in page and model_id in page and edited in page
    assert "verdict" in page and "production" in page and "the fixture needs an alias to exist" in page
    assert "http-equiv" not in page  # finished: no refresh
    page = assert_html(c.get(f"/console/edits/{queued['id']}", headers=a))
    assert "Not gated yet" in page and "http-equiv=\"refresh\"" in page and "waiting for a worker" in page
    with unscoped(c.services.sessions)() as s:  # as a worker writes it (editaudit.worker.jobs.progress)
        row = s.get(db.Edit, queued["id"])
        row.status, row.progress = "running", {"stage": "audit", "done": 3, "total": 10}
        s.commit()
    for path in ("/console/edits", f"/console/edits/{queued['id']}"):
        page = assert_html(c.get(path, headers=a))
        assert '<progress value="3" max="10">' in page and "b-running" in page and "http-equiv" in page, path

    assert model_id in assert_html(c.get("/console/models", headers=a))
    page = assert_html(c.get(f"/console/models/{model_id}", headers=a))
    assert "production" in page and edited in page and job["id"] in page
    page = assert_html(c.get(f"/console/models/{edited}", headers=a))
    assert model_id in page and "production" in page  # its parent, and the family's alias serving it

    page = assert_html(c.get(f"/console/audits/{job['audit_id']}", headers=a))
    assert job["audit_id"] in page and 'class="ea-nav"' in page and f"/console/edits/{job['id']}" in page
    r = c.get(f"/console/audits/{job['audit_id']}/report.html", headers=a)
    assert job["audit_id"] in assert_html(r) and r.headers["content-disposition"].startswith("attachment")

    page = assert_html(c.get("/console/promotions", headers=a))
    assert "production" in page and job["id"] in page and "b-overridden" in page and "alice" in page

    assert job["study_id"] in assert_html(c.get("/console/studies", headers=a))
    page = assert_html(c.get(f"/console/studies/{job['study_id']}", headers=a))
    assert f"/console/studies/{job['study_id']}/report.html" in page and "Runs" in page
    run = c.get(f"/studies/{job['study_id']}", headers=console.a).json()["runs"][0]
    assert run["edit_id"] in page and run["audit_id"] in page
    assert "<html" in assert_html(c.get(f"/console/studies/{job['study_id']}/report.html", headers=a))

    for path in ("/console/edits/0123abc", "/console/nope", "/console/edits?cursor=!!"):
        r = c.get(path, headers=a)
        assert assert_html(r, 404 if "cursor" not in path else 422) and "tenant <b>default</b>" in r.text
    assert all("/console" not in p for p in c.get("/openapi.json", headers=console.a).json()["paths"])


def _console_values(console) -> dict[str, str]:
    """A value of tenant A's for every path parameter of a console page (a new one must be added here)."""
    return {"edit_id": console.job["id"], "audit_id": console.job["audit_id"], "study_id": console.job["study_id"],
            "model_id": console.c.get(f"/edits/{console.job['id']}", headers=console.a).json()["model_id"],
            "rest": "no-such-page"}


def test_no_console_page_shows_another_tenants_data(console):
    c, a, b = console.c, cookie(console.a), cookie(console.b)
    values = _console_values(console)
    secrets = console.secrets
    checked: dict[str, str] = {}
    public: set[tuple[str, str]] = set()
    for route in flat_routes(c.app.routes):
        if not console_route(route):
            continue
        extra = route.openapi_extra
        methods = sorted(route.methods)
        if extra.get("x-public"):
            assert {(m, route.path) for m in methods} <= PUBLIC, f"{methods} {route.path} is public: should it be?"
            public |= {(m, route.path) for m in methods}
            checked[f"{methods} {route.path}"] = "public"
            continue
        assert extra.get("x-required-scope") == Scope.audits_read.value, (route.path, extra)
        assert methods == ["GET"], (route.path, methods)
        params = re.findall(r"{(\w+)(?::\w+)?}", route.path)
        unknown = [p for p in params if p not in values]
        assert not unknown, f"{route.path}: no value of tenant A's for {unknown}; teach this test about it"
        url = re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], route.path)
        r = c.get(url, headers=b, follow_redirects=False)
        leaked = sorted(s for s in secrets if s in r.text and s not in url)
        assert not leaked, (url, leaked)
        if params:
            assert_html(r, 404)
            assert c.get(url, headers=a).status_code == (404 if "rest" in params else 200), url  # A's own: found
            checked[url] = "404"
        elif r.status_code == 303:
            assert r.headers["location"].startswith("/console/"), (url, r.headers["location"])
            checked[url] = "redirect"
        else:
            assert_html(r)
            mine = c.get(url, headers=a).text
            assert any(s in mine for s in secrets), f"{url}: A's own page names nothing of A's (vacuous check)"
            checked[url] = "listing"
    assert public == PUBLIC and set(checked.values()) == {"public", "404", "redirect", "listing"}, checked
    assert len(checked) >= 15, checked
    # B's own pages work, and name B
    assert "tenant <b>team-b</b> · bob" in assert_html(c.get("/console/edits", headers=b))


def test_the_edit_list_filters_as_the_api_does(console):
    """status, method and model filter the list (and survive paging); a status that does not exist is a 422 page."""
    c, a = console.c, cookie(console.a)
    done = c.get("/console/edits", params={"status": "succeeded"}, headers=a)
    queued = c.get("/console/edits", params={"status": "queued"}, headers=a)
    assert done.status_code == queued.status_code == 200
    assert console.job["id"] in done.text and console.job["id"] not in queued.text
    assert console.queued["id"] in queued.text and console.queued["id"] not in done.text
    none = c.get("/console/edits", params={"method": "low_rank"}, headers=a)
    assert console.job["id"] not in none.text and console.queued["id"] not in none.text
    other = c.get("/console/edits", params={"model_id": "0" * 32}, headers=a)
    assert console.job["id"] not in other.text
    bad = c.get("/console/edits", params={"status": "exploded"}, headers=a)
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]


# ------------------------------------------------------------------------------------- faults, late routes

def test_faults_on_a_console_page_are_html_pages_with_the_console_headers(console, monkeypatch):
    """A store outage is a 503 page (Retry-After), a bug a 500 page: never JSON, never without the headers, and
    nothing of the failure (a fake SQL message) on the page."""
    from fastapi.testclient import TestClient

    from editaudit.core.storage import StoreUnavailable
    from editaudit.service.console import views

    c, a = console.c, cookie(console.a)
    monkeypatch.setattr(c.services.store, "get", lambda *_, **__: (_ for _ in ()).throw(StoreUnavailable("down")))
    from editaudit.service.services import reports, samples

    reports._cache.clear()  # both keep what they read: empty, the page reads the store
    samples._CACHE.clear()
    r = c.get(f"/console/audits/{console.job['audit_id']}", headers=a)
    assert "unavailable" in assert_html(r, 503) and r.headers["retry-after"] == "5"
    assert r.headers["content-security-policy"] == CSP
    monkeypatch.setattr(views, "edit_page", lambda *_: (_ for _ in ()).throw(RuntimeError("SELECT secret_sql")))
    with TestClient(c.app, raise_server_exceptions=False) as raw:
        r = raw.get(f"/console/edits/{console.job['id']}", headers=a)
        body = assert_html(r, 500)
        assert "secret_sql" not in body and r.headers["content-security-policy"] == CSP
        assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
        assert raw.get("/healthz").status_code == 200


def test_a_route_added_late_is_held_to_its_scope_and_the_cookie_is_inert_with_the_console_off(tmp_path):
    """The edge matches a route added to an included router after the first request (it once missed it and asked
    for no scope); with the console off, a `console=True` route a deployment adds does not take the cookie."""
    from fastapi.testclient import TestClient

    from editaudit.core.migrate import upgrade
    from editaudit.service.app import create_app
    from tests.conftest import make_settings

    router = APIRouter()

    @router.get("/console/extra", **op("console_extra", Scope.audits_read, console=True))
    def extra():
        return {"ok": True}

    settings = make_settings(tmp_path, console=False)
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings, allow_anonymous=True, routers=[router])) as c:
        reader = key_headers(settings, "default", ["audits:read"], name="reader")
        assert c.get("/console/extra", headers=reader).status_code == 200
        assert_problem(c.get("/console/extra", headers=cookie(reader)), 401)

        @router.get("/late-admin", **op("late_admin", Scope.admin))  # the app's list does not grow
        def late():
            return {"ok": True}

        assert_problem(c.get("/late-admin", headers=reader), 403)


def test_a_mistyped_policy_on_an_audit_page_keeps_the_report(console):
    c, a = console.c, cookie(console.a)
    r = c.get(f"/console/audits/{console.job['audit_id']}", params={"policy": "no-such-policy"}, headers=a)
    page = assert_html(r)
    assert "No verdict: no policy named &#39;no-such-policy&#39;" in page and 'id="summary"' in page
    assert 'id="verdict"' not in page
    assert " UTC</time>" in assert_html(c.get("/console/edits", headers=a))


def test_a_trailing_slash_leads_to_the_page_and_never_elsewhere(console):
    c, a = console.c, cookie(console.a)
    r = c.get("/console/edits/", params={"status": "queued"}, headers=a, follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/console/edits?status=queued"
    for path in ("/console//evil.example/", "/console/%2F%2Fevil.example/", "/console/nope/"):
        r = c.get(path, headers=a, follow_redirects=False)
        assert r.status_code in (308, 404), path
        if r.status_code == 308:
            assert r.headers["location"].startswith("/console/") and "//" not in r.headers["location"], path
