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


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def test_upload_keys_are_filled_for_older_rows_once_per_duplicate_group(tmp_path, database):
    """0012: the oldest of identical uploads of a tenant gets the key the API computes (so a new upload of the same
    answers with it), the duplicates before it and edited models none; it downgrades."""
    from contextlib import ExitStack
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa
    from alembic import command

    from editaudit.core.repo import upload_key
    from tests.conftest import postgres_database

    spec = {"arch": "editaudit/smallcnn", "num_classes": 10, "input_shape": [1, 8, 8], "mean": None, "std": None}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if database == "postgres" else f"sqlite:///{tmp_path / 'm.db'}"
        upgrade(url, "0011")
        engine = create_engine(url)
        meta = sa.MetaData()
        meta.reflect(engine, only=["models", "datasets"])
        models, datasets = meta.tables["models"], meta.tables["datasets"]
        common = {"arch": spec["arch"], "spec": spec, "object_key": "k", "size_bytes": 1, "parent_model_id": None}
        with engine.begin() as conn:
            conn.execute(models.insert(), [
                {"id": "old", "tenant": "a", "sha256": "s" * 64, "created_at": t0, **common},
                {"id": "dup", "tenant": "a", "sha256": "s" * 64, "created_at": t0 + timedelta(1), **common},
                {"id": "b", "tenant": "b", "sha256": "s" * 64, "created_at": t0 + timedelta(2), **common},
                {"id": "edited", "tenant": "a", "sha256": "e" * 64, "created_at": t0 + timedelta(3),
                 **common, "parent_model_id": "old"}])
            conn.execute(datasets.insert(), [
                {"id": f"d{i}", "tenant": "a", "sha256": "d" * 64, "filename": "f", "object_key": "k", "n": 1,
                 "shape": [1, 8, 8], "label_max": 0, "has_x_orig": False, "has_mask": False,
                 "created_at": t0 + timedelta(i)} for i in range(2)])
        upgrade(url)
        with engine.connect() as conn:
            keys = dict(conn.execute(sa.text("SELECT id, upload_key FROM models")).all())
            dataset_keys = dict(conn.execute(sa.text("SELECT id, upload_key FROM datasets")).all())
        assert keys == {"old": upload_key("s" * 64, spec), "dup": None, "b": upload_key("s" * 64, spec),
                        "edited": None}
        assert dataset_keys == {"d0": "d" * 64, "d1": None}
        command.downgrade(alembic_config(url), "0011")
        engine.dispose()
