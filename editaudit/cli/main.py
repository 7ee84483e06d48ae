"""The `editaudit` command: serve, migrate, demo, the deployment gate, and the API's resources through the typed
client (models, datasets, edits, audits, weights) and the operator's keys.

Exit codes of `editaudit gate`: 0 pass, 1 blocked, 2 error, 3 audit missing or not finished, 4 usage; every other
command keeps the same meanings (editaudit.cli.common).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import click

from editaudit import __version__
from editaudit.cli.audits import audits, weights
from editaudit.cli.common import (EXIT_BLOCKED, EXIT_ERROR, EXIT_MISSING, EXIT_PASS, EXIT_USAGE, api_options,
                                  exit_code_for, handled)
from editaudit.cli.edits import edits
from editaudit.cli.keys import keys
from editaudit.cli.uploads import datasets, models
from editaudit.client import ApiError, Client
from editaudit.contracts.statuses import Status
from editaudit.gate.evaluate import GateResult
from editaudit.gate.policy import Policy, load_policy, parse_assignment
from editaudit.gate.render import as_html, as_junit, as_markdown, as_table

__all__ = ["EXIT_BLOCKED", "EXIT_ERROR", "EXIT_MISSING", "EXIT_PASS", "EXIT_USAGE", "cli", "exit_code_for", "main"]


class Cli(click.Group):
    """Usage errors exit 4 (the gate's contract), not click's default 2, however the command is invoked (the
    console script, `python -m`, click's test runner)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            e.show()
            sys.exit(EXIT_USAGE)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as e:
            e.show()
            sys.exit(EXIT_ERROR)
        except Exception as e:  # noqa: BLE001 - an unexpected failure is an error (2), never "blocked" (1)
            click.echo(f"error: {type(e).__name__}: {e}", err=True)
            sys.exit(EXIT_ERROR)
        if standalone_mode:  # --help, --version and ctx.exit(n) come back as a code when not standalone
            sys.exit(rv if isinstance(rv, int) else EXIT_PASS)
        return rv


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 ok, 1 blocked (a gate, a refused promotion, an edit that failed), 2 error, "
                    "3 not found or not finished, 4 usage.")
@click.version_option(__version__, prog_name="editaudit")
def cli():
    """editaudit: edit image classifiers and prove the edit did not quietly break robustness.

    Commands that talk to a server take --url (default $EDITAUDIT_URL, else http://127.0.0.1:8000) and --key
    (default $EDITAUDIT_API_KEY).
    """


for group in (models, datasets, edits, audits, weights, keys):
    cli.add_command(group)


def _settings(data_dir: str | None):
    from editaudit.core.settings import Settings, get_settings

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
    from editaudit.cli.embedded import EmbeddedServer

    settings = _settings(data_dir)
    click.echo(f"editaudit {__version__}: data in {settings.data_dir.resolve()}; serving on http://{host}:{port}")
    try:
        with EmbeddedServer(settings, host, port, quiet=False) as server:
            # uvicorn runs on a thread, which cannot own signal handlers: SIGTERM / SIGINT stop it from here, and
            # leaving the context stops the worker too (nothing is left running)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: server.stop())
            while server.thread.is_alive():
                server.thread.join(timeout=0.5)
    except RuntimeError as e:  # a busy port, or an API that did not start: nothing was left running
        raise click.ClickException(str(e)) from None


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
def migrate(data_dir: str | None):
    """Apply the database migrations (alembic upgrade head) to $EDITAUDIT_DATABASE_URL or the embedded SQLite."""
    from editaudit.core.migrate import upgrade

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo("database is at head")


@cli.command()
@click.option("--url", default=None, help="Use a running server instead of starting an embedded one.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Embedded server data directory (default: a fresh temporary directory).")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(1, 100), help="Training epochs.")
@click.option("--report", default="editaudit-demo-report.html", show_default=True,
              help="Where to save the audit's HTML report (plots included); '' to skip.")
def demo(url: str | None, data_dir: str | None, epochs: int, report: str):
    """Train a digits CNN, break it with a background texture, rewrite one layer from 8 exemplars, audit the edit
    and print the gate verdict (~20 s on a 2-core CPU)."""
    from editaudit.cli.demo import run_demo

    if url:
        sys.exit(run_demo(url, epochs, report or None))
    from editaudit.cli.embedded import EmbeddedServer

    settings = _settings(data_dir or tempfile.mkdtemp(prefix="editaudit-demo-"))
    click.echo(f"starting the embedded server (data in {settings.data_dir.resolve()}) ...")
    with EmbeddedServer(settings) as server:
        code = run_demo(server.url, epochs, report or None)
    sys.exit(code)


def _is_path(policy: str) -> bool:
    """A policy file is written as a path (`./p.yaml`, `ci/policy.json`); a bare name is always the server's, so a
    file named `default` in the working directory cannot stand in for the server's default policy."""
    if not ("/" in policy or policy.endswith((".yaml", ".yml", ".json"))):
        return False
    if not Path(policy).is_file():
        raise click.UsageError(f"--policy {policy!r}: no such policy file")
    return True


def _rules_policy(policy: str | None, rules: list, client: Client) -> str | dict:
    """What to send as `policy`: a name, or an inline document (a file, ad-hoc rules, or a name plus rules)."""
    doc: dict | None = None
    if policy and _is_path(policy):
        doc = load_policy(Path(policy)).model_dump(mode="json", exclude_none=True)
    elif policy and not rules:
        return policy
    elif policy:
        doc = client.get_policy(policy)["policy"]
    doc = doc or {"version": 1, "name": "command line", "rules": []}
    doc["rules"] = list(doc["rules"]) + [r.model_dump(mode="json", exclude_none=True) for r in rules]
    return Policy.model_validate(doc).model_dump(mode="json", exclude_none=True)


