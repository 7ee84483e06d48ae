"""Headless Chromium for the browser tests: Debian's package driven through its chromedriver (a browser build that
downloads itself fails on these machines). Without Chromium, chromedriver or selenium a browser test is skipped, except
under CI=true, where it fails. Screenshots land in the test's tmp dir, and in docs/img/ with
EDITAUDIT_UPDATE_SCREENSHOTS=1 (`make screenshots`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
WAIT_S = 60
LAPTOP = (1366, 768)  # what the console and the reports are looked at on
MAX_HEIGHT = 12000  # within what one screenshot may hold
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
                  # nothing resolves but loopback: the page has to render offline
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost")


def missing(what: str):
    """A missing browser fails under CI=true (CI installs chromium + chromium-driver) and is a skip elsewhere."""
    msg = f"{what} (apt-get install -y chromium chromium-driver; pip install selenium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI=true: the browser check is required)")
    pytest.skip(msg)


def start_chromium(tmp_path: Path, width: int):
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chrome or not driver_path:
        missing(f"no Chromium ({chrome or 'chromium missing'}) or chromedriver ({driver_path or 'missing'})")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed")

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path, log_output=str(tmp_path / "driver.log")),
                              options=options)
    driver.set_page_load_timeout(WAIT_S)
    return driver


def console_errors(driver) -> list[dict]:
    """What the page logged as errors since the last call (a failed fetch, a script error, a CSP refusal)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, name: str, tmp_path: Path, width: int, height: int | None = None) -> bytes:
    """The page at `width`, its full height up to `height` (or MAX_HEIGHT), saved as `name` in tmp_path and, with
    EDITAUDIT_UPDATE_SCREENSHOTS=1, in docs/img/."""
    height = min(height or MAX_HEIGHT, int(driver.execute_script("return document.documentElement.scrollHeight")))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        png = driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == width
    (tmp_path / name).write_bytes(png)
    if os.environ.get("EDITAUDIT_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        (DOCS_IMG / name).write_bytes(png)
    return png
