"""Attacks run through the Adversarial Robustness Toolbox (ART) on a `PyTorchClassifier` view of the model:
Auto-PGD, Square, AutoAttack, Carlini-Wagner L2 and DeepFool.

ART works on numpy arrays, so these pay a host round trip per call; the native path (pgd.py) is the fast one.
Whatever an ART attack returns, a perturbation outside the requested eps-ball is reverted to the clean input, so a
robust accuracy is always "accuracy against perturbations of norm <= eps".
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from editaudit.worker.ml.audit.attacks.base import register_attack

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


def _run(attack, model, x, y, norm, eps) -> torch.Tensor:
    if eps == 0:  # the eps-ball is the input itself (ART refuses eps = 0, e.g. at the start of an eps sweep)
        return x.detach()
    x_np = x.detach().cpu().numpy()
    x_adv = attack.generate(x_np, y.detach().cpu().numpy())
    return _within(x, x_adv, norm, eps)


@register_attack("apgd")
def apgd(model, x, y, p, gen=None):
    from art.attacks.evasion import AutoProjectedGradientDescent

    if p.eps == 0:
        return x.detach()
    _seed(p)
    clf = classifier(model, x, _num_classes(model, x))
    atk = AutoProjectedGradientDescent(clf, norm=_ord(p.norm), eps=p.eps, eps_step=2 * p.eps, max_iter=p.steps,
                                       nb_random_init=p.restarts, batch_size=len(x), verbose=False,
                                       loss_type={"ce": "cross_entropy", "dlr": "difference_logits_ratio"}[p.loss])
    return _run(atk, model, x, y, p.norm, p.eps)


@register_attack("square")
def square(model, x, y, p, gen=None):
    from art.attacks.evasion import SquareAttack

    if p.eps == 0:
        return x.detach()
    _seed(p)
    clf = classifier(model, x, _num_classes(model, x))
    atk = SquareAttack(clf, norm=_ord(p.norm), eps=p.eps, max_iter=p.queries, p_init=p.p_init,
                       nb_restarts=p.restarts, batch_size=len(x), verbose=False)
    return _run(atk, model, x, y, p.norm, p.eps)


def autoattack_composition(p, clf, batch_size: int) -> list | None:
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


@register_attack("autoattack")
def autoattack(model, x, y, p, gen=None):
    from art.attacks.evasion import AutoAttack

    if p.eps == 0:
        return x.detach()
    _seed(p)
    clf = classifier(model, x, _num_classes(model, x))
    atk = AutoAttack(clf, norm=_ord(p.norm), eps=p.eps, eps_step=2 * p.eps, batch_size=len(x),
                     attacks=autoattack_composition(p, clf, len(x)))
    return _run(atk, model, x, y, p.norm, p.eps)


@register_attack("cw")
def cw(model, x, y, p, gen=None):
    from art.attacks.evasion import CarliniL2Method

    _seed(p)
    clf = classifier(model, x, _num_classes(model, x))
    atk = CarliniL2Method(clf, confidence=p.confidence, learning_rate=p.learning_rate,
                          binary_search_steps=p.binary_search_steps, max_iter=p.steps, initial_const=p.initial_const,
                          batch_size=len(x), verbose=False)
    return _run(atk, model, x, y, "2", p.eps)


@register_attack("deepfool")
def deepfool(model, x, y, p, gen=None):
    from art.attacks.evasion import DeepFool

    _seed(p)
    clf = classifier(model, x, _num_classes(model, x))
    atk = DeepFool(clf, max_iter=p.steps, epsilon=p.overshoot, nb_grads=min(p.nb_grads, clf.nb_classes),
                   batch_size=len(x), verbose=False)
    return _run(atk, model, x, y, "2", p.eps)
