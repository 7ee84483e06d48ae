"""layer sweeps, safetensors deltas, reverts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 16:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('edits', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sweep', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('sweep_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('delta_object_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('delta_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reverted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_edits_sweep_id'), ['sweep_id'], unique=False)
        batch_op.create_foreign_key('fk_edits_sweep_id_edits', 'edits', ['sweep_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('edits', schema=None) as batch_op:
        batch_op.drop_constraint('fk_edits_sweep_id_edits', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_edits_sweep_id'))
        batch_op.drop_column('reverted_at')
        batch_op.drop_column('delta_sha256')
        batch_op.drop_column('delta_object_key')
        batch_op.drop_column('sweep_id')
        batch_op.drop_column('sweep')
