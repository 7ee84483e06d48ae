"""Extending editaudit: a new edit method and a new attack from one file (tests/plugins/nudge.py), loaded as a
plugin. The API validates their params, the worker's job code runs them, their numbers reach the audit; and the
worker's parity check refuses params whose `impl` names nothing it can run."""

import sys

import pytest

from editaudit.contracts.attacks import ATTACK_PARAMS
from editaudit.contracts.edits import EDIT_PARAMS, EditParams, register_edit_params
from editaudit.core import db
from editaudit.worker.ml.parity import check_parity, missing_implementations
from tests.conftest import unscoped

PLUGINS = ["tests.plugins.nudge"]


@pytest.fixture()
def app_settings_extra():
    """The API of these tests loads the plugins through the `plugins` setting (as EDITAUDIT_PLUGINS would);
    afterwards every registration is undone, so other tests see the stock registries."""
    yield {"plugins": PLUGINS}
    EDIT_PARAMS.unregister("bias_nudge")
    ATTACK_PARAMS.unregister("uniform_noise")
    for name in PLUGINS:
        sys.modules.pop(name, None)


def test_a_plugin_method_and_attack_run_end_to_end(edit_factory):
    c = edit_factory.client
    assert "bias_nudge" in {m["method"] for m in c.get("/methods").json()["methods"]}
    job = edit_factory.submit(method="bias_nudge", layers=["fc"], hyperparams={"amount": 50.0}, audit={
        "attacks": [{"name": "uniform_noise", "eps": 0.3, "draws": 2, "eps_sweep": [0.0, 0.6]}], "max_samples": 64})
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["status"] == "succeeded", edit["error"]
    assert edit["hyperparams"] == {"seed": 0, "amount": 50.0}, "stored as validated, defaults included"
    assert edit["info"]["changed_keys"] == ["fc.bias"] and edit["info"]["targets"]
    audit = c.get(f"/audits/{job['audit_id']}").json()
    base, cand = audit["metrics"]["baseline"], audit["metrics"]["candidate"]
    # +50 logits on every class the edit set targets: those predictions win everywhere, so the edit set improves
    # while clean test accuracy collapses, and the audit measures both
    assert cand["edit.accuracy"] > base["edit.accuracy"] and cand["test.accuracy"] < base["test.accuracy"] - 0.2
    assert "test.adv.noise.accuracy" in cand and "test.adv.noise" in audit["curves"]
    assert audit["curves"]["test.adv.noise"]["eps"] == [0.0, 0.3, 0.6]
    assert base["test.adv.noise.accuracy"] <= base["test.accuracy"], "an attack never helps"


@pytest.mark.parametrize("over, field", [
    ({"hyperparams": {"amount": -1}}, "hyperparams.amount"),
    ({"hyperparams": {"amunt": 1}}, "hyperparams.amunt"),
    ({"layers": ["fc", "fc1"]}, "layers"),  # single_layer trait
    ({"layers": []}, "layers"),  # layers trait: required
    ({"audit": {"attacks": [{"name": "uniform_noise", "norm": "2"}]}}, "audit.attacks.0.uniform_noise.norm"),
    ({"audit": {"attacks": [{"name": "uniform_noise", "draws": 0}]}}, "audit.attacks.0.uniform_noise.draws"),
])
def test_plugin_params_are_validated_by_the_api(edit_factory, over, field):
    c = edit_factory.client
    body = {"model_id": edit_factory.model["id"], "method": "bias_nudge", "layers": ["fc"],
            "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test", **over}
    r = c.post("/edits", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"] == field for e in r.json()["errors"]), r.json()
    with unscoped(c.services.sessions)() as s:
        assert s.query(db.Edit).count() == 0


def test_parity_holds_for_the_stock_registries():
    assert missing_implementations() == {"edit methods": [], "attacks": [], "corruptions": []}
    check_parity()


@pytest.mark.parametrize("path, why", [
    ("editaudit.worker.ml.edits.orphan:Orphan", "cannot import 'editaudit.worker.ml.edits.orphan'"),
    ("editaudit.worker.ml.edits.finetune:Orphan", "has no 'Orphan'"),
    ("editaudit.worker.ml.audit.attacks.pgd:PGD", "is not a subclass of EditMethod"),
    ("editaudit.worker.ml.edits.finetune:Finetune", "implements EditMethod[FinetuneParams], not OrphanParams"),
])
def test_parity_fails_for_params_whose_impl_names_nothing_runnable(path, why):
    @register_edit_params("orphan")
    class OrphanParams(EditParams):
        impl = path

    try:
        assert missing_implementations()["edit methods"] == ["orphan"]
        with pytest.raises(RuntimeError, match="orphan") as err:
            check_parity()
        assert "OrphanParams" in str(err.value) and path in str(err.value) and why in str(err.value)
    finally:
        EDIT_PARAMS.unregister("orphan")
    check_parity()


def test_params_without_their_own_impl_are_refused_at_registration():
    from editaudit.contracts.edits import FinetuneParams

    with pytest.raises(ValueError, match="names no implementation"):
        @register_edit_params("stray")
        class StrayParams(FinetuneParams):  # would silently run finetune's code under another name
            pass

    with pytest.raises(ValueError, match="package.module:Class"):
        @register_edit_params("stray")
        class BadPathParams(EditParams):
            impl = "editaudit.worker.ml.edits.finetune.Finetune"

    assert "stray" not in EDIT_PARAMS
