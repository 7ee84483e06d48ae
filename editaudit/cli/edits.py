"""`editaudit edits submit|get|list|wait|cancel`: queue an edit (and its audit), follow it, find it again."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from editaudit.cli.common import (
    EXIT_BLOCKED,
    EXIT_OK,
    client,
    document_command,
    document_options,
    fetch,
    handled,
    key_value_table,
    list_command,
    read_json,
    show_document,
)
from editaudit.cli.progress import ProgressReporter, every_option
from editaudit.client import Client
from editaudit.client.types import Edit
from editaudit.contracts.statuses import Status

SUBMIT_EXIT = ("Exit codes: 0 queued (with --wait: succeeded), 1 the edit failed or was canceled, 2 error (a "
               "problem with the request, an unreachable server), 3 a model or dataset it names does not exist, "
               "or --wait timed out, 4 usage (unreadable JSON, a referenced file that does not exist).")
WAIT_EXIT = ("Exit codes: 0 succeeded, 1 failed or canceled, 2 error, 3 no such edit or --timeout reached, 4 usage.")

idempotency_option = click.option("--idempotency-key", default=None, metavar="K",
                                  help="Retrying with the same key returns the first answer.")
STATUSES = [s.value for s in Status]


@click.group()
def edits():
    """Edits: submit one with its audit, follow its progress, list and cancel them."""


def _wait_options(fn):
    fn = every_option(fn)
    fn = click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05), metavar="SECONDS",
                      help="Seconds between polls while waiting.")(fn)
    return click.option("--timeout", default=3600.0, show_default=True, type=click.FloatRange(0), metavar="SECONDS",
                        help="Seconds --wait waits at most (then exit 3).")(fn)


def wait_for(api: Client, edit_id: str, timeout: float, poll: float, every: float) -> Edit:
    """Follow an edit to a final status, with progress on stderr (a bar on a terminal, a line every `every` s in a
    log)."""
    reporter = ProgressReporter("edit", every=every)
    try:
        return api.wait_for_edit(edit_id, timeout=timeout, poll=poll, on_progress=reporter)
    finally:
        reporter.close()


@edits.command("submit", epilog=SUBMIT_EXIT)
@click.argument("body", metavar="BODY.json|-")
@click.option("--wait", is_flag=True, help="Follow the edit until it finishes, with progress on stderr.")
@_wait_options
@idempotency_option
@document_options("the answer (with --wait: the finished edit)", quiet=True)
def submit(body, wait, timeout, poll, progress_every, idempotency_key, fmt, output, quiet, url, key):
    """Submit the edit request in BODY.json ('-': stdin; its @files are then relative to the working directory).

    A value of model_id, edit_set, generalization_set, test_set (and of hyperparams' reference_set,
    locality_set) that starts with @ is a file next to BODY.json, uploaded first (an identical file again is not
    stored twice): a dataset (.npz, .safetensors), or for model_id a safetensors checkpoint whose spec is the
    .json file of the same name (@model.safetensors + model.json). What was uploaded is printed on stderr.

    \b
    {"model_id": "@model.safetensors", "method": "rewrite", "layers": ["fc1"],
     "hyperparams": {"rank": 1}, "edit_set": "@edit-set.npz",
     "test_set": "builtin:digits-test",
     "audit": {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.03}]}}

    Prints the edit's id and its audit's (-q: the edit's id alone; --json: the API's answer; with --wait, the
    finished edit).

    \b
    Examples:
      editaudit edits submit edit.json --wait
      EDIT=$(editaudit edits submit edit.json --wait -q)
    """
    from editaudit.cli.refs import references, resolve

    request = read_json(body if body == "-" else f"@{body}", "BODY")
    if not isinstance(request, dict):
        raise click.UsageError("BODY must be a JSON object")
    if body == "-" and references(request):
        base, body_file = Path.cwd(), None  # from stdin: references are relative to the working directory
    else:
        base, body_file = Path(body).parent, Path(body)
    with handled(url), client(url, key) as api:
        request = resolve(request, base, api, log=lambda m: click.echo(m, err=True), body_file=body_file)
        job = api.submit_edit(request, idempotency_key=idempotency_key)
        if not wait:
            show_document(job, fmt, output, lambda: _job_line(job), job["id"] if quiet else None)
            return
        click.echo(f"edit {job['id']} queued (audit {job['audit_id']}); waiting ...", err=True)
        edit = wait_for(api, job["id"], timeout, poll, progress_every)
    show_document(edit, fmt, output, lambda: _outcome(edit), edit["id"] if quiet else None)
    sys.exit(EXIT_OK if edit["status"] == Status.succeeded else EXIT_BLOCKED)


def _job_line(j: Mapping[str, Any]) -> str:
    subs = f"; {len(j['sub_edits'])} sub-edits" if j.get("sub_edits") else ""
    return f"edit {j['id']} {j['status']} (audit {j['audit_id']}{subs})"


def _outcome(edit: Mapping[str, Any]) -> str:
    if edit["status"] == Status.succeeded:
        return f"edit {edit['id']} succeeded: edited model {edit['edited_model_id']}; audit {edit['audit_id']}"
    return f"edit {edit['id']} {edit['status']}: {edit.get('error') or 'no reason recorded'}"


@edits.command("wait", epilog=WAIT_EXIT)
@click.argument("edit_id")
@_wait_options
@document_options("the finished edit", quiet=True)
def wait_(edit_id, timeout, poll, progress_every, fmt, output, quiet, url, key):
    """Follow EDIT_ID until it succeeds, fails or is canceled, with progress on stderr (a bar on a terminal, a
    line every --progress-every seconds in a log)."""
    edit = fetch(url, key, lambda api: wait_for(api, edit_id, timeout, poll, progress_every))
    show_document(edit, fmt, output, lambda: _outcome(edit), edit["id"] if quiet else None)
    sys.exit(EXIT_OK if edit["status"] == Status.succeeded else EXIT_BLOCKED)


def edit_table(edit: Mapping[str, Any]) -> str:
    p = edit.get("progress") or {}
    rows = [("id", edit["id"]), ("status", edit["status"]), ("method", edit["method"]),
            ("layers", ", ".join(edit["layers"]) or "-"), ("model", edit["model_id"]),
            ("edited model", edit["edited_model_id"] or "-"), ("audit", edit["audit_id"]),
            ("progress", f"{p.get('stage')} {p.get('done')}/{p.get('total')}" if p else "-"),
            ("created", edit["created_at"]), ("finished", edit["finished_at"] or "-")]
    if edit.get("reverted_at"):
        rows.append(("reverted", edit["reverted_at"]))
    if edit.get("error"):
        rows.append(("error", edit["error"]))
    for sub in edit.get("sub_edits") or []:
        rows.append((f"sub-edit {sub['layer']}", f"{sub['id']} (audit {sub['audit_id']})"))
    return key_value_table(rows)


get = document_command(edits, "get", Client.get_edit, edit_table,
                       "Show an edit: status, progress, the model it made, its audit.", argument="edit_id")

status_option = click.option("--status", type=click.Choice(STATUSES), default=None)
model_id_option = click.option("--model-id", default=None, help="Only edits of this model.")
list_ = list_command(
    edits, Client.iter_edits, ["id", "status", "method", "layers", "model", "edited model", "created"],
    lambda e: [e["id"], e["status"], e["method"], ",".join(e["layers"]) or "-", e["model_id"],
               e["edited_model_id"] or "-", e["created_at"][:19]],
    "The tenant's edits, newest first, as a table (--json: a JSON list; -q: the ids).",
    filters=[status_option, model_id_option,
             click.option("--method", default=None, help="Only edits by this method (finetune_layer, rewrite, ...).")])
cancel = document_command(
    edits, "cancel", Client.cancel_edit, lambda edit: f"edit {edit['id']} {edit['status']}",
    "Cancel a queued or running edit (a running one stops at its next batch and stores nothing); exit 3 when it\n"
    "has already finished.", argument="edit_id")

