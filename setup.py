"""Package discovery for the three source roots (pyproject.toml holds everything else).

`editaudit/` is the shared, torch-free package; `service/` and `worker/` sit at the top of the repository (the
design card's layout) and install as `editaudit.service` and `editaudit.worker`, as `migrations/` installs as
`editaudit.migrations`. Every package below those roots is found, none is listed by hand.
"""

from setuptools import find_packages, setup

ROOTS = {"editaudit": "editaudit", "editaudit.service": "service", "editaudit.worker": "worker",
         "editaudit.migrations": "migrations"}


def discover() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        packages.append(name)
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = discover()
setup(packages=packages, package_dir=package_dir)
