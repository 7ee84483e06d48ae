"""`editaudit demo`: the whole product in about a minute on a 2-core CPU (docs/benchmarks.md), through the real HTTP
API.

The paper's story on sklearn's digits: 1. train a small CNN (seconds); 2. a procedural texture in the background
(the "snow" of vehicles-on-snow) makes it misread one class; 8 textured exemplars with their clean twins and masks
become the edit set, every textured test digit the generalization set; 3. submit a `rewrite` of the hidden layer
`fc1` (rank 1, closed form) with a PGD + corruption audit and follow its progress; 4. print the audit (edit,
generalization and the untouched clean test split) and 5. the gate verdict.

The demo works from files, exactly as a user would: the model and its spec, the two datasets, the edit request
(`edit.json`, whose `@file` values `editaudit edits submit` uploads) and the gate policy. `--keep DIR` leaves them
in DIR with a README.txt of the commands that run them again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from editaudit import __version__
from editaudit.cli.progress import ProgressReporter
from editaudit.cli.refs import resolve
from editaudit.client import Client
from editaudit.contracts import metrics
from editaudit.contracts.statuses import Status
from editaudit.core.tables import audit_table, render
from editaudit.gate.policy import KINDS

DEMO_POLICY = {"version": 1, "name": "demo", "rules": [
    {"metric": metrics.accuracy("test"), "max_drop": 0.01},
    {"metric": metrics.adv_accuracy("test", "pgd"), "max_drop": 0.02},
    {"metric": metrics.accuracy("edit"), "min": 0.9}]}

# what the demo uses, and what --keep DIR holds afterwards (nothing else)
MODEL, SPEC, EDIT_SET, GENERALIZATION_SET = "model.safetensors", "model.json", "edit-set.npz", "generalization-set.npz"
EDIT_JSON, POLICY, README = "edit.json", "policy.yaml", "README.txt"
ASSETS = (MODEL, SPEC, EDIT_SET, GENERALIZATION_SET)  # made by editaudit.worker.demo_assets
KEEP_FILES = (*ASSETS, EDIT_JSON, POLICY, README)

EDIT_REQUEST = {"model_id": f"@{MODEL}", "method": "rewrite", "layers": ["fc1"],
                "hyperparams": {"rank": 1, "solver": "closed_form"}, "edit_set": f"@{EDIT_SET}",
                "generalization_set": f"@{GENERALIZATION_SET}", "test_set": "builtin:digits-test",
                "audit": {"attacks": [
                    {"id": "pgd", "name": "pgd", "norm": "inf", "eps": 0.05, "steps": 10, "step_size": 0.0125},
                    {"id": "pgd_l2", "name": "pgd", "norm": "2", "eps": 0.5, "steps": 10, "step_size": 0.125}],
                    "corruptions": {"names": "all", "severities": [1, 3, 5]}, "seed": 0}}

README_TEXT = """\
The files `editaudit demo` used (editaudit {version}), to run it again against any server.

  model.safetensors        the digits CNN it trained (editaudit/smallcnn: 1x8x8 inputs, 10 classes)
  model.json               its model spec, uploaded with it
  edit-set.npz             8 textured exemplars of the digit it misreads, with clean twins (x_orig) and masks
  generalization-set.npz   every textured test digit
  edit.json                the edit request: a rank-1 rewrite of fc1 and its audit; each "@file" value is a
                           file of this folder, uploaded by `editaudit edits submit` (an identical upload answers
                           the existing id, so running it twice stores nothing twice)
  policy.yaml              the demo's gate policy

From this folder, with a server running (`editaudit serve` in another terminal, or set EDITAUDIT_URL; set
EDITAUDIT_API_KEY when the server needs a key):

  EDIT=$(editaudit edits submit edit.json --wait -q)     # upload, submit, follow the progress; prints the edit id
  editaudit gate "$EDIT" --policy ./policy.yaml          # the verdict: exit 0 pass, 1 blocked
  AUDIT=$(editaudit audits list --edit-id "$EDIT" -q)
  editaudit audits get "$AUDIT"                          # baseline vs candidate, 95% intervals, p-values
  editaudit audits report "$AUDIT" -o report.html        # every cell and the plots

To promote with this policy, store it on the server first (an admin key):

  editaudit policies create demo policy.yaml
  editaudit promote "$EDIT" --alias production --policy demo
"""


def check_keep_dir(keep: str) -> Path:
    """DIR may be new, empty, or hold a previous demo's files (replaced); anything else is a usage error."""
    d = Path(keep)
    if d.exists() and not d.is_dir():
        raise click.UsageError(f"--keep {keep}: not a folder")
    others = sorted(p.name for p in d.iterdir() if p.name not in KEEP_FILES) if d.is_dir() else []
    if others:
        raise click.UsageError(f"--keep {keep}: the folder holds other files ({', '.join(others[:5])}"
                               f"{', …' if len(others) > 5 else ''}); give a new or empty folder")
    return d


