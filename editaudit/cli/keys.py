"""`editaudit keys create|list|revoke`: the operator's bootstrap. These talk to the database directly (as `editaudit
migrate` does: $EDITAUDIT_DATABASE_URL, or the embedded SQLite under --data-dir), because the first key cannot be
made through an API that already requires one."""

from __future__ import annotations

import sys
from typing import Any

import click

from editaudit.cli.common import EXIT_ERROR, EXIT_MISSING, echo_json
from editaudit.contracts.scopes import ALL_SCOPES
from editaudit.core.tables import render

KEYS_EXIT = "Exit codes: 0 ok, 2 the database cannot be used (run `editaudit migrate`), 3 no such key, 4 usage."

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="The embedded server's data directory (default: $EDITAUDIT_DATA_DIR or ./editaudit-data); ignored when "
         "$EDITAUDIT_DATABASE_URL is set.")


def _session(data_dir: str | None):
    """A session on the configured database (Settings read from the environment, --data-dir taking precedence);
    unscoped: the operator manages every tenant's keys."""
    from editaudit.core import db
    from editaudit.core.settings import Settings

    settings = Settings(data_dir=data_dir) if data_dir else Settings()
    return db.unscoped_session(db.session_factory(settings.resolved_database_url),
                               "editaudit keys: the operator manages every tenant's keys")


def _database_error(e: Exception) -> None:
    click.echo(f"error: the database cannot be used ({type(e).__name__}: {str(e).splitlines()[0]}); "
               "is it migrated? run `editaudit migrate`", err=True)
    sys.exit(EXIT_ERROR)


@click.group()
def keys():
    """API keys: each request's tenant, actor (the key's name) and scopes. Only a hash of a key is stored."""


@keys.command("create", epilog=KEYS_EXIT)
@click.option("--tenant", required=True, help="Everything the key creates belongs to this tenant.")
@click.option("--name", required=True, help="Who or what uses the key (recorded as the actor of promotions).")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(ALL_SCOPES),
              help="Repeat for several; admin holds every scope.")
@data_dir_option
def create(tenant, name, scopes, data_dir):
    """Create a key and print its token once (on stdout, alone, so `KEY=$(editaudit keys create ...)` works)."""
    from sqlalchemy.exc import SQLAlchemyError

    from editaudit.core.keys import KeyError_, create_key

    try:
        with _session(data_dir) as s:
            row, token = create_key(s, tenant, name, list(scopes))
            prefix, scope_list = row.prefix, ", ".join(row.scopes)
    except KeyError_ as e:
        raise click.UsageError(str(e)) from None
    except SQLAlchemyError as e:
        _database_error(e)
    click.echo(f"created key {prefix}… for tenant {tenant!r}, name {name!r}, scopes: {scope_list}", err=True)
    click.echo("warning: the token below is shown only now and cannot be shown again; store it as a secret "
               "(EDITAUDIT_API_KEY)", err=True)
    click.echo(token)


@keys.command("list", epilog=KEYS_EXIT)
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@data_dir_option
def list_(tenant, as_json, data_dir):
    """Every key (never its secret): prefix, tenant, name, scopes, when it was created and revoked."""
    from sqlalchemy.exc import SQLAlchemyError

    from editaudit.core.keys import list_keys

    try:
        with _session(data_dir) as s:
            rows: list[dict[str, Any]] = [
                {"id": k.id, "prefix": k.prefix, "tenant": k.tenant, "name": k.name, "scopes": list(k.scopes),
                 "created_at": k.created_at.isoformat(),
                 "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}
                for k in list_keys(s, tenant)]
    except SQLAlchemyError as e:
        _database_error(e)
    if as_json:
        echo_json(rows)
        return
    click.echo(render(["prefix", "tenant", "name", "scopes", "created", "revoked", "id"],
                      [[k["prefix"], k["tenant"], k["name"], ",".join(k["scopes"]), k["created_at"][:19],
                        (k["revoked_at"] or "-")[:19], k["id"]] for k in rows], align_right=set()))


@keys.command("revoke", epilog=KEYS_EXIT)
@click.argument("id_or_prefix")
@data_dir_option
def revoke(id_or_prefix, data_dir):
    """Revoke a key by its id or prefix (as `keys list` shows them). A running API stops accepting it within its
    key cache time ($EDITAUDIT_KEY_CACHE_S, 5 s by default)."""
    from sqlalchemy.exc import SQLAlchemyError

    from editaudit.core.keys import KeyError_, revoke_key

    if not id_or_prefix.strip():
        raise click.UsageError("give a key's id or prefix")
    try:
        with _session(data_dir) as s:
            row = revoke_key(s, id_or_prefix)
            assert row.revoked_at is not None  # revoke_key sets it
            line = (f"revoked key {row.prefix}… (tenant {row.tenant!r}, name {row.name!r}) at "
                    f"{row.revoked_at.isoformat()}")
    except KeyError_ as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_MISSING)
    except SQLAlchemyError as e:
        _database_error(e)
    click.echo(line)
