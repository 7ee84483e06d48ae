"""What every command that talks to a server shares: the --url and --key options (given before or after the verb),
one output convention (-o/--output and --format), the exit codes, and one way to report a problem (`error:
<detail>`, then each `field: reason` with the server's suggestions, on stderr).

Exit codes (the gate's contract, kept by every command): 0 ok, 1 blocked (a gate, a refused promotion, an edit that
failed or was canceled), 2 error (a problem answer, an unreachable server, a download that does not match its
checksum, a bug), 3 not found or not in the state the command needs (unknown id, not finished yet, already
finished), 4 usage (bad arguments, an unknown policy name).

Only click, httpx, pydantic and pyyaml may be imported here (the `gate` install for CI has nothing else)."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from editaudit.client import ApiError, ChecksumError, Client, default_key, default_url

EXIT_OK = EXIT_PASS = 0
EXIT_BLOCKED = 1
EXIT_ERROR = 2
EXIT_MISSING = 3
EXIT_USAGE = 4

EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 blocked or the edit failed, 2 error (the server's problem, an unreachable "
                   "server, a bug), 3 not found or not in the needed state, 4 usage.")

# --- --url and --key: before the verb (the root group's) or after it (the verb's; it wins) ----------------------------


def _root_value(ctx: click.Context, name: str) -> Any:
    root = ctx.find_root()
    return root.params.get(name) if root is not ctx else None


def _resolve_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    return value or _root_value(ctx, "url") or default_url()


def _resolve_key(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return value or _root_value(ctx, "key") or default_key()


URL_HELP = "editaudit API to talk to (also before the verb: `editaudit --url URL ...`)."
KEY_HELP = "API key, sent as a bearer token (default $EDITAUDIT_API_KEY, else $EDITAUDIT_API_TOKEN)."

url_option = click.option("--url", default=None, callback=_resolve_url, metavar="URL",
                          show_default="$EDITAUDIT_URL or http://127.0.0.1:8000", help=URL_HELP)
key_option = click.option("--key", default=None, callback=_resolve_key, metavar="KEY", help=KEY_HELP)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print only the id (one per line for a list).")


def api_options(fn):
    """--url and --key (each also accepted before the verb; the one after it wins)."""
    return url_option(key_option(fn))


def client(url: str, key: str | None) -> Client:
    return Client(url, key=key)


# --- one output convention: -o/--output FILE ('-': stdout) and --format from one set of names ------------------------

FORMATS = ("table", "json", "markdown", "junit", "html")
FORMAT_ALIASES = {"md": "markdown", "xml": "junit", "text": "table", "txt": "table", "htm": "html"}
SUFFIX_FORMATS = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".xml": "junit", ".html": "html",
                  ".htm": "html", ".txt": "table"}


def canonical_format(name: str) -> str:
    """`md` -> markdown, `xml` -> junit, ...; an unknown name is returned as given (lower case)."""
    name = name.strip().lower()
    return FORMAT_ALIASES.get(name, name)


class FormatType(click.ParamType):
    """One of FORMATS that the command supports; the aliases (md, xml, ...) are accepted and normalised."""

    name = "format"

    def __init__(self, supported: Iterable[str]):
        self.supported = tuple(supported)

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.supported) + "]"

    def convert(self, value, param, ctx):
        fmt = canonical_format(str(value))
        if fmt not in self.supported:
            aliases = sorted(a for a, f in FORMAT_ALIASES.items() if f in self.supported)
            self.fail(f"{value!r} is not one of {', '.join(self.supported)}"
                      + (f" (also accepted: {', '.join(aliases)})" if aliases else ""), param, ctx)
        return fmt

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(f) for f in self.supported if f.startswith(incomplete)]


def format_from_suffix(output: str | None, supported: Iterable[str]) -> str | None:
    if not output or output == "-":
        return None
    fmt = SUFFIX_FORMATS.get(Path(output).suffix.lower())
    return fmt if fmt in tuple(supported) else None


def output_options(supported: Iterable[str] = ("table", "json"), default: str = "table", what: str = "the result",
                   note: str = ""):
    """--format (one of `supported`; default: from -o's suffix, else `default`), --json (= --format json) and
    -o/--output FILE ('-': stdout). The command receives `fmt` and `output` (None: stdout)."""
    supported = tuple(supported)

    def decorate(fn):
        @functools.wraps(fn)
        def command(*args, fmt: str | None, as_json: bool, output: str | None, **kwargs):
            if as_json and fmt not in (None, "json"):
                raise click.UsageError(f"--json and --format {fmt} contradict each other")
            fmt = "json" if as_json else fmt or format_from_suffix(output, supported) or default
            return fn(*args, fmt=fmt, output=None if output in (None, "-") else output, **kwargs)

        aliases = sorted(a for a, f in FORMAT_ALIASES.items() if f in supported and a in ("md", "xml"))
        suffixes = [x for x in (".json", ".md", ".xml", ".html") if SUFFIX_FORMATS[x] in supported]
        command = click.option(
            "-o", "--output", default=None, metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
            help=f"Write {what} to FILE ('-': stdout, the default).{' ' + note if note else ''}")(command)
        if "json" in supported:
            command = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(command)
        else:
            command = click.option("--json", "as_json", is_flag=True, hidden=True)(command)
        return click.option(
            "--format", "fmt", type=FormatType(supported), default=None,
            help=(f"Default: from the suffix of -o ({', '.join(suffixes)}), else {default}." if suffixes else
                  f"Default: {default}.")
                 + (f" Aliases: {', '.join(f'{a}={FORMAT_ALIASES[a]}' for a in aliases)}." if aliases else ""))(command)

    return decorate


def emit(text: str, output: str | None, fmt: str | None = None) -> None:
    """`text` to stdout, or written to `output` (its folder made; a note on stderr)."""
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    click.echo(f"wrote {output}" + (f" ({fmt}, {path.stat().st_size} bytes)" if fmt else ""), err=True)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def echo_json(obj: Any) -> None:
    click.echo(to_json(obj), nl=False)


def show(obj: dict, as_json: bool, quiet: bool, summary: Callable[[dict], str]) -> None:
    """A resource as the user asked: the whole JSON (--json), its id alone (-q, for scripts), or one line."""
    if as_json:
        echo_json(obj)
    elif quiet:
        click.echo(obj["id"])
    else:
        click.echo(summary(obj))


def show_document(obj: Any, fmt: str, output: str | None, table: Callable[[], str], quiet_id: str | None = None
                  ) -> None:
    """A resource or a listing in the chosen format: JSON, or the table `table()` builds; `quiet_id` (-q) wins."""
    if quiet_id is not None:
        if quiet_id or output:
            emit(quiet_id, output)
    elif fmt == "json":
        emit(to_json(obj), output, fmt if output else None)
    else:
        emit(table(), output, fmt if output else None)


Doc = TypeVar("Doc", bound=Mapping[str, Any])
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def document_options(what: str = "the result", supported: Iterable[str] = ("table", "json"),
                     quiet: bool = False) -> Callable[[F], F]:
    """The options a command that shows the server's answer ends with: output_options for `what`, -q/--quiet (with
    `quiet`: the command prints ids) and --url/--key."""
    def decorate(fn: F) -> F:
        fn = api_options(fn)
        return output_options(supported, what=what)(quiet_option(fn) if quiet else fn)
    return decorate


def fetch(url: str, key: str | None, call: Callable[[Client], R]) -> R:
    """One request (or a few) to the server, its problems reported with their exit codes (`handled`)."""
    with handled(url), client(url, key) as api:
        return call(api)


def ids(rows: Sequence[Mapping[str, Any]], quiet: bool) -> str | None:
    """-q's answer for a listing: the ids, one per line; None without -q."""
    return "\n".join(r["id"] for r in rows) if quiet else None


