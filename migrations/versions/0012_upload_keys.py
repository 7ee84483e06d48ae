"""identical uploads are one row: models.upload_key and datasets.upload_key, unique per tenant

Concurrent uploads of the same bytes (and, for a model, the same spec) each found no row and each inserted one. The
key is what makes two uploads the same (editaudit.core.repo.upload_key: a model's is a digest of its weights' sha256
and its spec, a dataset's is its sha256), unique per tenant, so the second insert fails and the API answers with the
first row. Existing rows get their key, the oldest of each group of duplicates only (the others keep NULL: they stay
readable, and new uploads answer with the oldest). Edited models (the worker's) have none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 10:00:00
"""
import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def _upload_key(*parts) -> str:
    """editaudit.core.repo.upload_key as of this revision (a migration does not import code that may change)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _backfill(table: sa.TableClause, key_of, where=None) -> None:
    conn = op.get_bind()
    q = sa.select(table).order_by(table.c.created_at, table.c.id)
    seen, keys = set(), {}
    for row in conn.execute(q if where is None else q.where(where)).mappings():
        key = _upload_key(*key_of(row)) if key_of else row["sha256"]
        if (row["tenant"], key) not in seen:
            seen.add((row["tenant"], key))
            keys[row["id"]] = key
    for row_id, key in keys.items():
        conn.execute(table.update().where(table.c.id == row_id).values(upload_key=key))


def upgrade() -> None:
    for name in ('models', 'datasets'):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column('upload_key', sa.String(length=64), nullable=True))
    models = sa.table('models', sa.column('id', sa.String), sa.column('tenant', sa.String),
                      sa.column('sha256', sa.String), sa.column('spec', sa.JSON),
                      sa.column('parent_model_id', sa.String), sa.column('created_at', sa.DateTime),
                      sa.column('upload_key', sa.String))
    datasets = sa.table('datasets', sa.column('id', sa.String), sa.column('tenant', sa.String),
                        sa.column('sha256', sa.String), sa.column('created_at', sa.DateTime),
                        sa.column('upload_key', sa.String))
    _backfill(models, lambda row: (row["sha256"], row["spec"]), models.c.parent_model_id.is_(None))
    _backfill(datasets, None)
    for name in ('models', 'datasets'):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.create_unique_constraint(f'uq_{name}_tenant_upload_key', ['tenant', 'upload_key'])


def downgrade() -> None:
    for name in ('datasets', 'models'):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_constraint(f'uq_{name}_tenant_upload_key', type_='unique')
            batch_op.drop_column('upload_key')
