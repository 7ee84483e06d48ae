"""Package discovery for the four source roots (pyproject.toml holds everything else).

`editaudit/` is the shared, torch-free package; `service/`, `worker/` and `migrations/` sit at the top of the
repository (the design card's layout) and install as `editaudit.service`, `editaudit.worker` and
`editaudit.migrations`. setuptools' pyproject tables cannot map a folder to a dotted prefix, so this file does, and
nothing else: every folder below a root that holds Python code is a package of the wheel, found here, never listed by
hand, with or without an `__init__.py` (tests/unit/test_packaging.py requires the `__init__.py` all the same, and
`.ci/run` checks the built wheel against the source tree).
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = {"editaudit": "editaudit", "editaudit.service": "service", "editaudit.worker": "worker",
         "editaudit.migrations": "migrations"}


def discover() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        packages.append(name)
        for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]):
            if not any(Path(folder, *sub.split(".")).glob("*.py")):
                continue  # a folder of data files (data/, policies/) is package data of its parent
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = discover()
setup(packages=packages, package_dir=package_dir)
