"""The layout's import contract (tests/tools/import_contract.py) holds, and would catch a breach."""

import shutil
from pathlib import Path

import pytest

from tests.tools.import_contract import ROOTS, violations

REPO = Path(__file__).resolve().parents[2]


def test_the_tree_keeps_the_import_contract():
    assert violations(REPO) == []


@pytest.fixture()
def tree_copy(tmp_path):
    for folder in ROOTS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("path, source, rule", [
    ("service/routes/evil.py", "from editaudit.worker.jobs import run_edit_job\n", "editaudit.service may import"),
    ("service/routes/evil.py", "def f():\n    import torch\n", "is torch-free"),
    ("service/routes/evil.py", "from ...worker.ml import edits\n", "editaudit.service may import"),
    ("worker/jobs/evil.py", "from editaudit.service.errors import Problem\n", "editaudit.worker may import"),
    ("worker/ml/evil.py", "from editaudit.core import db\n", "editaudit.worker.ml may import"),
    ("editaudit/contracts/evil.py", "from editaudit.core.settings import Settings\n", "contracts may import"),
    ("editaudit/core/evil.py", "import torchvision.models\n", "is torch-free"),
    ("editaudit/cli/evil.py", "from editaudit.worker.ml.archs import create_model\n", "editaudit.cli may import"),
    # fails closed: a package no rule covers, imports by literal name, a module imported by `from`, torch's kin
    ("editaudit/newpkg/evil.py", "import json\n", "in no package the import contract has a rule for"),
    ("editaudit/evil.py", "import json\n", "in no package the import contract has a rule for"),
    ("service/routes/evil.py", "import importlib\nimportlib.import_module('torch')\n", "is torch-free"),
    ("service/routes/evil.py", "from importlib import import_module\nimport_module('editaudit.worker.jobs')\n",
     "editaudit.service may import"),
    ("editaudit/gate/evil.py", "def f():\n    return __import__('editaudit.service.app')\n",
     "editaudit.gate may import"),
    ("service/evil.py", "import importlib\nimportlib.import_module('..worker', __package__)\n",
     "editaudit.service may import"),
    ("editaudit/core/evil.py", "from safetensors import torch\n", "is torch-free"),
    ("editaudit/core/evil.py", "from safetensors import numpy as st\n", None),
    ("service/evil.py", "import timm\n", "is torch-free"),
    ("editaudit/cli/evil.py", "from transformers import AutoModelForImageClassification\n", "is torch-free"),
    ("editaudit/client/evil.py", "import torchattacks\n", "is torch-free"),
    ("worker/jobs/evil.py", "import timm\n", None),  # the worker may use torch and its kin
])
def test_a_forbidden_import_is_caught(tree_copy, path, source, rule):
    (tree_copy / path).parent.mkdir(exist_ok=True)
    (tree_copy / path).write_text(source)
    found = violations(tree_copy)
    if rule is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(path) and rule in found[0], found
