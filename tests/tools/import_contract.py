"""The import contract of the layout, read from the source (every import, function-level ones included):

    contracts  <-  core  <-  gate, service, worker, cli;  client (the typed API client: itself only)  <-  cli
    contracts  <-  study (a study's summary and report)  <-  service, cli
    service never imports the worker or torch; the worker never imports the service; the ML core (worker.ml)
    imports only the contracts and itself; nothing torch-free (contracts, core, gate, cli, service, client, study)
    imports torch or a package built on it (TORCH: torchvision, ART, timm, transformers, ...).

It fails closed: a module in no package that ALLOWED has a rule for is a breach (a new package needs its rule);
`importlib.import_module("name")` and `__import__("name")` with a literal name are imports like any other; `from
safetensors import torch` imports `safetensors.torch` (every `from X import Y` is read as X.Y as well as X).

`violations(root)` lists each breach as "file:line: module imports name (rule)". tests/unit/test_import_contract.py
runs it over the repository and over copies with a forbidden import added, to show it would catch each kind.
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
                      "editaudit.client", "editaudit.study"},
    # the typed API client stands alone (httpx only): it can be vendored or split out without the rest
    "editaudit.client": {"editaudit.client"},
    "editaudit.service": {"editaudit.contracts", "editaudit.core", "editaudit.gate", "editaudit.service",
                          "editaudit.study"},
    # a finished study's summary and report: pure functions of its runs' numbers
    "editaudit.study": {"editaudit.contracts", "editaudit.study"},
    "editaudit.worker": {"editaudit.contracts", "editaudit.core", "editaudit.worker"},
    "editaudit.worker.ml": {"editaudit.contracts", "editaudit.worker.ml"},
    "editaudit.migrations": {"editaudit.core", "editaudit.migrations"},
    "editaudit": {"editaudit"},  # editaudit/__init__.py alone: this rule covers no module below it
}
ROOT_PACKAGE = "editaudit"
# torch and the third-party packages that import it (a torch-free install has none of them)
TORCH = ("torch", "torchvision", "torchaudio", "art", "safetensors.torch", "timm", "transformers", "torchattacks",
         "accelerate", "peft", "diffusers", "sentence_transformers", "lightning", "pytorch_lightning",
         "torchmetrics", "kornia", "captum", "foolbox", "opacus", "functorch")
TORCH_FREE = ("editaudit.contracts", "editaudit.core", "editaudit.gate", "editaudit.cli", "editaudit.service",
              "editaudit.client", "editaudit.study")


def module_name(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    if rel.parts[0] not in ROOTS:
        return None
    parts = [ROOTS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(name: str, level: int, module: str, is_package: bool) -> str:
    """A relative import's absolute name (`from ..core import db` in editaudit.service.app -> editaudit.core)."""
    if not level:
        return name
    base = module.split(".")[: len(module.split(".")) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal name of `importlib.import_module("x")`, `import_module("x")` or `__import__("x")`; None for any
    other call, or a name that is not a literal (a registry's, checked where it is resolved)."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if called not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file: import statements, and calls of import_module and
    __import__ with a literal name. `from X import Y` counts as X and as X.Y (Y may be a module: `from editaudit.core
    import db`, `from safetensors import torch`)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = _absolute(node.module or "", node.level, module, is_package)
            out += [(node.lineno, name)] + [(node.lineno, f"{name}.{a.name}") for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and (literal := _dynamic_import(node)) is not None:
            level = len(literal) - len(literal.lstrip("."))
            out.append((node.lineno, _absolute(literal[level:], level, module, is_package)))
    return out


def _package_of(name: str) -> str:
    """`editaudit.__version__` is the top-level package itself."""
    parts = name.split(".")
    return parts[0] if len(parts) > 1 and parts[1].startswith("__") else name


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _covers(rule: str, name: str) -> bool:
    """Whether a package of ALLOWED's (a key, or an entry of its set) covers `name`: itself and everything below it;
    the root package covers only itself (editaudit/__init__.py), so nothing new below it is covered by accident."""
    return name == rule if rule == ROOT_PACKAGE else _within(name, rule)


def _owner(module: str) -> str | None:
    """The most specific package with a rule that covers `module`; None when no rule does."""
    return max((p for p in ALLOWED if _covers(p, module)), key=len, default=None)


def violations(root: Path) -> list[str]:
    found = []
    for folder in ROOTS:
        for path in sorted((root / folder).rglob("*.py")):
            module = module_name(path, root)
            assert module is not None  # the file lies under one of ROOTS
            owner = _owner(module)
            if owner is None:
                found.append(f"{path.relative_to(root)}:1: {module} is in no package the import contract has a rule "
                             f"for (add its package to ALLOWED in tests/tools/import_contract.py)")
                continue
            tree = ast.parse(path.read_text(), str(path))
            reported: set[tuple[int, str]] = set()  # one breach of a rule per line (`from X import Y`: X and X.Y)
            for line, name in sorted(set(imports(tree, module, path.name == "__init__.py"))):
                name = _package_of(name)
                where = f"{path.relative_to(root)}:{line}: {module} imports {name}"
                breaches = []
                if _within(name, ROOT_PACKAGE) and name != ROOT_PACKAGE and not any(
                        _covers(p, name) for p in ALLOWED[owner]) and not _covers(owner, name):
                    breaches.append(f"{owner} may import only {sorted(ALLOWED[owner])}")
                if any(_within(owner, p) for p in TORCH_FREE) and any(_within(name, t) for t in TORCH):
                    breaches.append(f"{owner} is torch-free")
                for rule in breaches:
                    if (line, rule) not in reported:
                        reported.add((line, rule))
                        found.append(f"{where} ({rule})")
    return found


if __name__ == "__main__":
    import sys

    problems = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(problems) or "import contract holds")
    sys.exit(1 if problems else 0)
