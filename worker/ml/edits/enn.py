"""`enn`: a post-hoc ENN-style editor (Sinitsin et al. 2020): steps on a parameter group (`layers`, or the whole
model) until every edit example is classified as its target or `max_steps`, with the locality (stability) term."""

from __future__ import annotations

from editaudit.contracts.edits import ENNParams
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult
from editaudit.worker.ml.edits.training import layer_params, train_only, train_steps


class ENN(EditMethod[ENNParams]):
    def apply(self, ctx: EditContext[ENNParams]) -> EditResult:
        params = layer_params(ctx) if ctx.layers else list(ctx.model.net.parameters())
        train_only(ctx, params)
        return EditResult(ctx.model, [], train_steps(ctx, params, ctx.params.max_steps))
