"""audit results stop carrying a copy of the config

The config that ran lives in `audits.config` (with `audits.profile`); results stored before the typed audit result
(editaudit.contracts.audit_result, shape 1: no `schema_version`) also held a copy of it under `config`. This drops
the copy. The rest of a shape-1 result stays as it is: the reader (AuditResult.from_stored) reads both shapes.
Downgrade puts the copy back from the column (shape-1 rows only; code before the typed result ignored it anyway).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

audits = sa.table('audits', sa.column('id', sa.String(32)), sa.column('config', sa.JSON()),
                  sa.column('result', sa.JSON()))
BATCH = 500


def _rows(conn):
    """(id, config, result) of every audit with a result, a batch at a time (results can be large)."""
    last = ''
    while True:
        batch = conn.execute(sa.select(audits.c.id, audits.c.config, audits.c.result)
                             .where(audits.c.id > last, audits.c.result.is_not(None))
                             .order_by(audits.c.id).limit(BATCH)).all()
        if not batch:
            return
        yield from batch
        last = batch[-1][0]


def upgrade() -> None:
    conn = op.get_bind()
    for id_, _, result in _rows(conn):
        if isinstance(result, dict) and 'config' in result:
            conn.execute(audits.update().where(audits.c.id == id_)
                         .values(result={k: v for k, v in result.items() if k != 'config'}))


def downgrade() -> None:
    conn = op.get_bind()
    for id_, config, result in _rows(conn):
        if isinstance(result, dict) and 'schema_version' not in result and 'metrics' in result \
                and 'config' not in result:
            conn.execute(audits.update().where(audits.c.id == id_).values(result={**result, 'config': config}))
