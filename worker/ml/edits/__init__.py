"""Edit-method registry (PEFT-style): each method a small class in its own file, found by name."""

from editaudit.worker.ml.edits.base import EDITS, EditContext, EditMethod, EditResult, register_edit, run_edit  # noqa: F401
from editaudit.worker.ml.edits import (  # noqa: F401,E402  (registration side effects: one file per method)
    enn, finetune, finetune_layer, interpolate, low_rank, rewrite)
