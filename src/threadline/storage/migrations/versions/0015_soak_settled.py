"""A reply is settled once (issue 13: a frozen owner must not charge twice).

- `ai_records.settled_at`: when the reply was settled, its outcome stored and its charge
  made, by its own run's end (`RecordStore.finish`) or by another process that took its
  owner for dead (`RecordStore.abandon`). Both are conditional on it being NULL, in the
  transaction that charges, so of an owner that was only frozen and the reader that ended its
  reply meanwhile, one settles and the other does nothing. Existing rows keep NULL: their
  runs ended long ago (nullable, so adding it rewrites no table).

Revision ID: 0015_soak
Revises: 0014_responses
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_soak"
down_revision = "0014_responses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ai_records", sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_records") as batch:
        batch.drop_column("settled_at")
