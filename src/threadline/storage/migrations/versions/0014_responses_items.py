"""OpenAI's Responses and Conversations on the one store (issue 17, part 1).

- `conversations.metadata`: a conversation's key-value metadata (OpenAI's Conversations API
  sets and updates it; the other dialects leave it empty).
- `ix_messages_record`: the messages of one aiRecord (a response's input items) are found by
  `record_id`, not by scanning the table.

Revision ID: 0014_responses
Revises: 0013_idem
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_responses"
down_revision = "0013_idem"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
    op.create_index("ix_messages_record", "messages", ["record_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_record", table_name="messages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("metadata")
