"""ingest status: models and datasets that a worker checks before they can be used

A timm or Hugging Face checkpoint cannot be checked against its architecture without torch, and an image-folder
archive cannot be decoded by the API: such uploads are `validating` until an ingest job on a worker has checked the
checkpoint (or decoded the archive into shards), then `ready` or `invalid` with the reason. Rows from before this
revision were checked at upload: they are `ready`.

models.info: what the ingest job found (the resolved spec's source, the module table edits' `layers` are checked
against). datasets.classes: the class names (image folders); datasets.manifest: the shards a sharded dataset is
read from; datasets.options: the import options (resize, crop, class_to_idx) the ingest job applies;
datasets.progress: the ingest job's images decoded so far.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('models', 'datasets'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='ready'))
            batch.add_column(sa.Column('error', sa.Text(), nullable=True))
            batch.add_column(sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('models') as batch:
        batch.add_column(sa.Column('info', sa.JSON(), nullable=True))
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('classes', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('manifest', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('options', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('progress', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        for col in ('progress', 'options', 'manifest', 'classes'):
            batch.drop_column(col)
    with op.batch_alter_table('models') as batch:
        batch.drop_column('info')
    for table in ('models', 'datasets'):
        with op.batch_alter_table(table) as batch:
            for col in ('ingested_at', 'error', 'status'):
                batch.drop_column(col)
