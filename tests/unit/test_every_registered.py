"""Every registered attack and every registered corruption runs, through the path the audit takes, on a tiny model
and batch — as tests/unit/test_determinism.py runs every edit method. The lists are read from the registries when
the tests are collected, so a new attack or corruption (in-tree or a plugin loaded before collection) is covered
without editing this file; and a test shows that a typo in a new attack's implementation fails here."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import nn

from editaudit.contracts import audit as audit_contract
from editaudit.contracts.attacks import ATTACK_PARAMS, AttackParams, EpsAttack, register_attack_params
from editaudit.worker.ml.audit.attacks import Attack, make_attack
from editaudit.worker.ml.audit.corruptions import corrupt

EPS_IF_REQUIRED = 0.1  # for an attack whose params have no default radius


@pytest.fixture(scope="module")
def tiny():
    """A 4-class MLP on 3x8x8 images (frozen, eval, as the audit runs it) and 6 images labelled with its own
    predictions, so every attack has correct predictions to break."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def default_params(name: str) -> AttackParams:
    """The attack's params with every default, plus an eps where its params require one."""
    raw: dict = {"name": name}
    eps = ATTACK_PARAMS[name].model_fields.get("eps")
    if eps is not None and eps.is_required():
        raw["eps"] = EPS_IF_REQUIRED
    return ATTACK_PARAMS.parse_tagged(raw)


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run the attack as the audit does (its params' `impl`, resolved by make_attack) and check what any attack
    owes the audit: the input's shape and dtype, finite values in [0,1], within its norm budget where it has one."""
    params = default_params(name)
    x_adv = make_attack(params).perturb(model, x.clone(), y, torch.Generator().manual_seed(0))
    assert isinstance(x_adv, torch.Tensor), f"{name} returned {type(x_adv).__name__}"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device, name
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1, name
    radii = params.radii()
    radius = radii[0] if radii else None
    norm = getattr(params, "norm", None)
    if radius is not None and norm is not None:
        d = (x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
        assert float(size.max()) <= radius * (1 + 1e-4) + 1e-6, (name, float(size.max()), radius)
    return x_adv


@pytest.mark.parametrize("name", ATTACK_PARAMS.names())
def test_every_registered_attack_runs_with_its_defaults(tiny, name):
    run_attack(name, *tiny)


# ------------------------------------------------------------ a new attack with a typo in its implementation


class StepsTypoParams(EpsAttack):
    """Registered only inside the test below."""

    impl = "tests.unit.test_every_registered:StepsTypo"
    name: Literal["steps_typo"] = "steps_typo"
    steps: int = 3


class StepsTypo(Attack[StepsTypoParams]):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        out = x
        for _ in range(self.params.stpes):  # type: ignore[attr-defined]  # the deliberate typo (mypy reports it)
            out = (out + 0.01).clamp(0, 1)
        return out


def test_a_typo_in_a_new_attacks_implementation_fails_the_every_attack_check(tiny):
    register_attack_params(StepsTypoParams)
    try:
        assert "steps_typo" in ATTACK_PARAMS.names(), "collected like any registered attack"
        with pytest.raises(AttributeError, match="stpes"):
            run_attack("steps_typo", *tiny)
    finally:
        ATTACK_PARAMS.unregister("steps_typo")
    assert "steps_typo" not in ATTACK_PARAMS


# ------------------------------------------------------------------------------------------------ corruptions


@pytest.mark.parametrize("name", sorted(audit_contract.CORRUPTIONS))
def test_every_registered_corruption_at_every_severity(name):
    """Every name an audit may ask for (the contracts' list, plugins included) has a worker function, which keeps
    shape and dtype, stays finite in [0,1] and is the same for the same seed."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for severity in range(1, 6):
        a = corrupt(x, name, severity, torch.Generator().manual_seed(5))
        b = corrupt(x, name, severity, torch.Generator().manual_seed(5))
        assert a.shape == x.shape and a.dtype == x.dtype, (name, severity)
        assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1, (name, severity)
        assert torch.equal(a, b), f"{name} severity {severity} differs under the same seed"
