"""A plugin is one file the API can import without torch, and its implementation is typed against its params.

- Each file in tests/plugins/ is imported in a subprocess where torch, torchvision and ART cannot be imported (as in
  the API image), then the API is built with EDITAUDIT_PLUGINS naming it, and the params it registers validate.
- mypy, given an `EditMethod[SomeParams]` that reads `ctx.params.amout` (and an attack reading `self.params.stpes`),
  reports the attribute errors; the same file with the right names passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = sorted(f"tests.plugins.{p.stem}" for p in (REPO / "tests" / "plugins").glob("*.py") if p.stem != "__init__")

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "art"):
                raise ImportError(f"{name} is not installed (blocked: the API image has no torch)")
            return None

    sys.meta_path.insert(0, NoTorch())
""")

IMPORT_PLUGIN_AND_BUILD_API = BLOCK_TORCH + textwrap.dedent("""
    import importlib, json
    from editaudit.contracts.attacks import ATTACK_PARAMS
    from editaudit.contracts.edits import EDIT_PARAMS

    before = (set(EDIT_PARAMS), set(ATTACK_PARAMS))
    importlib.import_module(sys.argv[1])
    methods, attacks = sorted(set(EDIT_PARAMS) - before[0]), sorted(set(ATTACK_PARAMS) - before[1])

    from editaudit.contracts.audit import AuditConfig
    from editaudit.contracts.edits import parse_hyperparams
    from editaudit.service.app import create_app

    app = create_app(allow_anonymous=True)  # loads EDITAUDIT_PLUGINS (the module above, already imported)
    schema = json.dumps(app.openapi())
    stored = {}
    for m in methods:
        stored[m] = parse_hyperparams(m, {}).model_dump(mode="json")
    for a in attacks:
        raw = {"name": a}
        if ATTACK_PARAMS[a].model_fields.get("eps") is not None and ATTACK_PARAMS[a].model_fields["eps"].is_required():
            raw["eps"] = 0.1
        stored[a] = AuditConfig.model_validate({"attacks": [raw]}).attacks[0].model_dump(mode="json")
    blocked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "art"))
    print(json.dumps({"methods": methods, "attacks": attacks, "stored": stored, "torch_loaded": blocked,
                      "in_schema": [n for n in methods + attacks if n in schema]}))
""")


def run_blocked(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDITAUDIT_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env={**base, **(env or {})})


def test_there_is_a_plugin_adding_a_method_and_an_attack():
    assert "tests.plugins.nudge" in PLUGINS


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_plugin_file_imports_and_serves_in_a_torch_free_api(plugin, tmp_path):
    r = run_blocked(IMPORT_PLUGIN_AND_BUILD_API, plugin,
                    env={"EDITAUDIT_PLUGINS": json.dumps([plugin]), "EDITAUDIT_DATA_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] == []
    assert out["methods"] or out["attacks"], f"{plugin} registers nothing"
    assert set(out["attacks"]) <= set(out["in_schema"]), "the API's OpenAPI document lists the new attacks"
    if plugin == "tests.plugins.nudge":
        assert out["methods"] == ["bias_nudge"] and out["attacks"] == ["uniform_noise"]
        assert out["stored"]["bias_nudge"] == {"seed": 0, "amount": 1.0}
        assert out["stored"]["uniform_noise"]["id"] == "noise" and out["stored"]["uniform_noise"]["draws"] == 1


def test_the_plugin_interface_imports_without_torch():
    """What a plugin file imports from the worker: the interfaces and the packages above them (which therefore
    import no implementation: the params' `impl` paths are resolved lazily, by the worker)."""
    r = run_blocked(BLOCK_TORCH + textwrap.dedent("""
        import editaudit.worker.ml.edits, editaudit.worker.ml.edits.base
        import editaudit.worker.ml.audit.attacks, editaudit.worker.ml.audit.attacks.base
        import editaudit.worker.ml.impl
        print(sorted(m for m in sys.modules if m.startswith("editaudit.worker")))
    """))
    assert r.returncode == 0, r.stderr
    assert "pgd" not in r.stdout and "finetune" not in r.stdout, r.stdout


def test_the_torch_block_is_real():
    """The same guard refuses an implementation module that imports torch at the top (what the plugin must not)."""
    r = run_blocked(BLOCK_TORCH + "import editaudit.worker.ml.audit.attacks.pgd\n")
    assert r.returncode != 0 and "blocked: the API image has no torch" in r.stderr


# ------------------------------------------------------------------------------------------------------- mypy

TYPED = textwrap.dedent("""
    from pydantic import Field

    from editaudit.contracts.attacks import PGDParams
    from editaudit.contracts.edits import EditParams, FinetuneLayerParams
    from editaudit.worker.ml.audit.attacks.base import Attack
    from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult


    class BiasShiftParams(EditParams):
        impl = "typed:BiasShift"
        amount: float = Field(1.0, gt=0)


    class BiasShift(EditMethod[BiasShiftParams]):
        def apply(self, ctx: EditContext[BiasShiftParams]) -> EditResult:
            return EditResult(ctx.model, [], {"amount": ctx.params.AMOUNT})


    class Layer(EditMethod[FinetuneLayerParams]):  # a built-in method's params
        def apply(self, ctx: EditContext[FinetuneLayerParams]) -> EditResult:
            return EditResult(ctx.model, [], {"lr": ctx.params.LR})


    class Steps(Attack[PGDParams]):
        def steps(self) -> int:
            return self.params.STEPS
""")


@pytest.fixture(scope="module")
def mypy_env(tmp_path_factory):
    """mypy cannot follow the editable install's import hook (editaudit.worker lives in worker/): a tree of links
    lays the packages out as installed. torch, torchvision, ART and numpy are not followed (they are Any here)."""
    import mypy  # noqa: F401  (the test extra installs it: a missing mypy fails, never skips, this check)
    root = tmp_path_factory.mktemp("mypy")
    pkg = root / "src" / "editaudit"
    pkg.mkdir(parents=True)
    for entry in (REPO / "editaudit").iterdir():
        (pkg / entry.name).symlink_to(entry)
    (pkg / "worker").symlink_to(REPO / "worker")
    (pkg / "service").symlink_to(REPO / "service")
    (root / "mypy.ini").write_text("[mypy]\nfollow_imports = silent\n"
                                   "[mypy-torch.*,torchvision.*,art.*,numpy.*]\nfollow_imports = skip\n"
                                   "ignore_missing_imports = True\n")
    return root


def mypy(root: Path, source: str) -> subprocess.CompletedProcess:
    (root / "typed.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir",
                           str(root / "cache"), "--no-error-summary", "typed.py"], capture_output=True, text=True,
                          timeout=300, cwd=root, env={**os.environ, "MYPYPATH": str(root / "src")})


def test_mypy_sees_the_fields_of_an_implementations_params(mypy_env):
    typos = mypy(mypy_env, TYPED.replace("AMOUNT", "amout").replace("LR", "lrr").replace("STEPS", "stpes"))
    assert typos.returncode == 1, typos.stdout + typos.stderr
    assert '"BiasShiftParams" has no attribute "amout"' in typos.stdout, typos.stdout
    assert '"FinetuneLayerParams" has no attribute "lrr"' in typos.stdout, typos.stdout
    assert '"PGDParams" has no attribute "stpes"' in typos.stdout, typos.stdout
    assert typos.stdout.count("error:") == 3, typos.stdout
    right = mypy(mypy_env, TYPED.replace("AMOUNT", "amount").replace("LR", "lr").replace("STEPS", "steps"))
    assert right.returncode == 0, right.stdout + right.stderr