def document_command(group: click.Group, name: str, call: Callable[..., Doc], table: Callable[[Doc], str],
                     help: str, *, argument: str | None = None, what: str = "the result",
                     epilog: str = EXIT_CODES_HELP) -> click.Command:
    """`group name [ARGUMENT]`: one document from the server (`call(api, argument=VALUE)`, e.g. Client.get_model
    with `model_id`) shown in the chosen format, `table(doc)` as the table."""
    def command(fmt: str, output: str | None, url: str, key: str | None, **arguments: str) -> None:
        doc = fetch(url, key, lambda api: call(api, **arguments))
        show_document(doc, fmt, output, lambda: table(doc))

    command = document_options(what)(command)
    if argument is not None:
        command = click.argument(argument)(command)
    return group.command(name, help=help, epilog=epilog)(command)


LIMIT_HELP = "At most this many, newest first (pages are followed)."
limit_option = click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help=LIMIT_HELP)
created_after_option = click.option("--created-after", default=None, metavar="ISO-TIME",
                                    help="Only those created after this time: ISO 8601 with a timezone, e.g. "
                                         "2025-01-31T00:00:00Z or 2025-01-31T00:00:00+02:00.")


def list_command(group: click.Group, pages: Callable[..., Iterator[Doc]], headers: list[str],
                 row: Callable[[Doc], list[Any]], help: str, *, filters: Sequence[Callable[[Any], Any]] = (),
                 align_right: Iterable[int] = (), epilog: str = EXIT_CODES_HELP) -> click.Command:
    """`group list [FILTERS] [--created-after T] [--limit N]`: the tenant's documents, newest first, following the
    pages of `pages` (a Client.iter_* method; the filters are its keyword arguments) up to --limit; a table of
    `headers` with a `row(doc)` each (--json: a JSON list; -q: the ids)."""
    def command(limit: int, fmt: str, output: str | None, quiet: bool, url: str, key: str | None,
                **chosen: Any) -> None:
        rows = fetch(url, key, lambda api: list(islice(pages(api, page_size=min(limit, 100), **chosen), limit)))
        show_document(rows, fmt, output, lambda: render_rows(headers, [row(r) for r in rows], set(align_right)),
                      ids(rows, quiet))

    command = document_options("the list", quiet=True)(command)
    options: list[Callable[[Any], Any]] = [*filters, created_after_option, limit_option]
    for option in reversed(options):
        command = option(command)
    return group.command("list", help=help, epilog=epilog)(command)


