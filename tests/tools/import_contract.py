"""The import contract of the layout, read from the source (every import, function-level ones included):

    contracts  <-  core  <-  gate, service, worker, cli;  client (the typed API client: itself only)  <-  cli
    service never imports the worker or torch; the worker never imports the service; the ML core (worker.ml)
    imports only the contracts and itself; nothing torch-free (contracts, core, gate, cli, service) imports torch.

`violations(root)` lists each breach as "file:line: module imports name (rule)". tests/unit/test_import_contract.py
runs it over the repository and over a copy with a forbidden import added, to show it would catch one.
"""

from __future__ import annotations

import ast
from pathlib import Path

# source folder -> the import name it installs as (setup.py maps the same roots)
ROOTS = {"editaudit": "editaudit", "service": "editaudit.service", "worker": "editaudit.worker",
         "migrations": "editaudit.migrations"}

# package -> the editaudit packages it may import (most specific package wins)
ALLOWED = {
    "editaudit.contracts": {"editaudit.contracts"},
    "editaudit.core": {"editaudit.contracts", "editaudit.core"},
    "editaudit.gate": {"editaudit.contracts", "editaudit.core", "editaudit.gate"},
    # the CLI talks HTTP; `serve` and `demo` run the API in-process (embedded mode), never the worker's code
    "editaudit.cli": {"editaudit.contracts", "editaudit.core", "editaudit.gate", "editaudit.cli", "editaudit.service",
                      "editaudit.client"},
    # the typed API client stands alone (httpx only): it can be vendored or split out without the rest
    "editaudit.client": {"editaudit.client"},
    "editaudit.service": {"editaudit.contracts", "editaudit.core", "editaudit.gate", "editaudit.service"},
    "editaudit.worker": {"editaudit.contracts", "editaudit.core", "editaudit.worker"},
    "editaudit.worker.ml": {"editaudit.contracts", "editaudit.worker.ml"},
    "editaudit.migrations": {"editaudit.core", "editaudit.migrations"},
    "editaudit": {"editaudit"},  # editaudit/__init__.py
}
TORCH = ("torch", "torchvision", "art", "safetensors.torch")
TORCH_FREE = ("editaudit.contracts", "editaudit.core", "editaudit.gate", "editaudit.cli", "editaudit.service",
              "editaudit.client")


def module_name(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    if rel.parts[0] not in ROOTS:
        return None
    parts = [ROOTS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from editaudit.core import db` imports editaudit.core.db: check the names too
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names] if name.startswith("editaudit") \
                else [(node.lineno, name)]
    return out


def _package_of(name: str) -> str:
    """`editaudit.__version__` is the top-level package itself."""
    parts = name.split(".")
    return parts[0] if len(parts) > 1 and parts[1].startswith("__") else name


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _owner(module: str) -> str:
    return max((p for p in ALLOWED if _within(module, p)), key=len)


def violations(root: Path) -> list[str]:
    found = []
    for folder in ROOTS:
        for path in sorted((root / folder).rglob("*.py")):
            module = module_name(path, root)
            owner = _owner(module)
            tree = ast.parse(path.read_text(), str(path))
            for line, name in imports(tree, module, path.name == "__init__.py"):
                name = _package_of(name)
                where = f"{path.relative_to(root)}:{line}: {module} imports {name}"
                if _within(name, "editaudit") and name != "editaudit" and not any(
                        _within(name, p) for p in ALLOWED[owner]) and not _within(name, owner):
                    found.append(f"{where} ({owner} may import only {sorted(ALLOWED[owner])})")
                if any(_within(owner, p) for p in TORCH_FREE) and any(_within(name, t) for t in TORCH):
                    found.append(f"{where} ({owner} is torch-free)")
    return found


if __name__ == "__main__":
    import sys

    problems = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(problems) or "import contract holds")
    sys.exit(1 if problems else 0)
