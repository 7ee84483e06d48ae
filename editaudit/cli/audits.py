"""`editaudit audits get|list|report` and `editaudit weights download`: what an edit's audit measured, its reports,
and the edited weights (streamed to a file and checked against the server's sha256)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click

from editaudit.cli.common import (
    EXIT_CODES_HELP,
    EXIT_MISSING,
    api_options,
    client,
    document_options,
    emit,
    fetch,
    handled,
    list_command,
    output_options,
    show_document,
)
from editaudit.cli.edits import status_option
from editaudit.cli.uploads import download_to
from editaudit.client import Client
from editaudit.client.types import ReportFormat
from editaudit.core.tables import audit_table, render

REPORT_EXIT = ("Exit codes: 0 written, 2 error, 3 no such audit, or it has not succeeded (queued, running, failed, "
               "canceled: the message says which), 4 usage (an unknown format or policy).")
# the CLI's format names -> the API's report suffixes
API_REPORT: dict[str, ReportFormat] = {"html": "html", "markdown": "md", "json": "json", "junit": "xml"}


@click.group()
def audits():
    """Audits: baseline vs candidate numbers with paired statistics, and their reports."""


def _summary(audit: Mapping[str, Any], every_metric: bool) -> str:
    lines = [f"audit {audit['id']} {audit['status']} (edit {audit['edit_id']}; device {audit.get('device') or '-'})"]
    if (audit.get("metrics") or {}).get("baseline"):
        lines.append(audit_table(audit, headline_only=not every_metric))
    else:
        lines.append("no metrics yet")
    lines += [f"note: {note}" for note in audit.get("notes") or []]
    return "\n".join(lines)


@audits.command("get", epilog=EXIT_CODES_HELP)
@click.argument("audit_id")
@click.option("--all", "every_metric", is_flag=True, help="Every metric, not only the headline ones.")
@document_options("the audit")
def get(audit_id, every_metric, fmt, output, url, key):
    """Show an audit: baseline, candidate, delta with its 95% interval and p-value per metric."""
    audit = fetch(url, key, lambda api: api.get_audit(audit_id))
    show_document(audit, fmt, output, lambda: _summary(audit, every_metric))


list_ = list_command(
    audits, Client.iter_audits, ["id", "status", "edit", "created", "finished"],
    lambda a: [a["id"], a["status"], a["edit_id"], a["created_at"][:19], (a.get("finished_at") or "-")[:19]],
    "The tenant's audits, newest first (-q: the ids, e.g. AUDIT=$(editaudit audits list --edit-id \"$EDIT\" -q)).",
    filters=[click.option("--edit-id", default=None, help="The audit of this edit (and of its sub-edits)."),
             click.option("--model-id", default=None, help="Only audits of edits of this model."), status_option,
             click.option("--method", default=None, help="Only audits of edits by this method.")])


@audits.command("report", epilog=REPORT_EXIT)
@click.argument("audit_id")
@output_options(("table", "json", "markdown", "junit", "html"), what="the report")
@click.option("--policy", default=None, metavar="NAME", help="The server policy the report leads with (html, "
              "markdown) or gates with (junit); default: 'default'.")
@click.option("--all", "every_metric", is_flag=True, help="table: every metric, not only the headline ones.")
@api_options
def report(audit_id, fmt, output, policy, every_metric, url, key):
    """Write an audit's report: html (self-contained, with plots), markdown (a PR comment), json (versioned),
    junit (the gate under --policy, as JUnit XML) or table (the terminal summary). A report needs a finished
    audit: one that is queued or running (or failed) exits 3 and says so.

    \b
    Examples:
      editaudit audits report AUDIT_ID -o report.html          # the format from the suffix
      editaudit audits report AUDIT_ID --format md >> "$GITHUB_STEP_SUMMARY"
      editaudit audits report AUDIT_ID --format junit --policy default -o gate.xml
    """
    with handled(url), client(url, key) as api:
        audit = api.get_audit(audit_id)
        if audit["status"] != "succeeded":
            error = api.get_edit(audit["edit_id"]).get("error") if audit["status"] in ("failed", "canceled") else None
            why = f": {error}" if error else ""
            click.echo(f"error: audit {audit_id} is {audit['status']}{why}; a report needs a finished audit"
                       + (f" (follow it with `editaudit edits wait {audit['edit_id']}`)"
                          if audit["status"] in ("queued", "running") else ""), err=True)
            sys.exit(EXIT_MISSING)
        text = _summary(audit, every_metric) if fmt == "table" else \
            api.get_audit_report(audit_id, API_REPORT[fmt], policy=policy)
    emit(text, output, fmt)


@audits.command("samples", epilog=EXIT_CODES_HELP)
@click.argument("audit_id")
@click.option("--condition", default="clean", show_default=True,
              help="clean, adv.<attack id> or corruption.<type>.<severity> (a wrong one lists the audit's).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "edit", "generalization"]))
@click.option("--flipped", type=click.Choice(["broken", "fixed"]), default=None,
              help="Only the samples the edit broke (right before, wrong after) or fixed.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many (default: all).")
@click.option("--parquet", "parquet", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Download the whole per-sample file (Parquet) instead.")
@output_options(("table", "json"), what="the samples")
@api_options
def samples(audit_id, condition, split, flipped, limit, parquet, fmt, output, url, key):
    """The samples of an audit under one condition, from its per-sample results: which the edit broke or fixed, with
    both models' predictions, and the URL of the input the candidate saw where the audit kept it.

    \b
    Examples:
      editaudit audits samples AUDIT_ID --condition adv.pgd --flipped broken
      editaudit audits samples AUDIT_ID --condition corruption.fog.3 --flipped fixed --json
      editaudit audits samples AUDIT_ID --parquet samples.parquet        # pandas.read_parquet(...)
    """
    import itertools
    import json

    with handled(url), client(url, key) as api:
        if parquet:
            got = api.download_audit_samples(audit_id, parquet)
            click.echo(f"wrote {parquet} ({got['size']} bytes, sha256 {got['sha256'][:12]}…)", err=True)
            return
        rows = list(itertools.islice(api.iter_audit_samples(audit_id, condition=condition, split=split,
                                                            flipped=flipped, page_size=200), limit))
    if fmt == "json":
        emit(json.dumps(rows, indent=2), output, fmt)
        return
    name = lambda n, i: f"{i} ({n})" if n else str(i)  # noqa: E731
    table = render(["index", "label", "baseline", "candidate", "image"],
                   [[r["index"], name(r["label_name"], r["label"]), name(r["baseline_class"], r["baseline_pred"]),
                     name(r["candidate_class"], r["candidate_pred"]), r["image"] or "-"] for r in rows])
    emit(f"{len(rows)} sample(s) of {split} under {condition}" + (f", {flipped} by the edit" if flipped else "")
         + "\n" + table, output, fmt)


@click.group()
def weights():
    """Edited weights."""


@weights.command("download", epilog=EXIT_CODES_HELP)
@click.argument("edit_id")
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the safetensors file ('-': stdout; a file is written beside it first and moved "
                   "there once verified).")
@click.option("--delta", is_flag=True, help="Only the tensors the edit changed (their new values).")
@api_options
def download(edit_id, output, delta, url, key):
    """Download the edited model's weights of EDIT_ID, streamed and verified against the server's
    X-Content-SHA256 (a mismatch leaves no file and exits 2); exit 3 while the edit has not succeeded."""
    download_to(output, lambda api, dest: (api.download_edit_delta if delta else api.download_edit_weights)(
        edit_id, dest), url, key)
