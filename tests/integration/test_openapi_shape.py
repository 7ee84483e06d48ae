"""Every JSON route declares its response model (downloads and reports return raw bodies), read from the OpenAPI
schema the API serves; the schema lists the registered attacks."""

RAW_BODIES = {"/models/{model_id}/weights", "/edits/{edit_id}/weights", "/edits/{edit_id}/delta",
              "/audits/{audit_id}/report.{fmt}", "/studies/{study_id}/report.{fmt}", "/metrics",
              "/audits/{audit_id}/samples.parquet", "/audits/{audit_id}/samples/{index}/image"}


def test_every_json_route_has_a_response_model(api_client):
    paths = api_client.get("/openapi.json").json()["paths"]
    ops = [(method, path, op) for path, item in paths.items() for method, op in item.items()]
    assert len(ops) >= 25
    untyped = []
    for method, path, op in ops:
        status, ok = next((k, v) for k, v in op["responses"].items() if k.startswith("2"))
        schema = ok.get("content", {}).get("application/json", {}).get("schema")
        if path not in RAW_BODIES and not schema and status != "204":  # 204: no content to type
            untyped.append(f"{method.upper()} {path}")
    assert untyped == []


def test_the_schema_lists_the_registered_attacks(api_client):
    text = str(api_client.get("/openapi.json").json())
    for name in ("PGDParams", "AutoAttackParams", "DeepFoolParams"):
        assert name in text, name
