"""the kind of the syncer's last failure (auth, unavailable, error): posync_outlet.last_error_kind

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 18:40:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('posync_outlet', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_error_kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('posync_outlet', schema=None) as batch_op:
        batch_op.drop_column('last_error_kind')
