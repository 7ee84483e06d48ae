"""`editaudit demo` as a user runs it: the real CLI, an embedded server, a worker process, the audit and a verdict;
with `--keep DIR`, exactly the files it used, which `editaudit edits submit DIR/edit.json` runs again."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_settings

pytestmark = pytest.mark.slow

KEPT = ["README.txt", "edit-set.npz", "edit.json", "generalization-set.npz", "model.json", "model.safetensors",
        "policy.yaml"]


def look_at_the_demo_in_the_console(url: str, audit_id: str, tmp_path) -> None:
    """The demo's audit in the web console (no sign-in: the embedded server on loopback, no key yet), in headless
    Chromium at a laptop's width: its verdict under the demo's policy, the plots, the gallery of inputs the edit
    broke and fixed, no console error. Saved as docs/img/console-audit.png by `make screenshots`."""
    from tests.e2e.browser import LAPTOP, console_errors, screenshot, start_chromium

    driver = start_chromium(tmp_path, LAPTOP[0])
    try:
        from selenium.webdriver.common.by import By

        driver.set_window_size(*LAPTOP)
        driver.get(f"{url}/console/audits/{audit_id}?policy=demo")
        verdict = driver.find_element(By.ID, "verdict")
        assert verdict.get_attribute("data-verdict") in ("pass", "warn", "fail"), verdict.text
        assert driver.find_elements(By.CSS_SELECTOR, "figure img") and driver.find_elements(
            By.CSS_SELECTOR, ".thumb img"), "plots and the gallery"
        assert console_errors(driver) == []
        screenshot(driver, "console-audit.png", tmp_path, LAPTOP[0], 3200)
    finally:
        driver.quit()


def test_demo_prints_an_audit_and_a_verdict_and_keeps_its_files(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}
    data, keep = tmp_path / "data", tmp_path / "kept"
    r = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "demo", "--data-dir", str(data), "--keep",
                        str(keep)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for needle in ("test.accuracy", "test.agreement", "edit.accuracy", "test.adv.pgd.accuracy", "95% CI",
                   "test.corruption.mean.accuracy", "verdict:", "auditing", "elapsed"):
        assert needle in out, needle
    assert "verdict: PASS" in out or "verdict: FAIL" in out
    assert (data / "editaudit.db").exists() and any((data / "objects").rglob("*.safetensors"))
    report = (tmp_path / "editaudit-demo-report.html").read_text()
    assert "corruption heat map" in report and "test.corruption.fog.5.accuracy" in report

    # --keep: exactly what it used; the request names the files beside it, the README runs them
    assert sorted(p.name for p in keep.iterdir()) == KEPT
    body = json.loads((keep / "edit.json").read_text())
    refs = {k: v for k, v in body.items() if isinstance(v, str) and v.startswith("@")}
    assert refs == {"model_id": "@model.safetensors", "edit_set": "@edit-set.npz",
                    "generalization_set": "@generalization-set.npz"}
    assert json.loads((keep / "model.json").read_text())["arch"] == "editaudit/smallcnn"
    readme = (keep / "README.txt").read_text()
    for command in ("editaudit edits submit edit.json --wait -q", "editaudit gate \"$EDIT\" --policy ./policy.yaml",
                    "editaudit policies create demo policy.yaml"):
        assert command in readme, command
    assert "max_drop" in (keep / "policy.yaml").read_text()

    # the README's commands, against a server on the same data: the same files answer the same ids
    from editaudit.cli.embedded import EmbeddedServer

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "editaudit.cli.main", *args], capture_output=True, text=True,
                              timeout=300, env={**env, "EDITAUDIT_URL": server.url}, cwd=keep)

    with EmbeddedServer(make_settings(data)) as server:
        models_before = cli("models", "list", "-q").stdout.split()
        submitted = cli("edits", "submit", "edit.json", "--wait", "-q")
        assert submitted.returncode == 0, submitted.stderr
        edit_id = submitted.stdout.strip()
        assert "uploaded model.safetensors (spec model.json)" in submitted.stderr
        gate = cli("gate", edit_id, "--policy", "./policy.yaml")
        assert gate.returncode in (0, 1) and "verdict:" in gate.stdout, gate.stderr
        audit_id = cli("audits", "list", "--edit-id", edit_id, "-q").stdout.strip()
        assert cli("audits", "report", audit_id, "-o", "report.html").returncode == 0
        (keep / "report.html").unlink()
        assert cli("policies", "create", "demo", "policy.yaml").returncode == 0
        look_at_the_demo_in_the_console(server.url, audit_id, tmp_path)
        uploaded = [m for m in json.loads(cli("models", "list", "--json").stdout) if not m["edit_id"]]
        assert len(uploaded) == 1 and uploaded[0]["id"] in models_before, "the demo's model, not a second one"

    # a folder holding anything else is refused before any work (usage)
    (keep / "notes.txt").write_text("mine")
    refused = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "demo", "--keep", str(keep), "--url",
                              "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 4 and "notes.txt" in refused.stderr
