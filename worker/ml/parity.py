"""Every registered params class has an implementation: the worker resolves each one's `impl` when it starts, so a
gap (a wrong path, a module that fails to import, a class that implements other params) shows then, not after an
edit's compute is spent. Corruptions are names in the contracts with functions registered by the worker's
corruptions package; they are compared as sets."""

from __future__ import annotations

from editaudit.contracts import audit as audit_contract
from editaudit.contracts.attacks import ATTACK_PARAMS
from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.worker.ml.audit.attacks import Attack
from editaudit.worker.ml.edits import EditMethod
from editaudit.worker.ml.impl import ImplementationError, resolve


def implementation_problems() -> dict[str, dict[str, str]]:
    """kind -> {name: why it cannot run} for every registered name without a usable implementation."""
    out: dict[str, dict[str, str]] = {"edit methods": {}, "attacks": {}, "corruptions": {}}
    for kind, registry, base in (("edit methods", EDIT_PARAMS, EditMethod), ("attacks", ATTACK_PARAMS, Attack)):
        for name, cls in registry.items():
            try:
                resolve(cls, base)
            except ImplementationError as e:
                out[kind][name] = str(e)
    from editaudit.worker.ml.audit.corruptions import CORRUPTIONS

    for name in sorted(set(audit_contract.CORRUPTIONS) - set(CORRUPTIONS)):
        out["corruptions"][name] = "no function registered with editaudit.worker.ml.audit.corruptions"
    return out


def missing_implementations() -> dict[str, list[str]]:
    """kind -> the names whose params are registered but that no implementation serves (empty lists: parity)."""
    return {kind: sorted(names) for kind, names in implementation_problems().items()}


def check_parity() -> None:
    problems = {kind: names for kind, names in implementation_problems().items() if names}
    if problems:
        lines = [f"  {kind} {name!r}: {why}" for kind, names in problems.items() for name, why in names.items()]
        raise RuntimeError("params without an implementation (the API would accept them, no worker could run "
                           "them):\n" + "\n".join(lines))
