"""Alembic: one head, and the migrated schema equals the SQLAlchemy models (SQLite and Postgres)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from editaudit.core.db import Base
from editaudit.core.migrate import alembic_config, upgrade


def test_single_head():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, heads


def _diff(url: str) -> list:
    upgrade(url)
    with create_engine(url).connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_models_match_migrations_sqlite(tmp_path):
    assert _diff(f"sqlite:///{tmp_path / 'm.db'}") == []


@pytest.mark.services
def test_models_match_migrations_postgres(postgres_url):
    assert _diff(postgres_url) == []
