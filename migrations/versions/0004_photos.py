"""product photos: metadata, checkpoints, and the database store's blobs (posync.photos)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _s(length: int) -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table('posync_photo',
    sa.Column('id', _s(64), nullable=False),
    sa.Column('product_id', _s(64), nullable=False),
    sa.Column('object_key', _s(500), nullable=False),
    sa.Column('filename', _s(255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', _s(100), nullable=False),
    sa.Column('checksum', _s(64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('sort_order', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('image_url', sa.Text(), nullable=True),
    sa.Column('stored_key', _s(500), nullable=True),
    sa.Column('stored_checksum', _s(64), nullable=True),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sync_status', _s(20), nullable=False),
    sa.Column('sync_error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ho_deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('posync_photo', schema=None) as batch_op:
        batch_op.create_index('ix_posync_photo_product', ['product_id', 'is_primary'], unique=False)
        batch_op.create_index('ix_posync_photo_status', ['sync_status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_posync_photo_checksum', ['checksum'], unique=False)
        batch_op.create_index('ix_posync_photo_object_key', ['object_key'], unique=False)
        batch_op.create_index('ix_posync_photo_last_sync', ['last_sync_at'], unique=False)

    op.create_table('posync_photo_checkpoint',
    sa.Column('source', _s(200), nullable=False),
    sa.Column('updated_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_incremental_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_full_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_summary', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('source')
    )
    op.create_table('posync_photo_blob',
    sa.Column('object_key', _s(500), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('md5', _s(32), nullable=False),
    sa.Column('content_type', _s(100), nullable=False),
    sa.Column('chunks', sa.Integer(), nullable=False),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('object_key')
    )
    op.create_table('posync_photo_chunk',
    sa.Column('object_key', _s(500), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('object_key', 'seq')
    )


def downgrade() -> None:
    op.drop_table('posync_photo_chunk')
    op.drop_table('posync_photo_blob')
    op.drop_table('posync_photo_checkpoint')
    with op.batch_alter_table('posync_photo', schema=None) as batch_op:
        for name in ('ix_posync_photo_last_sync', 'ix_posync_photo_object_key', 'ix_posync_photo_checksum',
                     'ix_posync_photo_status', 'ix_posync_photo_product'):
            batch_op.drop_index(name)
    op.drop_table('posync_photo')
