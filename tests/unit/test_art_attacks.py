"""The ART-backed attacks run through our registry, respect their budgets and are at least as strong as needed."""

import copy

import pytest
import torch

from editaudit.contracts.attacks import parse_attack
from editaudit.worker.ml.data import digits_arrays
from tests.unit.test_attacks import ours as robust

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mxy(digits_wrapped):
    m = copy.deepcopy(digits_wrapped)
    for p in m.parameters():
        p.requires_grad_(False)
    te = digits_arrays("test")
    return m.eval(), torch.from_numpy(te.x[:48]), torch.from_numpy(te.y[:48])


def clean(m, x, y):
    with torch.no_grad():
        return float((m(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("raw", [
    {"name": "apgd", "eps": 0.1, "steps": 20},
    {"name": "apgd", "eps": 0.1, "steps": 20, "loss": "dlr"},
    {"name": "square", "eps": 0.1, "queries": 100},
    {"name": "autoattack", "eps": 0.1, "square_queries": 50},
    {"name": "apgd", "norm": "2", "eps": 1.0, "steps": 20},
])
def test_bounded_art_attacks_stay_in_budget_and_hurt(mxy, raw):
    m, x, y = mxy
    x_adv, acc = robust(m, x, y, raw)
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if raw.get("norm", "inf") == "inf" else d.norm(dim=1)
    assert size.max() <= raw["eps"] * (1 + 1e-4) + 1e-6
    assert acc < clean(m, x, y)


def test_apgd_is_at_least_as_strong_as_pgd10(mxy):
    m, x, y = mxy
    _, pgd = robust(m, x, y, {"name": "pgd", "eps": 0.1, "steps": 10, "step_size": 0.025})
    _, apgd = robust(m, x, y, {"name": "apgd", "eps": 0.1, "steps": 50})
    assert apgd <= pgd + 1 / 48


@pytest.mark.parametrize("name", ["cw", "deepfool"])
def test_minimal_attacks_with_and_without_radius(mxy, name):
    m, x, y = mxy
    extra = {"steps": 10, "binary_search_steps": 3} if name == "cw" else {"steps": 20}
    _, unbounded = robust(m, x, y, {"name": name, **extra})
    x_adv, bounded = robust(m, x, y, {"name": name, "eps": 0.05, **extra})
    assert unbounded <= bounded <= clean(m, x, y)
    assert unbounded < clean(m, x, y), "minimal attacks find adversarials"
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.05 * (1 + 1e-4) + 1e-6


def test_autoattack_compositions(mxy):
    """`standard` is our approximation of APGD-CE, APGD-T, FAB-T, Square; `art` leaves ART's default list (that one
    runs Square with 5000 queries x 5 restarts: minutes even here, so it is not run in the suite)."""
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    from editaudit.worker.ml.audit.attacks.art_attacks import autoattack_composition, classifier

    m, x, _ = mxy
    clf = classifier(m, x, 10)
    std = autoattack_composition(parse_attack({"name": "autoattack", "eps": 0.1}), clf, 16)
    assert [type(a) for a in std] == [AutoProjectedGradientDescent, AutoProjectedGradientDescent, SquareAttack]
    assert [a.loss_type for a in std[:2]] == ["cross_entropy", "difference_logits_ratio"]
    assert autoattack_composition(parse_attack({"name": "autoattack", "composition": "art"}), clf, 16) is None


def test_art_attacks_accept_eps_zero(mxy):
    """eps = 0 opens many eps sweeps; ART itself refuses it, we return the input."""
    m, x, y = mxy
    for name in ("apgd", "square", "autoattack"):
        x_adv, _ = robust(m, x[:8], y[:8], {"name": name, "eps": 0.03}, eps=0.0)
        assert torch.equal(x_adv, x[:8]), name
