"""Audit rows and the typed result over HTTP: a finished audit's row holds its result without the config (the
`config` column is the only copy), a row stored in the shape of before still loads through the API, the reports and
the gate, and migration 0009 drops the copy of the config old rows carried (and puts it back on downgrade)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from editaudit.contracts.audit_result import RESULT_SCHEMA_VERSION
from editaudit.core.db import engine_for

V1 = json.loads((Path(__file__).parents[1] / "data" / "audit_result_v1.json").read_text())
AUDITS = sa.table("audits", sa.column("id", sa.String), sa.column("status", sa.String), sa.column("config", sa.JSON),
                  sa.column("result", sa.JSON), sa.column("versions", sa.JSON),
                  sa.column("finished_at", sa.DateTime(timezone=True)))
EDITS = sa.table("edits", sa.column("id", sa.String), sa.column("status", sa.String))


def conforms(client, audit: dict) -> None:
    """The audit JSON is what /openapi.json says GET /audits/{id} answers (AuditOut, typed by the contract)."""
    import jsonschema

    schema = client.get("/openapi.json").json()
    jsonschema.Draft202012Validator({"$ref": "#/components/schemas/AuditOut", "components": schema["components"]}
                                    ).validate(audit)


def _row(url: str, audit_id: str) -> dict:
    with engine_for(url).connect() as conn:
        return conn.execute(sa.select(AUDITS).where(AUDITS.c.id == audit_id)).mappings().one()


def test_a_finished_audit_stores_its_result_without_the_config(edit_factory):
    c = edit_factory.client
    job = edit_factory.submit(audit={"attacks": [{"name": "pgd", "eps": 0.05, "steps": 2}], "max_samples": 30})
    row = _row(c.settings.resolved_database_url, job["audit_id"])
    assert row["status"] == "succeeded" and "config" not in row["result"]
    assert row["result"]["schema_version"] == RESULT_SCHEMA_VERSION
    assert row["config"]["attacks"][0] == {"id": "pgd", "name": "pgd", "seed": 0, "norm": "inf", "eps": 0.05,
                                           "eps_sweep": None, "steps": 2, "step_size": None, "random_start": False,
                                           "restarts": 1}, "the resolved config, defaults included, once"
    audit = c.get(f"/audits/{job['audit_id']}").json()
    assert audit["config"] == row["config"] and audit["schema_version"] == RESULT_SCHEMA_VERSION
    assert audit["samples"]["test"]["held_out"]["for"] == ["locality"], "the default edit held out its locality set"
    conforms(c, audit)
    queued = edit_factory.submit(run=False, audit={"attacks": []})
    conforms(c, c.get(f"/audits/{queued['audit_id']}").json())


def test_a_row_of_before_loads_through_the_api_the_reports_and_the_gate(edit_factory):
    c = edit_factory.client
    url = c.settings.resolved_database_url
    job = edit_factory.submit(run=False, audit=V1["config"])
    old = {**V1, "config": {**V1["config"], "max_samples": 999}}  # its stale copy: the column is what ran
    with engine_for(url).begin() as conn:
        conn.execute(AUDITS.update().where(AUDITS.c.id == job["audit_id"]).values(
            status="succeeded", result=old, versions={"editaudit": "0.1.0"}, finished_at=sa.func.now()))
        conn.execute(EDITS.update().where(EDITS.c.id == job["id"]).values(status="succeeded"))

    r = c.get(f"/audits/{job['audit_id']}")
    assert r.status_code == 200, r.text
    audit = r.json()
    assert audit["config"]["max_samples"] == 40 and audit["schema_version"] == RESULT_SCHEMA_VERSION
    assert audit["metrics"] == V1["metrics"] and audit["deltas"]["test.adv.pgd.success_rate"]["n"] == \
        V1["deltas"]["test.adv.pgd.success_rate"]["n"]
    assert audit["samples"]["test"]["held_out"]["for"] == V1["samples"]["test"]["held_out"]["for"]
    assert audit["mli"]["monotone"] == V1["mli"]["monotone"] and audit["alpha_curve"] == V1["alpha_curve"]
    assert audit["sections"] is None
    conforms(c, audit)

    md = c.get(f"/audits/{job['audit_id']}/report.md")
    assert md.status_code == 200 and "Attacks: pgd (pgd: Linf, eps 0.05, 3 steps, travel 2.5 x eps)" in md.text
    assert c.get(f"/audits/{job['audit_id']}/report.html").status_code == 200
    assert c.get(f"/audits/{job['audit_id']}/report.json").json()["audit"]["config"]["max_samples"] == 40

    policy = {"version": 1, "requires": {"attacks": [{"name": "apgd", "min_travel": 3}]},
              "rules": [{"attack": {"name": "apgd", "min_travel": 3}, "max_drop": 1.0}]}
    gate = c.post("/gate", json={"edit_id": job["id"], "policy": policy}).json()
    assert gate["rules"][0]["outcome"] == "pass", "a two-step APGD travels 4 eps by its own rule"
    assert gate["rules"][1]["metric"] == "test.adv.apgd.accuracy"
    default = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"}).json()
    assert default["verdict"] == "fail" and default["rules"][0]["outcome"] == "fail"
    assert "pgd (pgd: Linf, eps 0.05, 3 steps" in default["rules"][0]["reason"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        from tests.conftest import postgres_database

        with postgres_database() as url:
            yield url


def test_migration_0009_drops_the_copy_of_the_config(empty_database):
    from alembic import command

    from editaudit.core.migrate import alembic_config, upgrade

    url = empty_database
    upgrade(url, "0008")
    column = {**V1["config"], "max_samples": 40}
    with sa.create_engine(url).begin() as conn:
        if conn.dialect.name == "postgresql":  # rows without their model and dataset rows: no foreign-key checks
            conn.execute(sa.text("SET session_replication_role = replica"))
        conn.execute(sa.text("INSERT INTO edits (id, model_id, method, layers, hyperparams, edit_set, test_set, status,"
                             " progress, created_at, sweep, tenant, attempt) VALUES ('e1', 'm1', 'finetune_layer', "
                             "'[]', '{}', 'd1', 'builtin:digits-test', 'succeeded', '{}', CURRENT_TIMESTAMP, false, "
                             "'default', 1)"))
        insert = sa.text("INSERT INTO audits (id, edit_id, status, config, result, created_at, tenant) VALUES "
                         "(:id, 'e1', 'succeeded', :config, :result, CURRENT_TIMESTAMP, 'default')").bindparams(
            sa.bindparam("config", type_=sa.JSON), sa.bindparam("result", type_=sa.JSON(none_as_null=True)))
        for audit_id, result in (("a1", V1), ("a2", None)):
            conn.execute(insert, {"id": audit_id, "config": column, "result": result})
    upgrade(url, "0009")
    migrated = _row(url, "a1")["result"]
    assert "config" not in migrated and migrated == {k: v for k, v in V1.items() if k != "config"}
    assert _row(url, "a2")["result"] is None
    command.downgrade(alembic_config(url), "0008")
    assert _row(url, "a1")["result"] == {**migrated, "config": column}
