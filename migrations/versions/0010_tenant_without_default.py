"""a row's tenant is never a default

0007 gave `tenant` a server default ('default') on the four tables that existed before tenants, so their old rows
would belong to the tenant anonymous access used. That default outlived its purpose: an INSERT that forgets the
tenant filed the row under tenant `default`. Without it, such an INSERT fails (NOT NULL); the ORM stamps the tenant
of the session (editaudit.core.db, "Tenant scope"). Downgrade puts the default back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

DEFAULTED = ('models', 'datasets', 'edits', 'audits')


def upgrade() -> None:
    for table in DEFAULTED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('tenant', existing_type=sa.String(length=100), existing_nullable=False,
                                  server_default=None)


def downgrade() -> None:
    for table in DEFAULTED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('tenant', existing_type=sa.String(length=100), existing_nullable=False,
                                  server_default='default')
