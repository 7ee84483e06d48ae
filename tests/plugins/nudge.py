"""A plugin from one file: a new edit method (`bias_nudge`) and a new attack (`uniform_noise`).

Each is one registration: its params class (torch-free, what the API validates) names its implementation by import
path (`impl`), and the implementation, generic in those params, sits below it. Nothing here imports torch at module
top, so the API, which has no torch, imports this file as it is (`EDITAUDIT_PLUGINS='["tests.plugins.nudge"]'`);
the worker imports the implementations when it first runs them (and checks every path when it starts).

`bias_nudge` raises one linear layer's bias for every class the edit set targets by `amount` logits: crude, but a
real edit whose effect an audit can measure. `uniform_noise` is random noise in the L-inf ball: a weak, seeded
baseline attack."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from editaudit.contracts.attacks import ID_PATTERN, EpsAttack, register_attack_params
from editaudit.contracts.edits import EditParams, register_edit_params
from editaudit.worker.ml.audit.attacks.base import Attack
from editaudit.worker.ml.edits.base import EditContext, EditMethod, EditResult

if TYPE_CHECKING:
    import torch
    from torch import nn


@register_edit_params("bias_nudge")
class BiasNudgeParams(EditParams):
    impl = "tests.plugins.nudge:BiasNudge"
    layers = "required"
    single_layer = True

    amount: float = Field(1.0, gt=0, le=100, description="logits added to each targeted class")


class BiasNudge(EditMethod[BiasNudgeParams]):
    def apply(self, ctx: EditContext[BiasNudgeParams]) -> EditResult:
        import torch

        layer = dict(ctx.model.net.named_modules())[ctx.layer]
        targets = sorted(set(ctx.edit_set.y.tolist()))
        with torch.no_grad():
            layer.bias[targets] += ctx.params.amount
        return EditResult(ctx.model, [], {"targets": targets})


@register_attack_params
class UniformNoiseParams(EpsAttack):
    impl = "tests.plugins.nudge:UniformNoise"
    native: ClassVar[bool] = True

    id: str = Field("noise", pattern=ID_PATTERN)
    name: Literal["uniform_noise"] = "uniform_noise"
    norm: Literal["inf"] = "inf"
    draws: int = Field(1, ge=1, le=100, description="an input is robust only if every draw leaves it correct")


class UniformNoise(Attack[UniformNoiseParams]):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        import torch

        p, best = self.params, x
        for _ in range(p.draws):
            u = torch.rand(x.shape, generator=gen, device=gen.device if gen is not None else x.device).to(x.device)
            cand = (x + (2 * u - 1) * p.eps).clamp(0, 1)
            with torch.no_grad():
                still = model(best).argmax(1) == y
            best = torch.where(still.view(-1, *([1] * (x.dim() - 1))), cand, best)
        return best
