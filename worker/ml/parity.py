"""Every registered params class has an implementation: the worker checks it when it starts, so a gap shows then,
not after an edit's compute is spent. (The reverse, an implementation without params, is refused at registration.)"""

from __future__ import annotations

from editaudit.contracts import audit as audit_contract
from editaudit.contracts.attacks import ATTACK_PARAMS
from editaudit.contracts.edits import EDIT_PARAMS
from editaudit.worker.ml.audit.attacks import ATTACKS
from editaudit.worker.ml.audit.corruptions import CORRUPTIONS
from editaudit.worker.ml.edits import EDITS


def missing_implementations() -> dict[str, list[str]]:
    """kind -> the names whose params are registered but that no implementation serves (empty lists: parity)."""
    return {"edit methods": sorted(set(EDIT_PARAMS) - set(EDITS)),
            "attacks": sorted(set(ATTACK_PARAMS) - set(ATTACKS)),
            "corruptions": sorted(set(audit_contract.CORRUPTIONS) - set(CORRUPTIONS))}


def check_parity() -> None:
    missing = {k: v for k, v in missing_implementations().items() if v}
    if missing:
        raise RuntimeError(f"params without an implementation (the API would accept them, no worker could run "
                           f"them): {missing}")
