"""Attack registry: each attack one file, registered by the name used in `audit.attacks[].name`."""

from editaudit.worker.ml.audit.attacks.base import ATTACKS, Attack, register_attack  # noqa: F401
from editaudit.worker.ml.audit.attacks import art_attacks, pgd  # noqa: F401,E402  (registration side effects)