def render_rows(headers: list[str], rows: list[list[Any]], align_right: set[int]) -> str:
    from editaudit.core.tables import render

    return render(headers, rows, align_right=align_right)


def key_value_table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {'-' if v is None or v == '' else v}" for k, v in rows)


# --- problems and exit codes -----------------------------------------------------------------------------------------


def exit_code_for(e: ApiError) -> int:
    """Map an API problem to the exit codes above."""
    if e.status == 409 and "gate" in e.body:
        return EXIT_BLOCKED  # promotion refused by the gate (or because its alias moved)
    if e.status in (404, 422) and any(f in ("name", "policy") or f.startswith("policy.") for f in e.fields):
        return EXIT_USAGE  # an unknown policy, or a policy naming what cannot exist (a typo'd metric or attack id)
    if e.status == 409 and "name" in e.fields:
        return EXIT_USAGE  # a name the command may not use (a built-in policy's)
    if e.status in (404, 409):
        return EXIT_MISSING
    return EXIT_ERROR


MAX_SUGGESTIONS = 12


def suggestions(closest: Any = None, valid: Any = None) -> str:
    """` (did you mean: a, b?)` or ` (valid: a, b, c, … 70 more)`; '' when the server suggested nothing."""
    def names(v: Any) -> list[str]:
        return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)] if isinstance(v, str) and v else []

    if names(closest):
        return f" (did you mean: {', '.join(names(closest)[:MAX_SUGGESTIONS])}?)"
    if names(valid):
        shown, rest = names(valid)[:MAX_SUGGESTIONS], len(names(valid)) - MAX_SUGGESTIONS
        return f" (valid: {', '.join(shown)}{f', … {rest} more' if rest > 0 else ''})"
    return ""


def problem_lines(e: ApiError) -> list[str]:
    """`error: <detail>`, then `  field: reason (did you mean: ...?)` per error. The server's `closest`/`valid` may
    come with each error or once in the body (then they belong to its only error, or stand on their own line)."""
    lines = [f"error: {e.detail}"]
    errors = [err for err in e.errors if err.get("field")]
    top = suggestions(e.body.get("closest"), e.body.get("valid"))
    for err in errors:
        hint = suggestions(err.get("closest"), err.get("valid")) or (top if len(errors) == 1 else "")
        if "did you mean" in str(err.get("reason")):  # the server's reason already names them
            hint = ""
        if hint or err.get("reason") != e.detail:
            lines.append(f"  {err['field']}: {err.get('reason')}{hint}")
    if top and len(errors) != 1 and "did you mean" not in e.detail:
        lines.append(f"  {top.strip()[1:-1]}")
    checks = e.body.get("checks")
    if isinstance(checks, dict):  # /readyz: what is not ready
        lines += [f"  {name}: {state}" for name, state in checks.items()]
    return lines


def report_problem(e: ApiError) -> None:
    """The problem on stderr; a refused promotion gets its real reason first (gate.explain_refusal)."""
    if e.status == 409 and isinstance(e.body.get("gate"), dict):
        from editaudit.cli.gate import explain_refusal

        click.echo(explain_refusal(e), err=True)
        return
    click.echo("\n".join(problem_lines(e)), err=True)


@contextlib.contextmanager
def handled(url: str) -> Iterator[None]:
    """Turns what the client raises into a message and the exit code (usage errors pass through to click; anything
    else is caught by the root command: exit 2)."""
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
        click.echo(f"error: cannot reach {url}: {e or type(e).__name__}", err=True)
        sys.exit(EXIT_ERROR)


def read_json(value: str, what: str) -> Any:
    """A JSON argument given inline, as `@file.json`, or `-` for stdin; unreadable or invalid JSON is a usage error."""
    try:
        if value == "-":
            text = click.open_file("-").read()  # stdin, as click decodes it (left open)
        elif value.startswith("@"):
            text = Path(value[1:]).read_text(encoding="utf-8")
        else:
            text = value
        return json.loads(text)
    except OSError as e:
        raise click.UsageError(f"{what}: cannot read {value[1:]!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise click.UsageError(f"{what}: not valid JSON ({e})") from None


def read_document(path: str, what: str) -> Any:
    """A YAML or JSON file (YAML is a superset); unreadable or invalid is a usage error."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise click.UsageError(f"{what}: cannot read {path!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise click.UsageError(f"{what}: not valid YAML or JSON ({e})") from None
