"""`editaudit audits get|report` and `editaudit weights download`: what an edit's audit measured, its reports, and
the edited weights (streamed to a file and checked against the server's sha256)."""

from __future__ import annotations

from pathlib import Path

import click

from editaudit.cli.common import EXIT_CODES_HELP, api_options, client, echo_json, handled, json_option
from editaudit.core.tables import audit_table


@click.group()
def audits():
    """Audits: baseline vs candidate numbers with paired statistics, and their reports."""


@audits.command("get", epilog=EXIT_CODES_HELP)
@click.argument("audit_id")
@click.option("--all", "every_metric", is_flag=True, help="Every metric, not only the headline ones.")
@json_option
@api_options
def get(audit_id, every_metric, as_json, url, key):
    """Show an audit: baseline, candidate, delta with its 95% interval and p-value per metric."""
    with handled(url), client(url, key) as api:
        audit = api.get_audit(audit_id)
    if as_json:
        echo_json(audit)
        return
    click.echo(f"audit {audit['id']} {audit['status']} (edit {audit['edit_id']}; device {audit['device'] or '-'})")
    if (audit.get("metrics") or {}).get("baseline"):
        click.echo(audit_table(audit, headline_only=not every_metric))
    else:
        click.echo("no metrics yet")
    for note in audit.get("notes") or []:
        click.echo(f"note: {note}")


@audits.command("report", epilog=EXIT_CODES_HELP)
@click.argument("audit_id")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json", "xml"]), required=True,
              help="html: self-contained with plots; md: a PR comment; json: versioned; xml: JUnit of the gate.")
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="File to write ('-': stdout).")
@click.option("--policy", default=None, metavar="NAME", help="The policy the xml (JUnit) report gates with "
              "(server default: 'default').")
@api_options
def report(audit_id, fmt, output, policy, url, key):
    """Write an audit's report."""
    with handled(url), client(url, key) as api:
        text = api.get_audit_report(audit_id, fmt, policy=policy)
    if output == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} ({fmt}, {len(text.encode())} bytes)", err=True)


@click.group()
def weights():
    """Edited weights."""


@weights.command("download", epilog=EXIT_CODES_HELP)
@click.argument("edit_id")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Where to write the safetensors file (written beside it first, moved there once verified).")
@click.option("--delta", is_flag=True, help="Only the tensors the edit changed (their new values).")
@api_options
def download(edit_id, output, delta, url, key):
    """Download the edited model's weights of EDIT_ID, streamed to a file and verified against the server's
    X-Content-SHA256 (a mismatch leaves no file and exits 2); exit 3 while the edit has not succeeded."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with handled(url), client(url, key) as api:
        fetch = api.download_edit_delta if delta else api.download_edit_weights
        got = fetch(edit_id, output)
    click.echo(f"wrote {got['path']} ({got['size']} bytes, sha256 {got['sha256']} verified)")
