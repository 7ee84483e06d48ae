"""Attacks run through the Adversarial Robustness Toolbox (ART) on a `PyTorchClassifier` view of the model:
Auto-PGD, Square, AutoAttack, Carlini-Wagner L2 and DeepFool.

ART works on numpy arrays, so these pay a host round trip per call; the native path (pgd.py) is the fast one.
Whatever an ART attack returns, a perturbation outside the requested eps-ball is reverted to the clean input, so a
robust accuracy is always "accuracy against perturbations of norm <= eps".
"""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from editaudit.contracts.attacks import (
    APGDParams,
    AutoAttackParams,
    CWParams,
    DeepFoolParams,
    EpsAttack,
    MinimalL2Attack,
    SquareParams,
)
from editaudit.worker.ml.audit.attacks.base import Attack

logging.getLogger("art").setLevel(logging.WARNING)


def classifier(model, x: torch.Tensor, num_classes: int):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if x.is_cuda else "cpu")


def _num_classes(model, x) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def _seed(p) -> None:
    """ART draws from numpy's global RNG: seed it so ART attacks are repeatable."""
    np.random.seed(p.seed % 2**32)
    torch.manual_seed(p.seed)


def _within(x: torch.Tensor, x_adv: np.ndarray, norm: str, eps: float | None) -> torch.Tensor:
    adv = torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device).clamp(0, 1)
    if eps is None:
        return adv
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    ok = size <= eps * (1 + 1e-4) + 1e-7
    return torch.where(ok.view(-1, *([1] * (x.dim() - 1))), adv, x)


def _ord(norm: str):
    return np.inf if norm == "inf" else 2


P = TypeVar("P", bound=EpsAttack | MinimalL2Attack)


class ARTAttack(Attack[P]):
    """An ART attack: `build(classifier, batch)` makes the ART attack from `self.params`. `perturb` seeds ART, views
    the model as a PyTorchClassifier, runs the attack and keeps only perturbations within `eps` (in the params'
    `norm`; minimal-perturbation attacks measure L2); eps = 0 is the input itself (ART refuses it, yet eps sweeps
    start there)."""

    def build(self, clf, batch: int):  # pragma: no cover - interface
        raise NotImplementedError

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        if p.eps == 0:
            return x.detach()
        _seed(p)
        clf = classifier(model, x, _num_classes(model, x))
        x_adv = self.build(clf, len(x)).generate(x.detach().cpu().numpy(), y.detach().cpu().numpy())
        return _within(x, x_adv, p.norm, p.eps)


class APGD(ARTAttack[APGDParams]):
    def build(self, clf, batch: int):
        from art.attacks.evasion import AutoProjectedGradientDescent

        p = self.params
        return AutoProjectedGradientDescent(clf, norm=_ord(p.norm), eps=p.eps, eps_step=2 * p.eps, max_iter=p.steps,
                                            nb_random_init=p.restarts, batch_size=batch, verbose=False,
                                            loss_type={"ce": "cross_entropy", "dlr": "difference_logits_ratio"}[p.loss])


class Square(ARTAttack[SquareParams]):
    def build(self, clf, batch: int):
        from art.attacks.evasion import SquareAttack

        p = self.params
        return SquareAttack(clf, norm=_ord(p.norm), eps=p.eps, max_iter=p.queries, p_init=p.p_init,
                            nb_restarts=p.restarts, batch_size=batch, verbose=False)


def autoattack_composition(p: AutoAttackParams, clf, batch_size: int) -> list | None:
    """The attack list for `composition`; None lets ART use its default list."""
    if p.composition == "art":
        return None
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    common = dict(norm=_ord(p.norm), eps=p.eps, eps_step=2 * p.eps, max_iter=100, targeted=False, nb_random_init=1,
                  batch_size=batch_size, verbose=False)
    return [AutoProjectedGradientDescent(clf, loss_type="cross_entropy", **common),
            AutoProjectedGradientDescent(clf, loss_type="difference_logits_ratio", **common),
            SquareAttack(clf, norm=_ord(p.norm), eps=p.eps, max_iter=p.square_queries, p_init=0.8, nb_restarts=1,
                         batch_size=batch_size, verbose=False)]


class AutoAttack(ARTAttack[AutoAttackParams]):
    def build(self, clf, batch: int):
        from art.attacks.evasion import AutoAttack as ARTAutoAttack

        p = self.params
        return ARTAutoAttack(clf, norm=_ord(p.norm), eps=p.eps, eps_step=2 * p.eps, batch_size=batch,
                             attacks=autoattack_composition(p, clf, batch))


class CarliniWagner(ARTAttack[CWParams]):
    def build(self, clf, batch: int):
        from art.attacks.evasion import CarliniL2Method

        p = self.params
        return CarliniL2Method(clf, confidence=p.confidence, learning_rate=p.learning_rate,
                               binary_search_steps=p.binary_search_steps, max_iter=p.steps,
                               initial_const=p.initial_const, batch_size=batch, verbose=False)


class DeepFool(ARTAttack[DeepFoolParams]):
    def build(self, clf, batch: int):
        from art.attacks.evasion import DeepFool as ARTDeepFool

        p = self.params
        return ARTDeepFool(clf, max_iter=p.steps, epsilon=p.overshoot, nb_grads=min(p.nb_grads, clf.nb_classes),
                           batch_size=batch, verbose=False)
