"""outbox entity index without status

The entity index was (resource, entity_id, status, id). Every lease and every settle changes an
item's status, so each one also moved the item's entry in this index: a delete and an insert per
pushed change. Keyed on (resource, entity_id, id), the index is only touched when an item is
enqueued or deleted. Its readers (an entity's items in commit order, "is this the entity's only
item", its pending followers) seek on resource and entity_id and see a handful of entries each,
so they filter on status at no cost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 08:10:00
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('posync_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_posync_outbox_entity')
        batch_op.create_index('ix_posync_outbox_entity', ['resource', 'entity_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('posync_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_posync_outbox_entity')
        batch_op.create_index('ix_posync_outbox_entity', ['resource', 'entity_id', 'status', 'id'], unique=False)
