"""`editaudit edits submit|get|list|cancel`: queue an edit (and its audit), follow it, find it again."""

from __future__ import annotations

import sys
from itertools import islice

import click

from editaudit.cli.common import (EXIT_BLOCKED, EXIT_CODES_HELP, EXIT_OK, api_options, client, echo_json, handled,
                                  json_option, read_json, show)
from editaudit.cli.progress import end_progress, progress_printer
from editaudit.cli.uploads import idempotency_option, quiet_option
from editaudit.contracts.statuses import Status
from editaudit.core.tables import render

SUBMIT_EXIT = ("Exit codes: 0 queued (with --wait: succeeded), 1 the edit failed or was canceled, 2 error (a "
               "problem with the request, an unreachable server), 3 a model or dataset it names does not exist, "
               "or --wait timed out, 4 usage.")


@click.group()
def edits():
    """Edits: submit one with its audit, follow its progress, list and cancel them."""


@edits.command("submit", epilog=SUBMIT_EXIT)
@click.argument("body", metavar="BODY.json|-")
@click.option("--wait", is_flag=True, help="Follow the edit until it finishes, with a progress bar on stderr.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits at most.")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between polls while waiting.")
@idempotency_option
@json_option
@quiet_option
@api_options
def submit(body, wait, timeout, poll, idempotency_key, as_json, quiet, url, key):
    """Submit the edit request in BODY.json ('-': stdin), e.g.

    \b
      {"model_id": "...", "method": "finetune_layer", "layers": ["fc"], "edit_set": "...",
       "test_set": "builtin:digits-test", "audit": {"attacks": [{"id": "pgd", "name": "pgd", "eps": 0.03}]}}

    Prints the edit's id and its audit's; with --json the API's answer (with --wait, the finished edit).
    """
    request = read_json(body if body == "-" else f"@{body}", "BODY")
    if not isinstance(request, dict):
        raise click.UsageError("BODY must be a JSON object")
    with handled(url), client(url, key) as api:
        job = api.submit_edit(request, idempotency_key=idempotency_key)
        if not wait:
            _print_job(job, as_json, quiet)
            return
        click.echo(f"edit {job['id']} queued (audit {job['audit_id']}); waiting ...", err=True)
        edit = api.wait_for_edit(job["id"], timeout=timeout, poll=poll, on_progress=progress_printer(err=True))
        end_progress(err=True)
    show(edit, as_json, quiet, _outcome)
    sys.exit(EXIT_OK if edit["status"] == Status.succeeded else EXIT_BLOCKED)


def _print_job(job, as_json: bool, quiet: bool) -> None:
    def line(j: dict) -> str:
        subs = f"; {len(j['sub_edits'])} sub-edits" if j.get("sub_edits") else ""
        return f"edit {j['id']} {j['status']} (audit {j['audit_id']}{subs})"

    show(job, as_json, quiet, line)


def _outcome(edit) -> str:
    if edit["status"] == Status.succeeded:
        return f"edit {edit['id']} succeeded: edited model {edit['edited_model_id']}; audit {edit['audit_id']}"
    return f"edit {edit['id']} {edit['status']}: {edit.get('error') or 'no reason recorded'}"


@edits.command("get", epilog=EXIT_CODES_HELP)
@click.argument("edit_id")
@json_option
@api_options
def get(edit_id, as_json, url, key):
    """Show an edit: status, progress, the model it made, its audit."""
    with handled(url), client(url, key) as api:
        edit = api.get_edit(edit_id)
    if as_json:
        echo_json(edit)
        return
    p = edit.get("progress") or {}
    rows = [("id", edit["id"]), ("status", edit["status"]), ("method", edit["method"]),
            ("layers", ", ".join(edit["layers"]) or "-"), ("model", edit["model_id"]),
            ("edited model", edit["edited_model_id"] or "-"), ("audit", edit["audit_id"]),
            ("progress", f"{p.get('stage')} {p.get('done')}/{p.get('total')}" if p else "-"),
            ("created", edit["created_at"]), ("finished", edit["finished_at"] or "-")]
    if edit.get("error"):
        rows.append(("error", edit["error"]))
    for sub in edit.get("sub_edits") or []:
        rows.append((f"sub-edit {sub['layer']}", f"{sub['id']} (audit {sub['audit_id']})"))
    width = max(len(k) for k, _ in rows)
    click.echo("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


@edits.command("list", epilog=EXIT_CODES_HELP)
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--model-id", default=None, help="Only edits of this model.")
@click.option("--method", default=None, help="Only edits by this method (finetune_layer, rewrite, ...).")
@click.option("--created-after", default=None, metavar="ISO-TIME", help="e.g. 2025-01-31T00:00:00Z")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="At most this many, newest first (pages are followed).")
@json_option
@api_options
def list_(status, model_id, method, created_after, limit, as_json, url, key):
    """The tenant's edits, newest first, as a table (--json: a JSON list)."""
    with handled(url), client(url, key) as api:
        rows = list(islice(api.iter_edits(page_size=min(limit, 100), status=status, model_id=model_id,
                                          method=method, created_after=created_after), limit))
    if as_json:
        echo_json(rows)
        return
    click.echo(render(["id", "status", "method", "layers", "model", "edited model", "created"],
                      [[e["id"], e["status"], e["method"], ",".join(e["layers"]) or "-", e["model_id"],
                        e["edited_model_id"] or "-", e["created_at"][:19]] for e in rows], align_right=set()))


@edits.command("cancel", epilog=EXIT_CODES_HELP)
@click.argument("edit_id")
@api_options
def cancel(edit_id, url, key):
    """Cancel a queued or running edit (a running one stops at its next batch and stores nothing); exit 3 when it
    has already finished."""
    with handled(url), client(url, key) as api:
        edit = api.cancel_edit(edit_id)
    click.echo(f"edit {edit['id']} {edit['status']}")
