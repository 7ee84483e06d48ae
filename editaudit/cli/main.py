"""The `editaudit` command: the deployment gate and the API's resources over HTTP (models, datasets, edits, audits,
weights, policies, aliases, ...) through the typed client, plus `serve`, `migrate`, `demo` and the operator's
`keys`.

Subcommands are imported only when invoked (click's LazyGroup pattern): `--help`, `--version`, `gate` and every
HTTP verb run on an install with only click, httpx, pydantic and pyyaml; `serve`, `migrate`, `demo` and `keys`
import the server's packages when they run. This module imports nothing else at the top, so that nothing can fail
before the command runs.

Exit codes: 0 ok / pass, 1 blocked (a gate, a refused promotion, an edit that failed), 2 error (including any
internal error, whatever raised it: never 1, which means "blocked"), 3 not found or not finished, 4 usage
(editaudit.cli.common). EDITAUDIT_DEBUG=1 prints the traceback of an internal error.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping

import click

EXIT_PASS, EXIT_BLOCKED, EXIT_ERROR, EXIT_MISSING, EXIT_USAGE = 0, 1, 2, 3, 4

# name -> ("module:attribute", the one-line help `editaudit --help` shows without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "gate": ("editaudit.cli.gate:gate_command", "Decide whether an edit may ship (exit 0 pass, 1 blocked)."),
    "promote": ("editaudit.cli.gate:promote", "Move an alias to an edit's model if its gate passes."),
    "revert": ("editaudit.cli.gate:revert", "Move the aliases an edit was promoted to back."),
    "models": ("editaudit.cli.uploads:models", "Checkpoints: upload, import (timm, Hugging Face), list, get, "
               "layers, lineage, download."),
    "datasets": ("editaudit.cli.uploads:datasets", "Edit, generalization and test sets: upload, "
                 "import (image-folder archives), list, get."),
    "edits": ("editaudit.cli.edits:edits", "Edits with their audits: submit, wait, get, list, cancel."),
    "study": ("editaudit.cli.studies:study", "Studies: a grid of edits x seeds, compared; which edit to ship."),
    "audits": ("editaudit.cli.audits:audits", "Audits: get, list, report (html, markdown, json, junit)."),
    "weights": ("editaudit.cli.audits:weights", "Download an edited model's weights (sha256-verified)."),
    "archs": ("editaudit.cli.catalog:archs", "Architectures a model spec may name."),
    "methods": ("editaudit.cli.catalog:methods", "Edit methods, their traits and hyperparams."),
    "policies": ("editaudit.cli.catalog:policies", "Gate policies on the server: list, get, create."),
    "profiles": ("editaudit.cli.catalog:profiles", "Audit profiles on the server: list, get, create."),
    "aliases": ("editaudit.cli.catalog:aliases", "What an alias serves, and its history."),
    "promotions": ("editaudit.cli.catalog:promotions", "The audit trail of alias moves."),
    "webhooks": ("editaudit.cli.webhooks:webhooks", "Webhooks for edit, audit and gate events: list, create, ..."),
    "health": ("editaudit.cli.catalog:health", "Whether the server and its dependencies are ready."),
    "serve": ("editaudit.cli.server:serve", "Run the embedded server: API, local worker, SQLite, local store."),
    "migrate": ("editaudit.cli.server:migrate", "Apply the database migrations."),
    "demo": ("editaudit.cli.server:demo", "Train, break, edit, audit and gate a digits CNN (21 s on 2 CPU cores)."),
    "keys": ("editaudit.cli.keys:keys", "API keys (the database directly): create, list, revoke."),
}
SERVER_SIDE = {"serve": "api", "migrate": "api", "keys": "api", "demo": "api,worker"}


class CommandUnavailable(click.ClickException):
    """A subcommand whose module cannot be imported: exit 2 with what to install, not a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, name: str, error: BaseException):
        extra = SERVER_SIDE.get(name)
        hint = f'; it needs the {extra!r} extra: pip install "editaudit[{extra}]"' if extra else \
            "; reinstall editaudit"
        super().__init__(f"`editaudit {name}` is not available in this install ({type(error).__name__}: {error})"
                         + hint)


