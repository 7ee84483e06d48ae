"""The `editaudit` command: serve, migrate, demo and the deployment gate.

Exit codes of `editaudit gate`: 0 pass, 1 blocked, 2 error, 3 audit missing or not finished, 4 usage.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from editaudit import __version__
from editaudit.service.client import ApiError, Client, default_url

EXIT_PASS, EXIT_BLOCKED, EXIT_ERROR, EXIT_MISSING, EXIT_USAGE = 0, 1, 2, 3, 4

url_option = click.option("--url", default=default_url, show_default="$EDITAUDIT_URL or http://127.0.0.1:8000",
                          help="editaudit API to talk to.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="editaudit")
def cli():
    """editaudit: edit image classifiers and prove the edit did not quietly break robustness."""


def _settings(data_dir: str | None):
    from editaudit.service.settings import Settings, get_settings

    if data_dir:
        os.environ["EDITAUDIT_DATA_DIR"] = data_dir
    get_settings.cache_clear()
    return Settings() if data_dir else get_settings()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Database, objects and broker live here (default: $EDITAUDIT_DATA_DIR or ./editaudit-data).")
def serve(host: str, port: int, data_dir: str | None):
    """Run the embedded default: the API plus a local worker process, SQLite and a local object store."""
    from editaudit.service.embedded import EmbeddedServer

    settings = _settings(data_dir)
    click.echo(f"editaudit {__version__}: data in {settings.data_dir.resolve()}; serving on http://{host}:{port}")
    with EmbeddedServer(settings, host, port, quiet=False) as server:
        try:
            server.thread.join()
        except KeyboardInterrupt:
            pass


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
def migrate(data_dir: str | None):
    """Apply the database migrations (alembic upgrade head) to $EDITAUDIT_DATABASE_URL or the embedded SQLite."""
    from editaudit.service.migrate import upgrade

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo("database is at head")


@cli.command()
@click.option("--url", default=None, help="Use a running server instead of starting an embedded one.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Embedded server data directory (default: a fresh temporary directory).")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(1, 100), help="Training epochs.")
def demo(url: str | None, data_dir: str | None, epochs: int):
    """Train a digits CNN, fix its mistakes with an edit, audit it and print the gate verdict (~1 minute on CPU)."""
    from editaudit.service.demo import run_demo

    if url:
        sys.exit(run_demo(url, epochs))
    from editaudit.service.embedded import EmbeddedServer

    settings = _settings(data_dir or tempfile.mkdtemp(prefix="editaudit-demo-"))
    click.echo(f"starting the embedded server (data in {settings.data_dir.resolve()}) ...")
    with EmbeddedServer(settings) as server:
        code = run_demo(server.url, epochs)
    sys.exit(code)


@cli.command()
@click.argument("edit_id")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Policy file (YAML/JSON): {version: 1, rules: [{metric: M, min|max|max_drop: V}]}.")
@click.option("--min", "mins", multiple=True, metavar="METRIC=V", help="Block unless candidate >= V.")
@click.option("--max", "maxs", multiple=True, metavar="METRIC=V", help="Block unless candidate <= V.")
@click.option("--max-drop", "drops", multiple=True, metavar="METRIC=V",
              help="Block if baseline - candidate > V (absolute; 0.01 = one point).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@url_option
def gate(edit_id: str, policy_file, mins, maxs, drops, fmt: str, url: str):
    """Decide whether EDIT_ID may ship: exit 0 pass, 1 blocked, 2 error, 3 audit missing/unfinished, 4 usage."""
    from editaudit.service.gate import as_json, evaluate, load_policy, parse_assignment
    from editaudit.service.tables import render

    try:
        rules = load_policy(Path(policy_file)) if policy_file else []
        for kind, values in (("min", mins), ("max", maxs), ("max_drop", drops)):
            rules += [parse_assignment(v, kind) for v in values]
    except (ValueError, OSError) as e:
        raise click.UsageError(str(e)) from None
    if not rules:
        raise click.UsageError("no rules: give --policy FILE or at least one --min/--max/--max-drop")
    client = Client(url)
    try:
        edit = client.get(f"/edits/{edit_id}")
        if edit["status"] != "succeeded":
            why = f": {edit['error']}" if edit.get("error") else ""
            click.echo(f"audit not available: edit {edit_id} is {edit['status']}{why}", err=True)
            sys.exit(EXIT_MISSING)
        audit = client.get(f"/audits/{edit['audit_id']}")
    except ApiError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_MISSING if e.status == 404 else EXIT_ERROR)
    except Exception as e:  # noqa: BLE001 - network and server trouble
        click.echo(f"error: cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_ERROR)
    if audit["status"] != "succeeded":
        click.echo(f"audit {audit['id']} is {audit['status']}", err=True)
        sys.exit(EXIT_MISSING)
    verdict, rows = evaluate(audit, rules)
    if fmt == "json":
        click.echo(as_json(verdict, rows))
    else:
        click.echo(f"gate for edit {edit_id} (audit {audit['id']})\n")
        click.echo(render(["rule", "metric", "baseline", "candidate", "delta", "p", "outcome", "why"],
                          [[r.rule, r.metric, r.baseline, r.candidate,
                            None if r.delta is None else f"{r.delta:+.4f}",
                            None if r.p_value is None else f"{r.p_value:.3g}", r.outcome.upper(), r.reason]
                           for r in rows], align_right={2, 3, 4, 5}))
        click.echo(f"\nverdict: {'PASS' if verdict == 'pass' else 'BLOCKED'}")
    sys.exit(EXIT_PASS if verdict == "pass" else EXIT_BLOCKED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's usage errors exit 4 (the gate's contract), not click's default 2."""
    try:
        cli.main(args=argv, prog_name="editaudit", standalone_mode=False)
    except click.UsageError as e:
        e.show()
        sys.exit(EXIT_USAGE)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
