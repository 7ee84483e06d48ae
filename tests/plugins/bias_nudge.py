"""A new edit method from one file: its params (torch-free, what the API validates) and its implementation (the
worker's), each behind its registry. `bias_nudge` raises one linear layer's bias for every class the edit set
targets by `amount` logits — crude, but a real edit whose effect an audit can measure."""

from typing import ClassVar

from pydantic import Field

from editaudit.contracts.edits import EditParams, register_edit_params
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult, register_edit


@register_edit_params("bias_nudge")
class BiasNudgeParams(EditParams):
    layers: ClassVar = "required"
    single_layer: ClassVar = True

    amount: float = Field(1.0, gt=0, le=100, description="logits added to each targeted class")


@register_edit("bias_nudge")
class BiasNudge(EditMethod):
    def apply(self, ctx: EditContext) -> EditResult:
        import torch

        layer = dict(ctx.model.net.named_modules())[ctx.layer]
        targets = sorted(set(ctx.edit_set.y.tolist()))
        with torch.no_grad():
            layer.bias[targets] += ctx.params.amount
        return EditResult(ctx.model, [], {"targets": targets})
