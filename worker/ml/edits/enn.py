"""`enn`: a post-hoc ENN-style editor (Sinitsin et al. 2020): steps on a parameter group (`layers`, or the whole
model) until every edit example is classified as its target or `max_steps`, with the locality (stability) term."""

from __future__ import annotations

from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, register_edit
from editaudit.worker.ml.edits.training import layer_params, train_only, train_steps


@register_edit("enn")
class ENN(EditMethod):
    def apply(self, ctx: EditContext) -> EditResult:
        params = layer_params(ctx) if ctx.layers else list(ctx.model.net.parameters())
        train_only(ctx, params)
        return EditResult(ctx.model, [], train_steps(ctx, params, ctx.params.max_steps))
