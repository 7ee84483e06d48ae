"""Attack interface: `perturb(model, x, y) -> x_adv` on one batch, on the batch's device, no host round trips.
Implementations register under the name of their params class (editaudit.contracts.attacks)."""

from __future__ import annotations

from typing import Callable

import torch
from pydantic import BaseModel
from torch import nn

from editaudit.contracts.attacks import ATTACK_PARAMS

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, BaseModel, torch.Generator | None], torch.Tensor]


class Attack:
    def __init__(self, params: BaseModel, fn: AttackFn):
        self.params = params
        self.fn = fn

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None):
        return self.fn(model, x, y, self.params, gen)


ATTACKS: dict[str, AttackFn] = {}


def register_attack(name: str):
    def deco(fn: AttackFn) -> AttackFn:
        if name not in ATTACK_PARAMS:
            raise ValueError(f"attack {name!r} has no params class: register one with "
                             "editaudit.contracts.attacks.register_attack_params")
        ATTACKS[name] = fn
        return fn

    return deco
