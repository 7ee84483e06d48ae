"""A new attack from one file: its params (torch-free, registered with the contracts) and its implementation
(registered with the worker). `uniform_noise` is random noise in the L-inf ball: a weak, seeded baseline attack."""

from typing import ClassVar, Literal

from pydantic import Field

from editaudit.contracts.attacks import ID_PATTERN, EpsAttack, register_attack_params
from editaudit.worker.ml.audit.attacks.base import register_attack


@register_attack_params
class UniformNoiseParams(EpsAttack):
    native: ClassVar[bool] = True

    id: str = Field("noise", pattern=ID_PATTERN)
    name: Literal["uniform_noise"] = "uniform_noise"
    norm: Literal["inf"] = "inf"
    draws: int = Field(1, ge=1, le=100, description="an input is robust only if every draw leaves it correct")


@register_attack("uniform_noise")
def uniform_noise(model, x, y, p, gen=None):
    import torch

    best = x
    for _ in range(p.draws):
        u = torch.rand(x.shape, generator=gen, device=gen.device if gen is not None else x.device).to(x.device)
        cand = (x + (2 * u - 1) * p.eps).clamp(0, 1)
        with torch.no_grad():
            still = model(best).argmax(1) == y
        best = torch.where(still.view(-1, *([1] * (x.dim() - 1))), cand, best)
    return best
