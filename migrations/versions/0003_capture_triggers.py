"""capture in the database; checkpoints for the seed profile

posync's capture moved into the database (triggers on the host's pushed tables, installed by
``posync.capture.install``, not by migrations: they depend on the host's registry). This revision adds
the two tables the SQLite triggers work with (posync.models.capture), makes ``posync_checkpoint.ho_version``
text (the seed HO's version is one scalar, possibly a timestamp), records the id reconciliation, and
widens versions to 64 bits (posync derives them from HO's ``updated_at`` when HO sends none).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:30:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('posync_capture_off',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.create_table('posync_capture_replaced',
                    sa.Column('resource', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
                    sa.Column('entity_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
                    sa.Column('cloud_version', sa.BigInteger(), nullable=True),
                    sa.PrimaryKeyConstraint('resource', 'entity_id'))
    with op.batch_alter_table('posync_checkpoint', schema=None) as batch_op:
        batch_op.alter_column('ho_version', existing_type=sa.BigInteger(),
                              type_=sqlmodel.sql.sqltypes.AutoString(length=100), existing_nullable=True,
                              postgresql_using='ho_version::text')
        batch_op.add_column(sa.Column('last_reconcile_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reconcile_marker', sqlmodel.sql.sqltypes.AutoString(length=200),
                                      nullable=True))
    # versions posync derives from HO's updated_at (microseconds) do not fit 32 bits
    with op.batch_alter_table('posync_outbox', schema=None) as batch_op:
        batch_op.alter_column('entity_version', existing_type=sa.Integer(), type_=sa.BigInteger(),
                              existing_nullable=True)
        batch_op.alter_column('base_version', existing_type=sa.Integer(), type_=sa.BigInteger(),
                              existing_nullable=True)
    with op.batch_alter_table('posync_conflict', schema=None) as batch_op:
        batch_op.alter_column('remote_version', existing_type=sa.Integer(), type_=sa.BigInteger(),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('posync_conflict', schema=None) as batch_op:
        batch_op.alter_column('remote_version', existing_type=sa.BigInteger(), type_=sa.Integer(),
                              existing_nullable=False)
    with op.batch_alter_table('posync_outbox', schema=None) as batch_op:
        batch_op.alter_column('base_version', existing_type=sa.BigInteger(), type_=sa.Integer(),
                              existing_nullable=True)
        batch_op.alter_column('entity_version', existing_type=sa.BigInteger(), type_=sa.Integer(),
                              existing_nullable=True)
    with op.batch_alter_table('posync_checkpoint', schema=None) as batch_op:
        batch_op.drop_column('reconcile_marker')
        batch_op.drop_column('last_reconcile_at')
        # a seed HO's version need not be a number: those checkpoints are forgotten (the next pull reads all)
        batch_op.alter_column('ho_version', existing_type=sqlmodel.sql.sqltypes.AutoString(length=100),
                              type_=sa.BigInteger(), existing_nullable=True,
                              postgresql_using="CASE WHEN ho_version ~ '^[0-9]+$' THEN ho_version::bigint END")
    op.drop_table('posync_capture_replaced')
    op.drop_table('posync_capture_off')
