"""Attacks: each `Attack[ItsParams]` in a file, named by its params class's `impl` and imported on first use, so
importing this package imports no attack (and no torch)."""

from editaudit.worker.ml.audit.attacks.base import Attack, attack_class, make_attack  # noqa: F401
