"""labels are int64: datasets.label_max as BIGINT

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.alter_column('label_max', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.alter_column('label_max', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
