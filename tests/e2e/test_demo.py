"""`editaudit demo` as a user runs it: the real CLI, an embedded server, a worker process, the audit and a verdict."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_prints_an_audit_and_a_verdict(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}
    r = subprocess.run([sys.executable, "-m", "editaudit.cli.main", "demo", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for needle in ("test.accuracy", "test.agreement", "edit.accuracy", "test.adv.pgd.accuracy", "95% CI",
                   "test.corruption.mean.accuracy", "verdict:", "auditing"):
        assert needle in out, needle
    assert "verdict: PASS" in out or "verdict: FAIL" in out
    assert (tmp_path / "editaudit.db").exists() and any((tmp_path / "objects").rglob("*.safetensors"))
    report = (tmp_path / "editaudit-demo-report.html").read_text()
    assert "corruption heat map" in report and "test.corruption.fog.5.accuracy" in report
