"""ImageNet-C corruptions (Hendrycks & Dietterich 2019) in torch, batched on the input's device: a registry of the
15 benchmark types by their `audit.corruptions.names`, one family per file. Deviations from the reference code are
listed in docs/corruptions.md."""

from editaudit.worker.ml.audit.corruptions import blur, digital, noise, weather  # noqa: F401,E402  (registration)
from editaudit.worker.ml.audit.corruptions.base import (  # noqa: F401
    CORRUPTION_NAMES,
    CORRUPTIONS,
    FAMILIES,
    corrupt,
    register_corruption,
)
