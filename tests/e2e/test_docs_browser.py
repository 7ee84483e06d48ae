"""/docs as a person sees it: the real app over HTTP on loopback, opened in headless Chromium (Debian's package,
driven through its chromedriver). Swagger UI must render every operation of the OpenAPI 3.1 schema, with nothing
fetched from anywhere but the app (no CDN). The screenshot lands in the test's tmp dir, and in docs/img/api-docs.png
with EDITAUDIT_UPDATE_SCREENSHOTS=1.

Without Chromium, chromedriver or selenium the browser test is skipped, except under CI=true, where it fails."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.e2e.browser import MAX_HEIGHT, WAIT_S, console_errors, screenshot, start_chromium

WIDTH = 1400
FAILURE_TEXT = ("Unable to render this definition", "Failed to load API definition", "Fetch error",
                "Could not render", "Parser error")
VERSION = re.compile(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)[^"]*"')
def _local_refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url:\s*'([^']*)'", html)


def _deep_link(name: str) -> str:
    """Swagger UI's element id for a tag or operation id (its createDeepLinkPath)."""
    return re.sub(r"\s", "_", name.strip())


def _served_version(client) -> tuple[int, int, int]:
    html = client.get("/docs").text
    js = next(ref for ref in _local_refs(html) if ref.endswith("swagger-ui-bundle.js"))
    bundle = client.get(js)
    assert bundle.status_code == 200, js
    found = VERSION.search(bundle.text)
    assert found, f"{js} declares no Swagger UI version"
    return tuple(int(g) for g in found.groups())


def test_docs_serve_swagger_ui_5_from_the_app(api_client):
    """OpenAPI 3.1 needs Swagger UI >= 5: a downgrade of the bundled assets fails here, browser or not."""
    c = api_client
    assert c.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert _served_version(c) >= (5, 0, 0)
    refs = _local_refs(c.get("/docs").text)
    assert len(refs) >= 4 and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs  # no CDN
    for ref in refs:
        assert c.get(ref).status_code == 200, ref
    assert c.get("/docs-assets/__init__.py").status_code == 404  # only swagger-ui's files are served


def test_served_bundle_version_matches_the_package(api_client):
    from editaudit.service.openapi import swagger_ui_dir, swagger_ui_version

    folder = swagger_ui_dir()
    assert folder is not None, "Swagger UI's assets are not installed (pip install fastapi-swagger)"
    assert ".".join(map(str, _served_version(api_client))) == swagger_ui_version(folder)


@pytest.fixture()
def chromium(tmp_path):
    driver = start_chromium(tmp_path, WIDTH)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_docs_render_every_operation_in_chromium(chromium, api_client, http_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    schema = api_client.get("/openapi.json").json()
    # Swagger UI draws an operation once per tag (untagged ones under "default")
    expected = sum(len(op.get("tags") or ["default"]) for item in schema["paths"].values() for op in item.values())
    assert expected >= 25

    driver = chromium
    driver.get(f"{http_url}/docs")

    def settled(d):
        if d.find_elements(By.CSS_SELECTOR, ".errors-wrapper, .version-pragma"):
            return "error"
        return "rendered" if len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= expected else False

    outcome = WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(
        settled, f"Swagger UI did not render {expected} operations in {WAIT_S}s")
    text = driver.find_element(By.TAG_NAME, "body").text
    assert outcome == "rendered", text[:2000]
    assert not [t for t in FAILURE_TEXT if t in text], text[:2000]
    assert len(driver.find_elements(By.CSS_SELECTOR, ".opblock")) == expected
    shown = sorted(e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert shown == sorted(f"operations-{_deep_link(tag)}-{_deep_link(op['operationId'])}"
                           for item in schema["paths"].values() for op in item.values()
                           for tag in (op.get("tags") or ["default"]))  # every operation, once per tag
    assert schema["info"]["title"] in driver.find_element(By.CSS_SELECTOR, ".info .title").text

    # everything the page fetched came from the app itself (no CDN, no validator badge, no fonts)
    origin = urlsplit(http_url)[:2]
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(urlsplit(url)[:2] == origin for url in fetched), fetched
    assert console_errors(driver) == []

    # the title and every operation (the schema models below them are left out)
    height = min(MAX_HEIGHT, driver.execute_script(
        "return Math.ceil(Math.max(...[...document.querySelectorAll('.opblock-tag-section')]"
        ".map(e => e.getBoundingClientRect().bottom + window.scrollY))) + 24"))
    screenshot(driver, "api-docs.png", tmp_path, WIDTH, height)
