"""worker heartbeats: each worker's reconciler writes one row every pass

/readyz used to ping the workers over the broker; a solo-pool worker running a job answers no ping, so a readiness
probe dropped the API during every job. Workers now beat into this table instead, and /readyz and /metrics read the
ages (editaudit.core.db.WorkerHeartbeat).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'worker_heartbeats',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('beat_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('worker_heartbeats')
