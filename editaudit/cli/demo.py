"""`editaudit demo`: the whole product in under two minutes on a laptop CPU, through the real HTTP API.

The paper's story on sklearn's digits: 1. train a small CNN (seconds); 2. a procedural texture in the background
(the "snow" of vehicles-on-snow) makes it misread one class; 8 textured exemplars with their clean twins and masks
become the edit set, every textured test digit the generalization set; 3. submit a `rewrite` of the hidden layer
`fc1` (rank 1, closed form) with a PGD + corruption audit and follow its progress; 4. print the audit (edit,
generalization and the untouched clean test split) and 5. the gate verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from editaudit.cli.progress import end_progress, progress_printer
from editaudit.client import Client
from editaudit.contracts import metrics
from editaudit.contracts.statuses import Status
from editaudit.core.tables import audit_table, render
from editaudit.gate.policy import KINDS

DEMO_POLICY = {"version": 1, "name": "demo", "rules": [
    {"metric": metrics.accuracy("test"), "max_drop": 0.01},
    {"metric": metrics.adv_accuracy("test", "pgd"), "max_drop": 0.02},
    {"metric": metrics.accuracy("edit"), "min": 0.9}]}


def _train_demo_model(epochs: int):
    """Returns (safetensors bytes, the texture scenario as npz bytes per split, facts to print). The worker package
    trains them in a subprocess: the CLI never imports torch."""
    with tempfile.TemporaryDirectory(prefix="editaudit-demo-assets-") as tmp:
        subprocess.run([sys.executable, "-m", "editaudit.worker.demo_assets", tmp, "--epochs", str(epochs)],
                       check=True)
        out = Path(tmp)
        sets = {k: (out / f"{k}.npz").read_bytes() for k in ("edit", "generalization")}
        return (out / "model.safetensors").read_bytes(), sets, json.loads((out / "facts.json").read_text())


def run_demo(url: str, epochs: int = 4, report: str | None = None) -> int:
    with Client(url) as client:
        return _run(client, url, epochs, report)


def _run(client: Client, url: str, epochs: int, report: str | None) -> int:
    t0 = time.perf_counter()
    click.echo(f"1/5 training editaudit/smallcnn on builtin:digits-train ({epochs} epochs) ...")
    weights, sets, facts = _train_demo_model(epochs)
    click.echo(f"    clean test accuracy {facts['clean']:.4f}; with a texture in the background "
               f"{facts['textured']:.4f} (it misreads the texture as strokes)")
    model = client.upload_model(weights, facts["spec"])
    edit_set = client.upload_dataset(sets["edit"], filename="textured-exemplars.npz")
    generalization = client.upload_dataset(sets["generalization"], filename="textured-test.npz")
    click.echo(f"2/5 uploaded model {model['id']} (sha256 {model['sha256'][:12]}…); edit set {edit_set['id']}: 8 "
               f"textured {facts['edit_class']}s with clean twins and masks (accuracy {facts['edit_before']:.2f}); "
               f"generalization set {generalization['id']}: {generalization['n']} textured test digits")
    body = {"model_id": model["id"], "method": "rewrite", "layers": ["fc1"],
            "hyperparams": {"rank": 1, "solver": "closed_form"}, "edit_set": edit_set["id"],
            "generalization_set": generalization["id"], "test_set": "builtin:digits-test",
            "audit": {"attacks": [
                {"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 10, "step_size": 0.0125},
                {"id": "pgd_l2", "name": "pgd", "norm": "2", "eps": 0.5, "steps": 10, "step_size": 0.125}],
                "corruptions": {"names": "all", "severities": [1, 3, 5]}, "seed": 0}}
    job = client.submit_edit(body)
    click.echo(f"3/5 submitted edit {job['id']} (rewrite of fc1, rank 1: texture keys -> clean values); "
               "waiting for the worker ...")
    edit = client.wait_for_edit(job["id"], timeout=300, poll=0.25, on_progress=progress_printer())
    end_progress()
    if edit["status"] != Status.succeeded:
        click.echo(f"    edit {edit['status']}: {edit.get('error')}", err=True)
        return 2
    audit = client.get_audit(job["audit_id"])
    where = ""
    if report:
        with open(report, "w", encoding="utf-8") as f:
            f.write(client.get_audit_report(audit["id"], "html"))
        where = f"; every cell and the plots: {report}"
    click.echo(f"4/5 audit {audit['id']} on {audit['device']}{where}:\n")
    click.echo(audit_table(audit, headline_only=True))
    gate = client.gate(job["id"], DEMO_POLICY)
    flags = " ".join(f"--{kind.replace('_', '-')} {r['metric']}={r[kind]:g}" for r in DEMO_POLICY["rules"]
                     for kind in KINDS if kind in r)
    click.echo(f"\n5/5 gate (editaudit gate {job['id']} {flags}):\n")
    click.echo(render(["rule", "metric", "baseline", "candidate", "outcome", "why"],
                      [[r["rule"], r["metric"], r["baseline"], r["candidate"], r["outcome"].upper(), r["reason"]]
                       for r in gate["rules"]], align_right={2, 3}))
    click.echo(f"\nverdict: {gate['verdict'].upper()}   ({time.perf_counter() - t0:.1f}s; server {url})")
    sys.stdout.flush()
    return 0