class LazyCommands(MutableMapping):
    """A group's `commands` that imports a subcommand on first access: `cli.commands["gate"]` works as with a plain
    dict, and iterating lists every name without importing anything."""

    def __init__(self, lazy: dict[str, tuple[str, str]]):
        self.lazy = dict(lazy)
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name in self.loaded:
            return self.loaded[name]
        if name not in self.lazy:
            raise KeyError(name)
        target = self.lazy[name][0]
        module, _, attr = target.partition(":")
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except Exception as e:  # noqa: BLE001 - ImportError and whatever a module raises on import
            raise CommandUnavailable(name, e) from e
        if not isinstance(cmd, click.Command):
            raise CommandUnavailable(name, TypeError(f"{target} is not a click command"))
        self.loaded[name] = cmd
        return cmd

    def __setitem__(self, name: str, cmd: click.Command) -> None:
        self.loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        found = self.loaded.pop(name, None) is not None
        if self.lazy.pop(name, None) is None and not found:
            raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self.lazy) | set(self.loaded)))

    def __len__(self) -> int:
        return len(set(self.lazy) | set(self.loaded))

    def __contains__(self, name: object) -> bool:
        return name in self.loaded or name in self.lazy

    def short_help(self, name: str) -> str | None:
        if name in self.loaded:
            return None
        return self.lazy.get(name, ("", None))[1]


ORDER = ["gate", "promote", "revert", "edits", "audits", "models", "datasets", "weights", "archs", "methods",
         "policies", "profiles", "aliases", "promotions", "webhooks", "health", "serve", "migrate", "demo", "keys"]


class Cli(click.Group):
    """The root group: lazy subcommands; usage errors exit 4 (the gate's contract), not click's default 2; any
    other failure exits 2 with one line on stderr, however the command is invoked (the console script,
    `python -m`, click's test runner)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands(lazy or {})

    def add_lazy(self, name: str, target: str, short_help: str = "") -> None:
        """Register `module:attribute` as subcommand `name`, imported when invoked."""
        self.commands.lazy[name] = (target, short_help)  # type: ignore[attr-defined]

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(self.commands)
        return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the registry's one-line helps: `--help` imports no subcommand."""
        rows = []
        for name in self.list_commands(ctx):
            text = self.commands.short_help(name)  # type: ignore[attr-defined]
            if text is None:
                cmd = self.get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                text = cmd.get_short_help_str(formatter.width - 6 - max(len(n) for n in self.commands))
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ImportError as e:  # a subcommand that imports, when it runs, a package this install lacks
            raise CommandUnavailable(ctx.invoked_subcommand or "?", e) from e

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
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(EXIT_ERROR if e.exit_code in (0, 1) else e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except Exception as e:  # noqa: BLE001 - an unexpected failure is an error (2), never "blocked" (1)
            internal_error(e)
        if standalone_mode:  # --help, --version and ctx.exit(n) come back as a code when not standalone
            sys.exit(rv if isinstance(rv, int) else EXIT_PASS)
        return rv


def internal_error(e: BaseException) -> None:
    """One line on stderr (the traceback too with EDITAUDIT_DEBUG=1), then exit 2."""
    if os.environ.get("EDITAUDIT_DEBUG"):
        import traceback

        traceback.print_exception(e)
    try:
        click.echo(f"error: {type(e).__name__}: {e}" + ("" if os.environ.get("EDITAUDIT_DEBUG") else
                                                        " (an internal error; EDITAUDIT_DEBUG=1 shows where)"),
                   err=True)
    finally:
        sys.exit(EXIT_ERROR)


def _show_version(ctx: click.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"editaudit, version {_version()}")
        ctx.exit(0)


def _version() -> str:
    try:
        from editaudit import __version__

        return __version__
    except Exception:  # noqa: BLE001
        from importlib.metadata import version

        return version("editaudit")


@click.group(cls=Cli, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes, every command: 0 ok, 1 blocked (a gate, a refused promotion, an edit that failed), "
                    "2 error (the server's problem, an unreachable server, an internal error), 3 not found or not "
                    "finished, 4 usage. `editaudit COMMAND --help` shows each command's options and examples.")
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, param, value: _show_version(ctx, value), help="Show the version and exit.")
@click.option("--url", default=None, metavar="URL",
              help="editaudit API for every command (default $EDITAUDIT_URL, else http://127.0.0.1:8000); a --url "
                   "after the verb wins.")
@click.option("--key", default=None, metavar="KEY",
              help="API key (default $EDITAUDIT_API_KEY); a --key after the verb wins.")
def cli(url, key):
    """editaudit: edit image classifiers and prove the edit did not quietly break robustness.

    \b
    Examples:
      editaudit demo --keep demo/                    # the whole product on a laptop CPU, files kept
      editaudit --url http://host:8000 edits list    # --url/--key before or after the verb
      editaudit edits submit edit.json --wait        # "@file" values are uploaded first
      editaudit gate "$EDIT" --policy default -o gate.xml
      editaudit models layers "$MODEL"               # what an edit's `layers` may name
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point (the console script and `python -m editaudit.cli.main`); exit codes as documented above."""
    try:
        cli.main(args=argv, prog_name="editaudit")
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - nothing leaves as a traceback with exit 1 ("blocked")
        internal_error(e)


if __name__ == "__main__":
    main()