def _wait(client: Client, edit_id: str, timeout: float) -> None:
    from editaudit.cli.progress import progress_printer

    show = progress_printer(err=True)
    edit = client.wait_for_edit(edit_id, timeout=timeout, poll=1.0, on_progress=show)
    click.echo("", err=True)
    if edit["status"] != Status.succeeded:
        raise ApiError(409, {"detail": f"edit {edit_id} {edit['status']}: {edit.get('error')}", "errors": [
            {"field": "edit_id", "reason": edit["status"]}]})


@cli.command("gate")
@click.argument("edit_id")
@click.option("--policy", default=None, metavar="FILE|NAME",
              help="A policy file written as a path (./p.yaml, ci/p.json) or the name of a server policy "
                   "('default' ships with editaudit).")
@click.option("--min", "mins", multiple=True, metavar="METRIC=V", help="Block unless candidate >= V.")
@click.option("--max", "maxs", multiple=True, metavar="METRIC=V", help="Block unless candidate <= V.")
@click.option("--max-drop", "drops", multiple=True, metavar="METRIC=V",
              help="Pass only if the audit shows baseline - candidate <= V (absolute; 0.01 = one point): the 95% "
                   "upper bound on the paired drop must be within V (non-inferiority).")
@click.option("--max-relative-drop", "rel_drops", multiple=True, metavar="METRIC=V",
              help="Likewise for (baseline - candidate) / baseline <= V.")
@click.option("--wait", is_flag=True, help="Wait for a queued or running audit to finish, showing progress.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits at most.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "junit", "markdown", "html"]), default="table",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the formatted result here (the table still goes to stdout).")
@api_options
def gate_command(edit_id, policy, mins, maxs, drops, rel_drops, wait, timeout, fmt, output, url, key):
    """Decide whether EDIT_ID may ship.

    \b
    Exit codes: 0 pass (warnings allowed), 1 blocked, 2 error, 3 audit missing or not finished, 4 usage.
    A metric that a rule names and the audit lacks blocks (fail-closed); so does a drop the audit has too few
    samples to bound (the row says how many would). A metric name that cannot exist, or an attack id the audit
    never ran, is a usage error with the closest valid names.
    """
    try:
        rules = [parse_assignment(v, kind) for kind, values in
                 (("min", mins), ("max", maxs), ("max_drop", drops), ("max_relative_drop", rel_drops)) for v in values]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not policy and not rules:
        raise click.UsageError("no rules: give --policy FILE|NAME or at least one --min/--max/--max-drop")
    with handled(url), Client(url, key=key) as client:
        try:
            policy_ref = _rules_policy(policy, rules, client)
        except ValueError as e:  # a policy file or rules that do not validate
            raise click.UsageError(str(e)) from None
        if wait:
            _wait(client, edit_id, timeout)
        result = client.gate(edit_id, policy_ref)
    gr = GateResult.from_dict(result)
    formatted = {"table": lambda: as_table(result), "json": lambda: json.dumps(result, indent=2, default=str),
                 "junit": lambda: as_junit(gr), "markdown": lambda: as_markdown(gr, f"editaudit gate: edit {edit_id}"),
                 "html": lambda: as_html(gr, f"editaudit gate: edit {edit_id}")}
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(formatted[fmt]())
        click.echo(as_table(result))
    else:
        click.echo(formatted[fmt]())
    sys.exit({"pass": EXIT_PASS, "warn": EXIT_PASS, "fail": EXIT_BLOCKED}.get(result["verdict"], EXIT_ERROR))


@cli.command()
@click.argument("edit_id")
@click.option("--alias", default="production", show_default=True, help="Alias of the model family to move.")
@click.option("--policy", default="default", show_default=True, metavar="NAME", help="Server policy to gate with.")
@click.option("--override-reason", default=None,
              help="Promote despite a failing gate (needs an admin key); recorded in the audit trail.")
@api_options
def promote(edit_id, alias, policy, override_reason, url, key):
    """Point ALIAS of the model family at EDIT_ID's model, only if the gate passes (or with --override-reason).

    Exit codes as for `gate`: 0 promoted, 1 refused by the gate, 2 error, 3 audit missing or not finished.
    The actor recorded is the name of the API key (EDITAUDIT_API_KEY).
    """
    with handled(url), Client(url, key=key) as client:
        out = client.promote_edit(edit_id, alias=alias, policy=policy, override_reason=override_reason)
    click.echo(f"{out['outcome']}: {alias} -> model {out['model_id']} (was {out['previous_model_id']}); "
               f"gate {out['gate']['verdict']}")


@cli.command()
@click.argument("edit_id")
@click.option("--reason", default=None, help="Why (recorded in the alias history).")
@api_options
def revert(edit_id, reason, url, key):
    """Undo EDIT_ID: every alias pointing at its edited model goes back to what it held before EDIT_ID was
    promoted (the model EDIT_ID was applied to, when there is no record).

    Exit codes as for `gate`: 0 reverted (or nothing pointed at it), 2 error, 3 edit unknown or not finished.
    """
    with handled(url), Client(url, key=key) as client:
        out = client.revert_edit(edit_id, reason=reason)
    moved = ", ".join(f"{a} -> {m}" for a, m in out["alias_targets"].items()) or "no alias pointed at it"
    click.echo(f"reverted edit {edit_id} (model {out['reverted_model_id']}, parent {out['model_id']}): {moved}")


def main(argv: list[str] | None = None) -> None:
    """Entry point (the console script and `python -m editaudit.cli.main`); exit codes as documented above."""
    cli.main(args=argv, prog_name="editaudit")


if __name__ == "__main__":
    main()
