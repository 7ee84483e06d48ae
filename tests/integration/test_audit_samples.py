"""Per-sample results over the API (in-process API and job, SQLite, local store): the job computes its statistics
from the per-sample file it stores, a sharded job gives an unsharded one's numbers, `/samples` lists exactly the
samples an independent evaluation of the downloaded weights finds flipped, a policy re-evaluated from the file
decides as the gate did, and another tenant reads none of it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch

import editaudit
from editaudit.contracts.audit_result import AuditResult, Delta, ModelMetrics
from editaudit.contracts.formats import samples as samples_file
from editaudit.core import db
from editaudit.worker.jobs import run_edit_job
from tests.conftest import SPEC, key_headers, unscoped

AUDIT = {"attacks": [{"id": "fgsm", "name": "fgsm", "eps": 0.1}],
         "corruptions": {"names": ["contrast", "gaussian_noise"], "severities": [3, 5]}, "batch_size": 32}
STABLE = ("metrics", "intervals", "deltas", "curves", "notes", "samples")


def _finished(c, job) -> dict:
    audit = c.get(f"/audits/{job['audit_id']}").json()
    assert audit["status"] == "succeeded", c.get(f"/edits/{job['id']}").json()
    return audit


@pytest.fixture()
def audited(edit_factory):
    """One finished edit of the digits model, audited in shards of 64 samples."""
    c = edit_factory.client
    job = edit_factory.submit(run=False, audit=AUDIT, hyperparams={"steps": 60, "lr": 0.5})
    run_edit_job(c.settings.model_copy(update={"audit_shard_samples": 64}), job["id"])
    return c, job, _finished(c, job)


def test_a_sharded_job_stores_an_unsharded_jobs_numbers_and_the_file_they_came_from(audited, edit_factory):
    c, job, sharded = audited
    with unscoped(c.services.sessions)() as s:
        shards = s.query(db.AuditShard).filter_by(audit_id=job["audit_id"]).all()
        assert len(shards) >= 5 and {r.status for r in shards} == {"succeeded"}
        assert sharded["sections"]["inputs"]["shards"] == len(shards)
        assert not list((c.settings.data_dir / "objects").glob("audit-shards/*/*")), "shard outcomes are dropped"
    again = edit_factory.submit(run=False, audit={**AUDIT, "seed": 0}, hyperparams={"steps": 60, "lr": 0.5})
    run_edit_job(c.settings.model_copy(update={"audit_shard_samples": 10**6}), again["id"])
    whole = _finished(c, again)
    assert whole["sections"]["inputs"]["shards"] == 1
    assert {k: whole[k] for k in STABLE} == {k: sharded[k] for k in STABLE}, "one shard or seven: the same numbers"


def _samples(c, audit_id: str, headers=None, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = {**params, "limit": 7, **({"cursor": cursor} if cursor else {})}
        r = c.get(f"/audits/{audit_id}/samples", params=page, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def test_samples_lists_exactly_what_an_independent_evaluation_of_the_weights_finds(audited, digits_model):
    from editaudit.worker.ml.archs import create_model
    from editaudit.worker.ml.audit.corruptions import corrupt
    from editaudit.worker.ml.data import digits_arrays

    c, job, audit = audited
    edited = safetensors.torch.load(c.get(f"/edits/{job['id']}/weights").content)
    models = [create_model(SPEC, safetensors.torch.load(digits_model[0])).eval(), create_model(SPEC, edited).eval()]
    te = digits_arrays("test")
    ids = audit["samples"]["test"]["ids"]  # the audited samples: the test split less the locality set held out
    x, y = torch.from_numpy(te.x[ids]), torch.from_numpy(te.y[ids])
    with torch.no_grad():
        right = [(m(x).argmax(1) == y).numpy() for m in models]
    expect = {"broken": sorted(np.asarray(ids)[right[0] & ~right[1]].tolist()),
              "fixed": sorted(np.asarray(ids)[~right[0] & right[1]].tolist())}
    assert expect["broken"] or expect["fixed"], "the edit flips something on the clean test split"
    for flipped, want in expect.items():
        got = _samples(c, job["audit_id"], condition="clean", flipped=flipped)
        assert [s["index"] for s in got] == want, flipped
        assert all(s["baseline_correct"] == (flipped == "broken") != s["candidate_correct"] for s in got)
    everything = _samples(c, job["audit_id"], condition="clean")
    assert [s["index"] for s in everything] == sorted(ids)
    # a deterministic corruption, evaluated independently too (contrast draws nothing at random)
    xc = corrupt(x, "contrast", 5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        right = [(m(xc).argmax(1) == y).numpy() for m in models]
    got = _samples(c, job["audit_id"], condition="corruption.contrast.5", flipped="broken")
    assert [s["index"] for s in got] == sorted(np.asarray(ids)[right[0] & ~right[1]].tolist())
    # the kept inputs: PNGs of the first flipped ones, and a clear 404 for the others
    kept = [s for s in _samples(c, job["audit_id"], condition="adv.fgsm") if s["image"]]
    assert kept, "the audit keeps the inputs of flipped samples"
    png = c.get(kept[0]["image"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    missing = c.get(f"/audits/{job['audit_id']}/samples/999999/image", params={"condition": "clean"})
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "index"
    bad = c.get(f"/audits/{job['audit_id']}/samples", params={"condition": "adv.pgd"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "condition"
    assert "adv.fgsm" in bad.json()["detail"], "the valid conditions are named"
    import base64

    for cursor in ("zzz", base64.urlsafe_b64encode(b"sample:18446744073709551616").decode()):
        bad = c.get(f"/audits/{job['audit_id']}/samples", params={"cursor": cursor})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
    bad = c.get(f"/audits/{job['audit_id']}/samples/18446744073709551616/image")
    assert bad.status_code == 422 and "index" in bad.text


def test_a_policy_re_evaluated_from_the_per_sample_file_decides_as_the_gate_did(audited):
    from editaudit.gate.evaluate import evaluate
    from editaudit.gate.policy import load_policy
    from editaudit.worker.ml.audit.outcomes import compare, from_blocks

    c, job, audit = audited
    first = c.get(f"/edits/{job['id']}/gate", params={"policy": "default"}).json()
    data = c.get(f"/audits/{job['audit_id']}/samples.parquet").content
    assert pq.read_table(io.BytesIO(data)).num_rows > 0
    stored = AuditResult.from_document(audit)
    base, cand = from_blocks(samples_file.blocks(samples_file.read(data)))
    recomputed = compare(base, cand)
    again = stored.model_copy(update={"metrics": ModelMetrics.model_validate(recomputed["metrics"]),
                                      "deltas": {k: Delta.model_validate(v) for k, v in recomputed["deltas"].items()}})
    assert again.deltas == stored.deltas and again.metrics == stored.metrics, "the stored numbers, from the file"
    policy = load_policy(Path(editaudit.__file__).parent / "policies" / "default.yaml")
    decided = evaluate(again, policy, tenant="default", datasets=None).as_dict()
    assert decided["verdict"] == first["verdict"]
    assert [(r["metric"], r["outcome"]) for r in decided["rules"] if r["metric"] != "—"] == \
        [(r["metric"], r["outcome"]) for r in first["rules"] if r["metric"] != "—"]


def test_another_tenant_reads_none_of_an_audits_samples(audited):
    c, job, _ = audited
    a = key_headers(c.settings, "default", name="alice")
    b = key_headers(c.settings, "team-b", name="bob")
    base = f"/audits/{job['audit_id']}"
    kept = next(s for s in _samples(c, job["audit_id"], headers=a, condition="adv.fgsm") if s["image"])
    for url in (f"{base}/samples", f"{base}/samples.parquet", kept["image"]):
        assert c.get(url, headers=a).status_code == 200, url
        r = c.get(url, headers=b)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", url
        assert "items" not in r.json() and "index" not in r.text.split("errors")[0], url


def test_the_cli_lists_what_the_edit_fixed_and_downloads_the_file(audited, http_url, tmp_path):
    from tests.integration.test_cli_verbs import editaudit

    c, job, _ = audited
    fixed = [s["index"] for s in _samples(c, job["audit_id"], condition="clean", flipped="fixed")]
    r = editaudit("audits", "samples", job["audit_id"], "--flipped", "fixed", "--json", "--url", http_url)
    assert r.returncode == 0, r.stderr
    assert [s["index"] for s in json.loads(r.stdout)] == fixed
    r = editaudit("audits", "samples", job["audit_id"], "--flipped", "fixed", "--url", http_url)
    assert r.returncode == 0 and f"{len(fixed)} sample(s) of test under clean, fixed" in r.stdout, r.stderr
    r = editaudit("audits", "samples", job["audit_id"], "--url", http_url, "--condition", "adv.nope")
    assert r.returncode == 2 and "adv.fgsm" in r.stderr, (r.returncode, r.stderr)
    out = tmp_path / "s.parquet"
    r = editaudit("audits", "samples", job["audit_id"], "--parquet", str(out), "--url", http_url)
    assert r.returncode == 0 and pq.read_table(out).num_rows > 0, r.stderr


def test_json_is_gzipped_for_clients_that_accept_it_and_downloads_are_not(audited):
    c, job, audit = audited
    raw = c.get(f"/audits/{job['audit_id']}", headers={"Accept-Encoding": "identity"})
    zipped = c.get(f"/audits/{job['audit_id']}", headers={"Accept-Encoding": "gzip"})
    assert raw.headers.get("content-encoding") is None and zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == raw.json() and int(zipped.headers["content-length"]) < len(raw.content) / 3
    weights = c.get(f"/edits/{job['id']}/weights", headers={"Accept-Encoding": "gzip"})
    assert weights.headers.get("content-encoding") is None and weights.headers["x-content-sha256"]


def test_a_shard_that_keeps_failing_fails_the_audit_with_its_reason_after_its_retries(edit_factory, monkeypatch):
    from editaudit.worker.jobs import shards

    c = edit_factory.client
    job = edit_factory.submit(run=False, audit=AUDIT)
    calls: list[dict] = []
    real = shards.evaluate_model

    def flaky(model, splits, cfg, device, tick, spans):
        calls.append(spans)
        if spans.get("test", (0, 0))[0] == 2:  # the shard that starts at the test split's third batch
            raise RuntimeError("this shard's inputs are cursed")
        return real(model, splits, cfg, device, tick, spans)

    monkeypatch.setattr(shards, "evaluate_model", flaky)
    run_edit_job(c.settings.model_copy(update={"audit_shard_samples": 64}), job["id"])
    edit = c.get(f"/edits/{job['id']}").json()
    assert edit["status"] == "failed" and "cursed" in edit["error"] and "after 3 attempt(s)" in edit["error"], edit
    with unscoped(c.services.sessions)() as s:
        rows = {r.index: r for r in s.query(db.AuditShard).filter_by(audit_id=job["audit_id"])}
    bad = next(i for i, r in rows.items() if r.plan["spans"].get("test", [0])[0] == 2)
    assert rows[bad].attempt == 3 and rows[bad].status == "failed"
    assert all(r.attempt == 1 for i, r in rows.items() if i < bad), "the others ran once"
    assert c.get(f"/audits/{job['audit_id']}").json()["status"] == "failed"
