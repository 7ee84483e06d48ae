"""Run Alembic programmatically (`editaudit migrate`, and `editaudit serve` on its embedded database)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from alembic import command
from alembic.config import Config


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("editaudit.migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@cache
def head_revision(url: str) -> str:
    """The newest migration this code ships (read from the scripts once per URL)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


def current_revision(connection) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
