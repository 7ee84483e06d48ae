"""The whole path over HTTP with real parts: Postgres + Redis + a Celery worker process + S3 over HTTP (moto),
and the same path on the embedded default (SQLite + filesystem broker + local store). The gate CLI runs against it."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import safetensors.torch
import torch

from editaudit.cli.embedded import EmbeddedServer
from editaudit.client import Client
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

PGD = {"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 10, "step_size": 0.0125, "seed": 0}
PGD_L2 = {"id": "pgd_l2", "name": "pgd", "norm": "2", "eps": 0.5, "steps": 10, "step_size": 0.125}


def run_path(url: str, digits_model, failures_npz) -> dict:
    weights, spec, _ = digits_model
    c = Client(url)
    assert c.healthz() == {"status": "ok", "worker": {"alive": True, "restarts": 0}}  # the embedded server's own worker
    model = c.upload_model(weights, spec)
    ds = c.upload_dataset(failures_npz, filename="failures.npz")
    job = c.submit_edit({"model_id": model["id"], "method": "finetune_layer", "layers": ["fc"],
                         "hyperparams": {"steps": 30, "lr": 0.001}, "edit_set": ds["id"],
                         "test_set": "builtin:digits-test", "audit": {"attacks": [PGD, PGD_L2], "seed": 0}})
    assert job["status"] == "queued"
    seen = []
    edit = c.wait_for_edit(job["id"], timeout=240, on_progress=lambda e: seen.append(e["status"]))
    assert edit["status"] == "succeeded", edit["error"]
    assert "running" in seen, "progress goes through running"
    audit = c.get_audit(job["audit_id"])
    return {"client": c, "model": model, "dataset": ds, "job": job, "edit": edit, "audit": audit}


def check_audit(res, digits_model):
    audit, edit = res["audit"], res["edit"]
    assert audit["status"] == "succeeded" and audit["edit_id"] == edit["id"]
    for side in ("baseline", "candidate"):
        for name in ("test.accuracy", "test.agreement", "edit.accuracy", "test.adv.pgd.accuracy",
                     "test.adv.pgd_l2.accuracy"):
            assert 0.0 <= audit["metrics"][side][name] <= 1.0, name
    assert audit["metrics"]["baseline"]["edit.accuracy"] == 0.0  # the edit set is the model's own mistakes
    assert audit["metrics"]["candidate"]["edit.accuracy"] >= 0.9
    assert set(audit["deltas"]["test.accuracy"]) >= {"value", "ci95", "p_value"}
    assert audit["versions"]["torch"] and audit["config"]["attacks"][0]["id"] == "pgd"
    assert edit["info"]["changed_keys"] == ["fc.weight", "fc.bias"]

    # the edited weights download and load into the same architecture
    buf = io.BytesIO()
    res["client"].download_edit_weights(edit["id"], buf)  # streamed, checked against X-Content-SHA256
    raw = buf.getvalue()
    from editaudit.worker.ml.archs import create_model

    _, spec, _ = digits_model
    edited = create_model(spec, safetensors.torch.load(raw))
    # an independent PGD (ART's) on the downloaded weights reproduces the reported robust accuracy
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    from editaudit.worker.ml.data import digits_arrays

    te = digits_arrays("test")
    scored = audit["samples"]["test"]["ids"] or list(range(len(te.y)))  # the rest, where the edit held some out
    te = type(te)(x=te.x[scored], y=te.y[scored])
    clf = PyTorchClassifier(edited, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    x_adv = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=0.05, eps_step=0.0125, max_iter=10,
                                            num_random_init=0, batch_size=512, verbose=False).generate(te.x, te.y)
    independent = float((clf.predict(x_adv).argmax(1) == te.y).mean())
    reported = audit["metrics"]["candidate"]["test.adv.pgd.accuracy"]
    assert abs(independent - reported) <= 0.01, (independent, reported)
    clean = float((clf.predict(te.x).argmax(1) == te.y).mean())
    assert clean == pytest.approx(audit["metrics"]["candidate"]["test.accuracy"], abs=1e-9)


def gate(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "editaudit.cli.main", "gate", *args, "--url", url],
                          capture_output=True, text=True, timeout=60)


def check_gate(url: str, res) -> None:
    edit_id, audit = res["edit"]["id"], res["audit"]
    base, cand = audit["metrics"]["baseline"], audit["metrics"]["candidate"]
    drop = base["test.accuracy"] - cand["test.accuracy"]
    ok = gate(url, edit_id, "--max-drop", f"test.accuracy={max(drop, 0) + 0.05}", "--min", "edit.accuracy=0.9")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "test.accuracy" in ok.stdout
    blocked = gate(url, edit_id, "--min", f"test.accuracy={cand['test.accuracy'] + 0.01}")
    assert blocked.returncode == 1 and "BLOCKED" in blocked.stdout
    missing_metric = gate(url, edit_id, "--max-drop", "generalization.accuracy=1")  # no generalization set
    assert missing_metric.returncode == 1 and "fail-closed" in missing_metric.stdout
    typo = gate(url, edit_id, "--max-drop", "test.adv.nope.accuracy=1")  # it ran pgd and pgd_l2
    assert typo.returncode == 4 and "test.adv.pgd" in typo.stderr, "an attack id it never ran: a usage error"
    assert gate(url, "no-such-edit", "--min", "edit.accuracy=0.9").returncode == 3
    assert gate(url, edit_id).returncode == 4  # no rules
    assert gate(url, edit_id, "--min", "edit.accuracy").returncode == 4
    assert gate("http://127.0.0.1:9", edit_id, "--min", "edit.accuracy=0.9").returncode == 2
    as_json = gate(url, edit_id, "--min", "edit.accuracy=0.9", "--format", "json")
    assert json.loads(as_json.stdout)["verdict"] == "pass"


def test_production_path_postgres_redis_s3_worker(tmp_path, postgres_url, redis_url, s3_server, digits_model,
                                                   failures_npz):
    endpoint, bucket = s3_server
    settings = make_settings(tmp_path, database_url=postgres_url, broker_url=redis_url,
                             store_url=f"s3://{bucket}/run", s3_endpoint_url=endpoint)
    with EmbeddedServer(settings) as stack:  # API + a real `celery worker` process with the production URLs
        res = run_path(stack.url, digits_model, failures_npz)
        check_audit(res, digits_model)
        check_gate(stack.url, res)
        # a running or queued edit has no audit yet: the gate says so (exit 3)
        c = res["client"]
        job = c.submit_edit({"model_id": res["model"]["id"], "method": "finetune", "edit_set": res["dataset"]["id"],
                             "test_set": "builtin:digits-test",
                             "audit": {"attacks": [{**PGD, "steps": 200}], "seed": 0}})
        assert gate(stack.url, job["id"], "--min", "edit.accuracy=0.5").returncode == 3
        assert c.wait_for_edit(job["id"], timeout=240)["status"] == "succeeded"
    # the rows really are in Postgres and the objects in S3
    import boto3
    from sqlalchemy import create_engine, text

    # the database is shared with other tests of the session (and an identical upload is one row per tenant, so
    # the model may be theirs too): count this test's own edits and the models they made
    edits = (res["job"]["id"], job["id"])
    with create_engine(postgres_url).connect() as conn:
        assert conn.execute(text("select count(*) from edits where status = 'succeeded' and id in (:a, :b)"),
                            dict(zip("ab", edits, strict=True))).scalar() == 2
        assert conn.execute(text("select count(*) from models where edit_id in (:a, :b) and parent_model_id = :m"),
                            {**dict(zip("ab", edits, strict=True)), "m": res["model"]["id"]}).scalar() == 2
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert sum(k.startswith("run/models/") for k in keys) == 3 and sum(k.startswith("run/datasets/") for k in keys) == 1


def test_embedded_path_sqlite_filesystem_broker_worker(tmp_path, digits_model, failures_npz):
    settings = make_settings(tmp_path)
    with EmbeddedServer(settings) as stack:
        res = run_path(stack.url, digits_model, failures_npz)
        check_audit(res, digits_model)
        # a failing edit carries a readable error and stores nothing (the trust region off: it would undo the
        # exploding steps and stop the edit instead)
        c = res["client"]
        job = c.submit_edit({"model_id": res["model"]["id"], "method": "finetune", "edit_set": res["dataset"]["id"],
                             "hyperparams": {"lr": 10.0, "steps": 50, "optimizer": "sgd", "max_locality_change": 1.0},
                             "test_set": "builtin:digits-test"})
        edit = c.wait_for_edit(job["id"], timeout=120)
        assert edit["status"] == "failed" and ("NaN" in edit["error"] or "lr" in edit["error"])
        assert edit["edited_model_id"] is None
        assert c.get_audit(job["audit_id"])["status"] == "failed"
        assert gate(stack.url, job["id"], "--min", "edit.accuracy=0.5").returncode == 3
    assert (tmp_path / "editaudit.db").exists()
