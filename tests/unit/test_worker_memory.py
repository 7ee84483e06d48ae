"""The worker's allocator setting (editaudit.worker.memory): on glibc the thresholds are set; elsewhere it is a
no-op that says so. Its effect (flat RSS over a streaming audit) is measured in bench/ingest.py, not asserted."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys


def test_steady_allocator_sets_the_thresholds_where_there_is_glibc():
    code = "from editaudit.worker.memory import steady_allocator; print(steady_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = "True" if ctypes.util.find_library("c") and sys.platform.startswith("linux") else "False"
    assert out.stdout.strip() == expected


def test_the_torch_thread_count_is_the_setting():
    code = ("from editaudit.core.settings import Settings; from editaudit.worker.memory import set_threads; "
            "print(set_threads(Settings(torch_threads=1).torch_threads), set_threads(None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]  # set, then left as it is
