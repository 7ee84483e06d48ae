"""Edit methods (PEFT-style): each a small class in its own file, `EditMethod[ItsParams]`, named by its params
class's `impl` and imported on first use, so importing this package imports no method (and no torch)."""

from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, edit_method, edit_notes, run_edit  # noqa: F401