def _dump_yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def write_demo_files(work: Path, epochs: int) -> dict:
    """Train the model and make the scenario (in a subprocess: the CLI never imports torch), and write every file
    the demo uses into `work`; returns the facts to print."""
    with tempfile.TemporaryDirectory(prefix="editaudit-demo-assets-") as tmp:
        subprocess.run([sys.executable, "-m", "editaudit.worker.demo_assets", tmp, "--epochs", str(epochs)],
                       check=True)
        out = Path(tmp)
        facts = json.loads((out / "facts.json").read_text())
        work.mkdir(parents=True, exist_ok=True)
        for name in ASSETS:
            shutil.copyfile(out / name, work / name)
    (work / EDIT_JSON).write_text(json.dumps(EDIT_REQUEST, indent=2) + "\n")
    (work / POLICY).write_text(_dump_yaml(DEMO_POLICY))
    (work / README).write_text(README_TEXT.format(version=__version__))
    return facts


def run_demo(url: str, epochs: int = 4, report: str | None = None, keep: str | None = None,
             key: str | None = None) -> int:
    with Client(url, key=key) as client:
        if keep:
            return _run(client, url, epochs, report, Path(keep), kept=True)
        with tempfile.TemporaryDirectory(prefix="editaudit-demo-") as tmp:
            return _run(client, url, epochs, report, Path(tmp), kept=False)


def _run(client: Client, url: str, epochs: int, report: str | None, work: Path, kept: bool) -> int:
    import yaml

    t0 = time.perf_counter()
    click.echo(f"1/5 training editaudit/smallcnn on builtin:digits-train ({epochs} epochs) ...")
    facts = write_demo_files(work, epochs)
    click.echo(f"    clean test accuracy {facts['clean']:.4f}; with a texture in the background "
               f"{facts['textured']:.4f} (it misreads the texture as strokes)")
    body = json.loads((work / EDIT_JSON).read_text())
    uploaded: list[str] = []
    request = resolve(body, work, client, log=uploaded.append, body_file=work / EDIT_JSON)
    model = client.get_model(request["model_id"])
    generalization = client.get_dataset(request["generalization_set"])
    click.echo(f"2/5 uploaded model {model['id']} (sha256 {model['sha256'][:12]}…); edit set {request['edit_set']}: "
               f"8 textured {facts['edit_class']}s with clean twins and masks (accuracy {facts['edit_before']:.2f}); "
               f"generalization set {generalization['id']}: {generalization['n']} textured test digits")
    job = client.submit_edit(request)
    click.echo(f"3/5 submitted edit {job['id']} (rewrite of fc1, rank 1: texture keys -> clean values); "
               "waiting for the worker ...")
    reporter = ProgressReporter("edit", stream=sys.stdout, every=2.0)
    try:
        edit = client.wait_for_edit(job["id"], timeout=300, poll=0.25, on_progress=reporter)
    finally:
        reporter.close()
    if edit["status"] != Status.succeeded:
        click.echo(f"    edit {edit['status']}: {edit.get('error')}", err=True)
        return 2
    audit = client.get_audit(job["audit_id"])
    where = ""
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        with open(report, "w", encoding="utf-8") as f:
            f.write(client.get_audit_report(audit["id"], "html"))
        where = f"; every cell and the plots: {report}"
    click.echo(f"4/5 audit {audit['id']} on {audit['device']}{where}:\n")
    click.echo(audit_table(audit, headline_only=True))
    policy = yaml.safe_load((work / POLICY).read_text())
    gate = client.gate(job["id"], policy)
    if kept:
        how = f"--policy {work / POLICY}"
    else:
        how = " ".join(f"--{kind.replace('_', '-')} {r['metric']}={r[kind]:g}" for r in policy["rules"]
                       for kind in KINDS if kind in r)
    click.echo(f"\n5/5 gate (editaudit gate {job['id']} {how}):\n")
    click.echo(render(["rule", "metric", "baseline", "candidate", "outcome", "why"],
                      [[r["rule"], r["metric"], r["baseline"], r["candidate"], r["outcome"].upper(), r["reason"]]
                       for r in gate["rules"]], align_right={2, 3}))
    click.echo(f"\nverdict: {gate['verdict'].upper()}   ({time.perf_counter() - t0:.1f}s; server {url})")
    if kept:
        click.echo(f"\nthe files it used are in {work}/ ({', '.join(KEEP_FILES)}); {work / README} says how to run "
                   "them again")
    sys.stdout.flush()
    return 0
