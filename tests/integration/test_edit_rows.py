"""An edit row says exactly what ran: hyperparameters are stored as validated, defaults included (nested 1-LI base
edits too), so a later change of a default cannot change what an old row means."""

from editaudit.contracts.edits import FinetuneLayerParams, LowRankParams


def test_hyperparams_are_stored_with_their_defaults(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, hyperparams={"steps": 3})
    stored = c.get(f"/edits/{job['id']}").json()["hyperparams"]
    assert stored == FinetuneLayerParams(steps=3).model_dump(mode="json")
    assert stored["lr"] == 1e-3 and stored["optimizer"] == "adam" and stored["seed"] == 0


def test_a_nested_base_edit_is_stored_with_its_defaults(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(run=False, method="interpolate", layers=["fc"], hyperparams={
        "base": {"method": "low_rank", "hyperparams": {"rank": 2}}, "alpha": {"mode": "fixed", "alpha": 0.5}})
    stored = c.get(f"/edits/{job['id']}").json()["hyperparams"]
    assert stored["base"] == {"method": "low_rank", "hyperparams": LowRankParams(rank=2).model_dump(mode="json")}
    assert stored["alpha"]["target"] is None and stored["alpha"]["gain_share"] == 0.8 and stored["base_edit_id"] is None


def test_the_methods_catalog_lists_traits_and_schemas(api_client):
    methods = {m["method"]: m for m in api_client.get("/methods").json()["methods"]}
    assert {"finetune", "finetune_layer", "enn", "low_rank", "rewrite", "interpolate"} <= set(methods)
    assert methods["rewrite"]["traits"]["needs_x_orig"] and methods["rewrite"]["traits"]["ranked"]
    assert methods["rewrite"]["traits"]["dataset_fields"] == {"reference_set": "reference"}
    assert methods["interpolate"]["traits"]["audit_sections"] == ["alpha_curve", "mli"]
    assert "rank" in methods["low_rank"]["params_schema"]["properties"]


def test_a_layer_field_takes_a_block_and_is_stored_resolved(edit_factory):
    """`from_layer` names one module: a leaf, or a block's path (everything from it to the output trains)."""
    c = edit_factory.client
    job = edit_factory.submit(run=False, method="finetune", layers=[], hyperparams={"from_layer": "features"})
    assert c.get(f"/edits/{job['id']}").json()["hyperparams"]["from_layer"] == "features"
    r = c.post("/edits", json={"model_id": edit_factory.model["id"], "method": "finetune", "layers": [],
                               "edit_set": edit_factory.dataset["id"], "test_set": "builtin:digits-test",
                               "hyperparams": {"from_layer": "features.*"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "hyperparams.from_layer"
