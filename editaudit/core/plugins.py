"""Plugins: modules named in `EDITAUDIT_PLUGINS` are imported by the API and by every worker at start, so the
edit methods, attacks and corruptions they register are valid in requests and runnable by the worker. A plugin is
one file: each params class it registers with editaudit.contracts (what the API validates) names its
implementation by import path (`impl = "my_pkg.my_plugin:MyMethod"`), which the worker alone imports. The file keeps
torch imports inside the implementations' methods, since the API process imports it too and has no torch
(docs/extending.md#plugins; tests/plugins/nudge.py)."""

from __future__ import annotations

import importlib


def load_plugins(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
