"""The `editaudit` command: serve, migrate, demo and the deployment gate.

Exit codes of `editaudit gate`: 0 pass, 1 blocked, 2 error, 3 audit missing or not finished, 4 usage.
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
from editaudit.cli.client import ApiError, Client, default_url
from editaudit.contracts.statuses import Status
from editaudit.gate.evaluate import GateResult
from editaudit.gate.policy import Policy, load_policy, parse_assignment
from editaudit.gate.render import as_html, as_junit, as_markdown, as_table

EXIT_PASS, EXIT_BLOCKED, EXIT_ERROR, EXIT_MISSING, EXIT_USAGE = 0, 1, 2, 3, 4

url_option = click.option("--url", default=default_url, show_default="$EDITAUDIT_URL or http://127.0.0.1:8000",
                          help="editaudit API to talk to.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="editaudit")
def cli():
    """editaudit: edit image classifiers and prove the edit did not quietly break robustness."""


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


def exit_code_for(e: ApiError) -> int:
    """Map an API problem to the gate's exit codes."""
    body = e.body if isinstance(e.body, dict) else {}
    fields = {x.get("field") for x in body.get("errors") or []}
    if e.status == 409 and "gate" in body:
        return EXIT_BLOCKED  # promotion refused by the gate
    if e.status == 409 or (e.status == 404 and "edit_id" in fields):
        return EXIT_MISSING
    if e.status in (404, 422) and any(f == "name" or f == "policy" or f.startswith("policy.")
                                      for f in fields if isinstance(f, str)):
        return EXIT_USAGE  # an unknown policy, or a policy naming what cannot exist (a typo'd metric or attack id)
    return EXIT_ERROR


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
        doc = client.get(f"/policies/{policy}")["policy"]
    doc = doc or {"version": 1, "name": "command line", "rules": []}
    doc["rules"] = list(doc["rules"]) + [r.model_dump(mode="json", exclude_none=True) for r in rules]
    return Policy.model_validate(doc).model_dump(mode="json", exclude_none=True)


def _wait(client: Client, edit_id: str, timeout: float) -> None:
    from editaudit.cli.demo import progress_printer

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
@url_option
def gate_command(edit_id, policy, mins, maxs, drops, rel_drops, wait, timeout, fmt, output, url):
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
    client = Client(url)
    try:
        policy_ref = _rules_policy(policy, rules, client)
        if wait:
            _wait(client, edit_id, timeout)
        result = client.post("/gate", {"edit_id": edit_id, "policy": policy_ref})
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    except click.UsageError:
        raise
    except ApiError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(exit_code_for(e))
    except TimeoutError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_MISSING)
    except Exception as e:  # noqa: BLE001 - network and server trouble
        click.echo(f"error: cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_ERROR)
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
@click.option("--override-reason", default=None, help="Promote despite a failing gate; recorded in the audit trail.")
@url_option
def promote(edit_id, alias, policy, override_reason, url):
    """Point ALIAS of the model family at EDIT_ID's model, only if the gate passes (or with --override-reason).

    Exit codes as for `gate`: 0 promoted, 1 refused by the gate, 2 error, 3 audit missing or not finished.
    The actor recorded is the name of the API key (EDITAUDIT_API_KEY).
    """
    body = {"alias": alias, "policy": policy, "override_reason": override_reason}
    out = _post_or_exit(url, f"/edits/{edit_id}/promote", body)
    click.echo(f"{out['outcome']}: {alias} -> model {out['model_id']} (was {out['previous_model_id']}); "
               f"gate {out['gate']['verdict']}")


@cli.command()
@click.argument("edit_id")
@click.option("--reason", default=None, help="Why (recorded in the alias history).")
@url_option
def revert(edit_id, reason, url):
    """Undo EDIT_ID: every alias pointing at its edited model goes back to what it held before EDIT_ID was
    promoted (the model EDIT_ID was applied to, when there is no record).

    Exit codes as for `gate`: 0 reverted (or nothing pointed at it), 2 error, 3 edit unknown or not finished.
    """
    out = _post_or_exit(url, f"/edits/{edit_id}/revert", {"reason": reason})
    moved = ", ".join(f"{a} -> {m}" for a, m in out["alias_targets"].items()) or "no alias pointed at it"
    click.echo(f"reverted edit {edit_id} (model {out['reverted_model_id']}, parent {out['model_id']}): {moved}")


def _post_or_exit(url: str, path: str, body: dict) -> dict:
    """POST to the server; an API problem or an unreachable server prints why and exits with the gate's codes."""
    try:
        return Client(url).post(path, body)
    except ApiError as e:
        click.echo(f"error: {e}", err=True)
        gate = e.body.get("gate") if isinstance(e.body, dict) else None
        if gate:  # a refused promotion: show the verdict and every row, failing ones included
            click.echo(as_table(gate), err=True)
        sys.exit(exit_code_for(e))
    except Exception as e:  # noqa: BLE001
        click.echo(f"error: cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_ERROR)


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
    except Exception as e:  # noqa: BLE001 - an unexpected failure is an error (2), never "blocked" (1)
        click.echo(f"error: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
