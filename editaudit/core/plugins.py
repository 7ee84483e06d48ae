"""Plugins: modules named in `EDITAUDIT_PLUGINS` are imported by the API and by every worker at start, so the
edit methods, attacks and corruptions they register are valid in requests and runnable by the worker. A plugin
registers its params with editaudit.contracts (what the API validates) and its implementation with the worker's
registries; it keeps torch imports inside the implementation, since the API process never imports torch."""

from __future__ import annotations

import importlib


def load_plugins(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
