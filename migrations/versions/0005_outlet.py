"""the outlet this database belongs to (seed 003's OutletConfig): posync_outlet; the syncer lease: posync_lease

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 15:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _s(length: int) -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table('posync_outlet',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('outlet_id', _s(100), nullable=False),
    sa.Column('company_id', _s(100), nullable=False),
    sa.Column('store_id', _s(100), nullable=False),
    sa.Column('ho_url', _s(500), nullable=False),
    sa.Column('outlet_code', _s(100), nullable=True),
    sa.Column('brand_id', _s(100), nullable=True),
    sa.Column('sync_enabled', sa.Boolean(), nullable=False),
    sa.Column('last_sync_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('credentials', sa.LargeBinary(), nullable=True),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('auth_error', sa.Text(), nullable=True),
    sa.Column('last_cycle_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    lease = op.create_table('posync_lease',
    sa.Column('name', _s(50), nullable=False),
    sa.Column('holder', _s(100), nullable=True),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('token', sa.Integer(), nullable=False),
    sa.Column('trigger_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.bulk_insert(lease, [{'name': 'syncer', 'holder': None, 'expires_at': 0.0, 'token': 0, 'trigger_at': None}])


def downgrade() -> None:
    op.drop_table('posync_lease')
    op.drop_table('posync_outlet')
