"""`finetune`: gradient steps on every parameter, or on `from_layer` and everything after it (to the output)."""

from __future__ import annotations

from editaudit.contracts.edits import FinetuneParams
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult
from editaudit.worker.ml.edits.training import train_only, train_steps


class Finetune(EditMethod[FinetuneParams]):
    def apply(self, ctx: EditContext[FinetuneParams]) -> EditResult:
        named = list(ctx.model.net.named_parameters())
        start: int | None = 0
        if ctx.params.from_layer:
            prefix = ctx.params.from_layer + "."
            start = next((i for i, (k, _) in enumerate(named) if k.startswith(prefix)), None)
            if start is None:
                raise ValueError(f"unknown from_layer {ctx.params.from_layer!r}")
        params = [prm for _, prm in named[start:]]
        train_only(ctx, params)
        info = train_steps(ctx, params, ctx.params.steps)
        return EditResult(ctx.model, [], info)
