"""`finetune_layer`: gradient steps on the parameters of the named layers only."""

from __future__ import annotations

from editaudit.contracts.edits import FinetuneLayerParams
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult
from editaudit.worker.ml.edits.training import layer_params, train_only, train_steps


class FinetuneLayer(EditMethod[FinetuneLayerParams]):
    def apply(self, ctx: EditContext[FinetuneLayerParams]) -> EditResult:
        params = layer_params(ctx)
        train_only(ctx, params)
        return EditResult(ctx.model, [], train_steps(ctx, params, ctx.params.steps))
