"""audit shards and per-sample results

An audit is split into shards (runs of whole batches) that workers evaluate in parallel under leases of their own
(audit_shards); the coordinator merges them into the per-sample outcomes file every statistic is computed from
(audits.samples_key, Parquet) and the kept inputs of flipped samples (audits.images_key). Audits from before this
revision have neither.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 20:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audits') as batch:
        batch.add_column(sa.Column('samples_key', sa.String(length=300), nullable=True))
        batch.add_column(sa.Column('images_key', sa.String(length=300), nullable=True))
    op.create_table(
        'audit_shards',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('tenant', sa.String(length=100), nullable=False),
        sa.Column('audit_id', sa.String(length=32), sa.ForeignKey('audits.id'), nullable=False),
        sa.Column('edit_id', sa.String(length=32), sa.ForeignKey('edits.id'), nullable=False),
        sa.Column('index', sa.Integer(), nullable=False),
        sa.Column('coordinator', sa.String(length=32), nullable=False),
        sa.Column('plan', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('lease_token', sa.String(length=32), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('result_key', sa.String(length=300), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('worker', sa.String(length=200), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('audit_id', 'index'),
    )
    op.create_index('ix_audit_shards_tenant', 'audit_shards', ['tenant'])
    op.create_index('ix_audit_shards_audit_id', 'audit_shards', ['audit_id'])


def downgrade() -> None:
    op.drop_index('ix_audit_shards_audit_id', 'audit_shards')
    op.drop_index('ix_audit_shards_tenant', 'audit_shards')
    op.drop_table('audit_shards')
    with op.batch_alter_table('audits') as batch:
        batch.drop_column('images_key')
        batch.drop_column('samples_key')
