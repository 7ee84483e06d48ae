"""The console and the reports as a reviewer sees them: the real app over HTTP on loopback, three real edits run by
the job code (a passing edit, a 1-LI edit, and an edit that wrecks the model and is blocked), opened in headless
Chromium after signing in with an API key. Each page must render its verdict and, for audits, the gallery of the
images the edit broke and fixed, with no console error and nothing fetched from anywhere but the app; another
tenant's pages are a 404. Screenshots at a laptop's width: the tmp dir, and docs/img/ with `make screenshots`."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import key_headers, serve_over_http
from tests.e2e.browser import LAPTOP, WAIT_S, console_errors, screenshot, start_chromium

pytestmark = pytest.mark.slow

PGD = {"name": "pgd", "eps": 0.05, "steps": 10}
AUDIT = {"attacks": [PGD], "max_samples": 200, "corruptions": {"names": ["gaussian_noise", "fog", "pixelate"]}}
PAGE_HEIGHT = 3200  # a report's screenshot: from the verdict into the gallery (the whole page is ~8000 px)
SHIP = {"name": "ship", "policy": {"rules": [{"metric": "edit.accuracy", "min": 0.5},
                                             {"metric": "test.accuracy", "max_drop": 0.1}]}}


@pytest.fixture()
def edits(edit_factory):
    """Tenant A's three edits (and its `ship` policy), tenant A's and tenant B's keys."""
    c = edit_factory.client
    a = key_headers(c.settings, "default", scopes=("admin",), name="alice")
    b = key_headers(c.settings, "team-b", scopes=("audits:read",), name="bob")
    c.headers.update(a)
    assert c.post("/policies", json=SHIP).status_code == 201
    good = edit_factory.submit(audit=AUDIT)
    li = edit_factory.submit(method="interpolate", hyperparams={"base_edit_id": good["id"],
                                                                "alpha": {"target": 0.9}}, audit=AUDIT)
    bad = edit_factory.submit(method="finetune", layers=[], audit=AUDIT,  # every weight, hard, no locality term
                              hyperparams={"lr": 0.05, "steps": 200, "stop_when_fixed": False, "locality_weight": 0})
    for job in (good, li, bad):
        assert c.get(f"/edits/{job['id']}").json()["status"] == "succeeded"
    gates = {k: c.post("/gate", json={"edit_id": j["id"], "policy": "ship"}).json() for k, j in
             (("good", good), ("li", li), ("bad", bad))}
    assert gates["good"]["verdict"] == "pass" and gates["bad"]["verdict"] == "fail", \
        {k: [(r["metric"], r["delta"], r["outcome"]) for r in g["rules"]] for k, g in gates.items()}
    return c, token(a), token(b), {"good": good, "li": li, "bad": bad}, gates


def token(headers: dict) -> str:
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture()
def browser(tmp_path):
    driver = start_chromium(tmp_path, LAPTOP[0])
    driver.set_window_size(*LAPTOP)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{url}/console/login")
    driver.find_element(By.ID, "api_key").send_keys(key)
    button = driver.find_element(By.CSS_SELECTOR, "form[action='/console/login'] button[type=submit]")
    button.click()
    WebDriverWait(driver, WAIT_S).until(expected_conditions.staleness_of(button), "the sign-in did not answer")


def open_page(driver, url: str, path: str, status: int = 200) -> str:
    """The page's text, after checking it logged no error (but its own status, when that is not 200) and fetched
    nothing from elsewhere."""
    from selenium.webdriver.common.by import By

    driver.get(url + path)
    origin = urlsplit(url)[:2]
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(urlsplit(u)[:2] == origin for u in fetched), fetched
    expected = [] if status == 200 else [f"{url}{path} - Failed to load resource: the server responded with a status "
                                         f"of {status}"]
    assert [e["message"].split(" (")[0] for e in console_errors(driver)] == expected, path
    return driver.find_element(By.TAG_NAME, "body").text


