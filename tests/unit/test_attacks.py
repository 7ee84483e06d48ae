"""Our native PGD/FGSM against ART's implementations on the same model and inputs."""

import numpy as np
import pytest
import torch

from editaudit.contracts.attacks import parse_attack
from editaudit.worker.ml.audit.attacks import make_attack
from editaudit.worker.ml.data import digits_arrays


@pytest.fixture(scope="module")
def model_and_data(digits_wrapped):
    te = digits_arrays("test")
    return digits_wrapped, torch.from_numpy(te.x), torch.from_numpy(te.y)


def ours(model, x, y, raw, eps: float | None = None):
    """`eps` overrides the radius as an eps sweep does (0 is a sweep point, never a requested radius)."""
    p = parse_attack(raw)
    p = p if eps is None else p.at_eps(eps)
    x_adv = make_attack(p).perturb(model, x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x_adv, float((model(x_adv).argmax(1) == y).float().mean())


def art_classifier(model, x):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


@pytest.mark.parametrize("norm,eps,step", [("inf", 0.05, 0.0125), ("inf", 0.1, 0.025), ("2", 0.5, 0.125),
                                           ("2", 1.0, 0.25)])
def test_pgd_matches_art_within_one_point(model_and_data, norm, eps, step):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    model, x, y = model_and_data
    x_adv, acc = ours(model, x, y, {"name": "pgd", "norm": norm, "eps": eps, "steps": 10, "step_size": step})
    art = ProjectedGradientDescentPyTorch(art_classifier(model, x), norm=np.inf if norm == "inf" else 2, eps=eps,
                                          eps_step=step, max_iter=10, num_random_init=0, batch_size=512,
                                          verbose=False)
    x_art = art.generate(x.numpy(), y.numpy())
    with torch.no_grad():
        acc_art = float((model(torch.from_numpy(x_art)).argmax(1) == y).float().mean())
    clean = float((model(x).argmax(1) == y).float().mean())
    assert acc < clean - 0.05, "the attack must actually hurt"
    assert abs(acc - acc_art) <= 0.01, (acc, acc_art)
    # perturbation budget respected
    d = (x_adv - x).flatten(1)
    assert (d.abs().max(1).values if norm == "inf" else d.norm(dim=1)).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_fgsm_matches_art(model_and_data):
    from art.attacks.evasion import FastGradientMethod

    model, x, y = model_and_data
    _, acc = ours(model, x, y, {"name": "fgsm", "eps": 0.1})
    x_art = FastGradientMethod(art_classifier(model, x), norm=np.inf, eps=0.1, batch_size=512).generate(
        x.numpy(), y.numpy())
    with torch.no_grad():
        acc_art = float((model(torch.from_numpy(x_art)).argmax(1) == y).float().mean())
    assert abs(acc - acc_art) <= 0.01, (acc, acc_art)


def test_random_start_is_seeded(model_and_data):
    model, x, y = model_and_data
    raw = {"name": "pgd", "eps": 0.05, "steps": 3, "random_start": True}
    a, _ = ours(model, x[:64], y[:64], raw)
    b, _ = ours(model, x[:64], y[:64], raw)
    assert torch.equal(a, b)


def test_a_requested_radius_must_be_positive():
    for name in ("pgd", "fgsm", "apgd", "square", "autoattack"):
        with pytest.raises(ValueError, match="greater than 0"):
            parse_attack({"name": name, "eps": 0.0})
    assert parse_attack({"name": "pgd", "eps": 0.03, "eps_sweep": [0.0, 0.1]}).eps_sweep == [0.0, 0.1]


def test_zero_eps_changes_nothing(model_and_data):
    model, x, y = model_and_data
    x_adv, _ = ours(model, x[:32], y[:32], {"name": "pgd", "eps": 0.03, "steps": 2}, eps=0.0)
    assert torch.equal(x_adv, x[:32])
