"""What every command that talks to a server shares: the --url and --key options, the exit codes, and one way to
report a problem (`error: <detail>` and each `field: reason` on stderr).

Exit codes (the gate's contract, kept by every command): 0 ok, 1 blocked (a gate, a refused promotion, an edit that
failed or was canceled), 2 error (a problem answer, an unreachable server, a download that does not match its
checksum), 3 not found or not in the state the command needs (unknown id, not finished yet, already finished),
4 usage (bad arguments, an unknown policy name)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import httpx

from editaudit.client import ApiError, ChecksumError, Client, default_url

EXIT_OK = EXIT_PASS = 0
EXIT_BLOCKED = 1
EXIT_ERROR = 2
EXIT_MISSING = 3
EXIT_USAGE = 4

EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 blocked or the edit failed, 2 error (the server's problem, an unreachable "
                   "server), 3 not found or not in the needed state, 4 usage.")

url_option = click.option("--url", default=default_url, show_default="$EDITAUDIT_URL or http://127.0.0.1:8000",
                          help="editaudit API to talk to.")
key_option = click.option("--key", envvar="EDITAUDIT_API_KEY", default=None, show_envvar=True,
                          help="API key (sent as a bearer token); also read from $EDITAUDIT_API_TOKEN.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a summary.")


def api_options(fn):
    """--url and --key."""
    return url_option(key_option(fn))


def exit_code_for(e: ApiError) -> int:
    """Map an API problem to the exit codes above."""
    if e.status == 409 and "gate" in e.body:
        return EXIT_BLOCKED  # promotion refused by the gate
    if e.status in (404, 422) and any(f in ("name", "policy") or f.startswith("policy.") for f in e.fields):
        return EXIT_USAGE  # an unknown policy, or a policy naming what cannot exist (a typo'd metric or attack id)
    if e.status in (404, 409):
        return EXIT_MISSING
    return EXIT_ERROR


def report_problem(e: ApiError) -> None:
    """`error: <detail>`, then each field the problem names, on stderr; a refused promotion's gate with every row."""
    click.echo(f"error: {e.detail}", err=True)
    for err in e.errors:
        if err.get("field") and err.get("reason") != e.detail:
            click.echo(f"  {err['field']}: {err.get('reason')}", err=True)
    if isinstance(e.body.get("gate"), dict):
        from editaudit.gate.render import as_table

        click.echo(as_table(e.body["gate"]), err=True)


@contextlib.contextmanager
def handled(url: str) -> Iterator[None]:
    """Turns what the client raises into a message and the exit code (usage errors pass through to click)."""
    try:
        yield
    except ApiError as e:
        report_problem(e)
        sys.exit(exit_code_for(e))
    except ChecksumError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_ERROR)
    except TimeoutError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_MISSING)
    except httpx.TransportError as e:
        click.echo(f"error: cannot reach {url}: {e}", err=True)
        sys.exit(EXIT_ERROR)


def read_json(value: str, what: str) -> Any:
    """A JSON argument given inline, as `@file.json`, or `-` for stdin; unreadable or invalid JSON is a usage error."""
    try:
        if value == "-":
            text = click.get_text_stream("stdin").read()
        elif value.startswith("@"):
            text = Path(value[1:]).read_text(encoding="utf-8")
        else:
            text = value
        return json.loads(text)
    except OSError as e:
        raise click.UsageError(f"{what}: cannot read {value[1:]!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise click.UsageError(f"{what}: not valid JSON ({e})") from None


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def show(obj: dict, as_json: bool, quiet: bool, summary: Callable[[dict], str]) -> None:
    """A resource as the user asked: the whole JSON (--json), its id alone (-q, for scripts), or one line."""
    if as_json:
        echo_json(obj)
    elif quiet:
        click.echo(obj["id"])
    else:
        click.echo(summary(obj))


def client(url: str, key: str | None) -> Client:
    return Client(url, key=key)