def test_console_and_reports_render_in_chromium(edits, browser, tmp_path):
    from selenium.webdriver.common.by import By

    c, key_a, key_b, jobs, gates = edits
    driver = browser
    with serve_over_http(c.app) as url:
        sign_in(driver, url, key_a)
        assert urlsplit(driver.current_url).path.startswith("/console/edits"), driver.current_url
        text = open_page(driver, url, "/console/edits")
        for job in jobs.values():
            assert job["id"] in driver.page_source
        assert "succeeded" in text
        screenshot(driver, "console-edits.png", tmp_path, LAPTOP[0], LAPTOP[1])

        # the audit page of the passing edit: verdict first, the gallery of images it broke and fixed
        open_page(driver, url, f"/console/audits/{jobs['good']['audit_id']}?policy=ship")
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.get_attribute("data-verdict") == "pass" and "PASS" in verdict.text
        thumbs = driver.find_elements(By.CSS_SELECTOR, ".thumb img")
        assert thumbs, "the gallery shows the kept inputs"
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im)
                   for im in thumbs), "every thumbnail decodes"
        assert driver.find_elements(By.CSS_SELECTOR, "figure img"), "the plots"
        driver.save_screenshot(str(tmp_path / "console-audit-finetune.png"))  # docs/img's is the demo's (test_demo)

        # the blocked edit: its console page, then its standalone report as a CI job keeps it, opened from disk
        # (offline: nothing but the file itself can load)
        open_page(driver, url, f"/console/audits/{jobs['bad']['audit_id']}?policy=ship")
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.get_attribute("data-verdict") == "fail" and "BLOCKED" in verdict.text
        saved = httpx.get(f"{url}/console/audits/{jobs['bad']['audit_id']}/report.html",
                          params={"policy": "ship"}, cookies={"editaudit_console": key_a})
        assert saved.status_code == 200 and "attachment" in saved.headers["content-disposition"]
        report = tmp_path / "report.html"
        report.write_text(saved.text)
        driver.get(report.as_uri())
        assert console_errors(driver) == []
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.get_attribute("data-verdict") == "fail" and "BLOCKED" in verdict.text
        assert "test.accuracy" in verdict.text
        first = driver.find_element(By.CSS_SELECTOR, "#regressions + table tr:nth-child(2)")
        assert "worse-sig" in first.get_attribute("class"), "the top regression is significant and coloured"
        assert driver.find_elements(By.CSS_SELECTOR, ".thumb.broken img")
        screenshot(driver, "audit-report.png", tmp_path, LAPTOP[0], PAGE_HEIGHT)

        # 1-LI: the alpha path with the chosen alpha and the target
        open_page(driver, url, f"/console/audits/{jobs['li']['audit_id']}?policy=ship")
        assert driver.find_element(By.ID, "verdict").get_attribute("data-verdict") in ("pass", "warn", "fail")
        assert driver.find_elements(By.CSS_SELECTOR, "img[alt^='alpha curve']")

        # the gate report (`editaudit gate --format html`) of the blocked edit, as a file a CI job keeps
        from editaudit.gate.evaluate import GateResult
        from editaudit.gate.render import as_html

        page = tmp_path / "gate.html"
        audit = c.get(f"/audits/{jobs['bad']['audit_id']}").json()
        page.write_text(as_html(GateResult.from_dict(gates["bad"]), f"editaudit gate: edit {jobs['bad']['id']}",
                                f"{url}/audits/{jobs['bad']['audit_id']}/report.html?policy=ship", audit))
        driver.get(page.as_uri())
        verdict = driver.find_element(By.CSS_SELECTOR, "[data-verdict]")
        assert verdict.get_attribute("data-verdict") == "fail" and "BLOCKED" in verdict.text
        assert "clean accuracy (test)" in driver.find_element(By.TAG_NAME, "body").text, "what changed, first"
        assert console_errors(driver) == []
        screenshot(driver, "gate-report.png", tmp_path, LAPTOP[0])

        # a second tenant: A's pages are a 404, in the browser and over HTTP
        sign_in(driver, url, key_b)
        text = open_page(driver, url, f"/console/audits/{jobs['good']['audit_id']}", status=404)
        assert "not found" in text.lower() and not driver.find_elements(By.ID, "verdict")
        assert jobs["good"]["id"] not in driver.page_source, "nothing of A's but the id B asked for"
        text = open_page(driver, url, "/console/edits")
        assert not any(j["id"] in driver.page_source for j in jobs.values())
        cookie = driver.get_cookie("editaudit_console")
        assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        for path in (f"/console/audits/{jobs['good']['audit_id']}", f"/console/edits/{jobs['bad']['id']}",
                     f"/console/audits/{jobs['bad']['audit_id']}/report.html"):
            r = httpx.get(url + path, cookies={"editaudit_console": key_b})
            others = {v for j in jobs.values() for v in (j["id"], j["audit_id"])} - {path.split("/")[3]}
            assert r.status_code == 404 and not [o for o in others if o in r.text], path
