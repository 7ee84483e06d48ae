"""studies

A study is a grid of edits on one model and scenario (editaudit.contracts.studies); its runs are ordinary edits that
point at it (edits.study_id, edits.study_index). edits.worker names the worker of an edit's last attempt.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'studies',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('tenant', sa.String(length=100), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('model_id', sa.String(length=32), sa.ForeignKey('models.id'), nullable=False),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('cells', sa.JSON(), nullable=False),
        sa.Column('depths', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_studies_tenant', 'studies', ['tenant'])
    with op.batch_alter_table('edits') as batch:
        batch.add_column(sa.Column('worker', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('study_id', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('study_index', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_edits_study_id_studies', 'studies', ['study_id'], ['id'])
        batch.create_index('ix_edits_study_id', ['study_id'])


def downgrade() -> None:
    with op.batch_alter_table('edits') as batch:
        batch.drop_index('ix_edits_study_id')
        batch.drop_constraint('fk_edits_study_id_studies', type_='foreignkey')
        batch.drop_column('study_index')
        batch.drop_column('study_id')
        batch.drop_column('worker')
    op.drop_index('ix_studies_tenant', 'studies')
    op.drop_table('studies')
