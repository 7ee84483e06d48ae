"""`editaudit serve|migrate|demo`: the commands that run the server side. They import the server's packages only
when invoked (a CI install without them still runs every other command)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile

import click

from editaudit import __version__


def _settings(data_dir: str | None):
    from editaudit.core.settings import Settings, get_settings

    if data_dir:
        os.environ["EDITAUDIT_DATA_DIR"] = data_dir
    get_settings.cache_clear()
    return Settings() if data_dir else get_settings()


@click.command(epilog="Exit codes: 0 stopped cleanly, 2 error (a busy port, an API that did not start).")
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
            thread = server.thread
            assert thread is not None  # started on entering the context
            while thread.is_alive():
                thread.join(timeout=0.5)
    except RuntimeError as e:  # a busy port, or an API that did not start: nothing was left running
        raise click.ClickException(str(e)) from None


@click.command(epilog="Exit codes: 0 at head, 2 error.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
def migrate(data_dir: str | None):
    """Apply the database migrations (alembic upgrade head) to $EDITAUDIT_DATABASE_URL or the embedded SQLite."""
    from editaudit.core.migrate import upgrade

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo("database is at head")


@click.command(epilog="Exit codes: 0 the demo ran (whatever the verdict), 2 error, 4 usage (a --keep folder "
                      "holding other files).")
@click.option("--url", default=None, metavar="URL",
              help="Use a running server instead of starting an embedded one (also `editaudit --url URL demo`).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Embedded server data directory (default: a fresh temporary directory).")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(1, 100), help="Training epochs.")
@click.option("--keep", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="Leave the files the demo used in DIR (model, datasets, spec, edit request, policy, README.txt) "
                   "to run it again with `editaudit edits submit DIR/edit.json`.")
@click.option("-o", "--output", "--report", "report", default="editaudit-demo-report.html", show_default=True,
              metavar="FILE", help="Where to save the audit's HTML report (plots included); '' to skip.")
def demo(url: str | None, data_dir: str | None, epochs: int, keep: str | None, report: str):
    """Train a digits CNN, break it with a background texture, rewrite one layer from 8 exemplars, audit the edit
    and print the gate verdict (21 s on a 2-core CPU, see docs/benchmarks.md; needs the api and worker extras).

    \b
    Example:
      editaudit demo --keep demo/     # then: cat demo/README.txt
    """
    from editaudit.cli.demo import check_keep_dir, run_demo

    root = click.get_current_context().find_root().params
    url, key = url or root.get("url"), root.get("key")
    if keep:
        check_keep_dir(keep)
    if url:
        sys.exit(run_demo(url, epochs, report or None, keep, key=key))
    from editaudit.cli.embedded import EmbeddedServer

    settings = _settings(data_dir or tempfile.mkdtemp(prefix="editaudit-demo-"))
    click.echo(f"starting the embedded server (data in {settings.data_dir.resolve()}) ...")
    with EmbeddedServer(settings) as server:
        code = run_demo(server.url, epochs, report or None, keep)
    sys.exit(code)
