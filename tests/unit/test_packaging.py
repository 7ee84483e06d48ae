"""What a release holds and what each install pulls in, read from the files that decide it (setup.py's discovery,
pyproject's extras). `python -m tests.tools.install_check` (run by `make test`) builds the wheel and uses it."""

import ast
import re
import runpy
import tomllib
from pathlib import Path

from tests.tools.import_contract import ROOTS

REPO = Path(__file__).resolve().parents[2]
TORCH = re.compile(r"^(torch|torchvision|adversarial-robustness-toolbox|timm|transformers)\b")
SERVER = re.compile(r"^(fastapi|uvicorn|sqlalchemy|alembic|psycopg|celery|boto3|numpy|matplotlib)\b")


def code_folders() -> dict[str, Path]:
    """Import name -> folder, for every folder below a source root that holds Python code."""
    out = {}
    for folder, name in ROOTS.items():
        for py in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in py.parts:
                rel = py.parent.relative_to(REPO / folder)
                out[".".join([name, *rel.parts])] = py.parent
    return out


def discovered() -> dict[str, str]:
    source = (REPO / "setup.py").read_text().replace("setup(packages=packages, package_dir=package_dir)", "")
    ns = runpy._run_module_code(source, {"__file__": str(REPO / "setup.py")}, "setup_discovery")  # noqa: SLF001
    return ns["package_dir"]


def test_every_code_folder_is_a_package_with_an_init():
    """A folder without `__init__.py` is a namespace package to Python, mypy and pytest; make it explicit."""
    missing = [str(f.relative_to(REPO)) for f in code_folders().values() if not (f / "__init__.py").is_file()]
    assert not missing, f"add an __init__.py to {missing}"


def test_setup_discovers_every_code_folder_at_its_import_name():
    package_dir = discovered()
    folders = {name: str(path.relative_to(REPO)) for name, path in code_folders().items()}
    assert package_dir == folders


def test_discovery_does_not_depend_on_init_files(tmp_path):
    """The wheel keeps a package whose `__init__.py` was forgotten (the test above still fails on it)."""
    (tmp_path / "service" / "newpkg").mkdir(parents=True)
    (tmp_path / "service" / "newpkg" / "mod.py").write_text("x = 1\n")
    for root in ("editaudit", "worker", "migrations"):
        (tmp_path / root).mkdir()
    source = (REPO / "setup.py").read_text().replace("setup(packages=packages, package_dir=package_dir)", "")
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        ns = runpy._run_module_code(source, {}, "setup_discovery")  # noqa: SLF001
    finally:
        os.chdir(cwd)
    assert ns["package_dir"]["editaudit.service.newpkg"] == "service/newpkg"


def _extras() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def _resolved(extra: str, extras: dict[str, list[str]]) -> list[str]:
    """An extra's requirements with `editaudit[...]` self-references expanded."""
    out = []
    for req in extras[extra]:
        m = re.match(r"editaudit\[([^\]]+)\]", req)
        out += [r for e in m.group(1).split(",") for r in _resolved(e.strip(), extras)] if m else [req]
    return out


def test_the_gate_install_is_the_client_alone():
    base, extras = _extras()
    assert extras["gate"] == [], "the gate extra names the base install"
    assert not [d for d in base if TORCH.match(d) or SERVER.match(d)], base


def test_the_api_has_no_torch_and_the_worker_has_it():
    base, extras = _extras()
    api = base + _resolved("api", extras)
    assert not [d for d in api if TORCH.match(d)], api
    assert any(d.startswith("fastapi") for d in api) and any(d.startswith("sqlalchemy") for d in api)
    worker = base + _resolved("worker", extras)
    assert any(d.startswith("torch") for d in worker) and any(d.startswith("celery") for d in worker)


def test_the_version_has_one_home():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    init = ast.parse((REPO / "editaudit" / "__init__.py").read_text())
    assert any(isinstance(n, ast.Assign) and n.targets[0].id == "__version__" for n in init.body)
