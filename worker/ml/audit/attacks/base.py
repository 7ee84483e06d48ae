"""Attack interface: `Attack[ItsParams]`, built with its params, `perturb(model, x, y, gen) -> x_adv` on one batch,
on the batch's device, no host round trips. Its params class names it (`impl = "package.module:Class"` in
editaudit.contracts.attacks); `make_attack(params)` imports it on first use.

This module imports no torch at import time (torch only inside functions and for type checking): a one-file plugin
subclasses `Attack` next to its params and the API, which has no torch, imports that file too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from editaudit.contracts.attacks import AttackParams
from editaudit.worker.ml.impl import resolve

if TYPE_CHECKING:
    import torch
    from torch import nn

P = TypeVar("P", bound=AttackParams)


class Attack(Generic[P]):
    """An attack, generic in its params: `class PGD(Attack[PGDParams])` sees `self.params.steps` typed."""

    def __init__(self, params: P):
        self.params = params

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def attack_class(params: AttackParams | type[AttackParams]) -> type[Attack]:
    """The implementation of these params (their class's `impl`, imported on first use; ImplementationError if it
    cannot be)."""
    return resolve(params if isinstance(params, type) else type(params), Attack)


def make_attack(params: P) -> Attack[P]:
    """The attack these params describe, ready to `perturb`."""
    return attack_class(params)(params)
