"""Built-in datasets that need no upload: sklearn's bundled digits (8x8 grey, 10 classes). The split is fixed and
documented: sample i goes to the test split when i % 4 == 0 (450 images), else to train (1347 images)."""

from typing import Any

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS: dict[str, dict[str, Any]] = {
    "builtin:digits-train": {"n": 1347, "shape": [1, 8, 8], "num_classes": 10},
    "builtin:digits-test": {"n": 450, "shape": [1, 8, 8], "num_classes": 10},
}


def is_builtin(ref: str) -> bool:
    return ref.startswith(BUILTIN_PREFIX)
