"""`finetune_layer`: gradient steps on the parameters of the named layers only."""

from __future__ import annotations

from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, register_edit
from editaudit.worker.ml.edits.training import layer_params, train_only, train_steps


@register_edit("finetune_layer")
class FinetuneLayer(EditMethod):
    def apply(self, ctx: EditContext) -> EditResult:
        params = layer_params(ctx)
        train_only(ctx, params)
        return EditResult(ctx.model, [], train_steps(ctx, params, ctx.params.steps))
