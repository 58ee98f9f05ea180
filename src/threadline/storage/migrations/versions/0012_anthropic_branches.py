"""Conversations that branch (issue 17): `messages.parent_id` and `conversations.head_id`.

A message follows its parent (the first of a conversation has none), so the messages of a
conversation form a tree; the conversation's head is the message its current branch ends
with. History for a new message, and every list, is the path from the root to the head.

Existing conversations become single branches: each message's parent is the message before
it (by `seq`) in its conversation, and the head is the last one. The downgrade drops both
columns (the branches off the head's path stay as messages, listed in `seq` order again).

Revision ID: 0012_anthropic
Revises: 0011_routing
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_anthropic"
down_revision = "0011_routing"
branch_labels = None
depends_on = None

_PARENTS = """
UPDATE messages SET parent_id = (
    SELECT earlier.id FROM messages AS earlier
    WHERE earlier.conversation_id = messages.conversation_id AND earlier.seq < messages.seq
    ORDER BY earlier.seq DESC LIMIT 1
)
"""
_HEADS = """
UPDATE conversations SET head_id = (
    SELECT last.id FROM messages AS last
    WHERE last.conversation_id = conversations.id
    ORDER BY last.seq DESC LIMIT 1
)
"""


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        # no index: a path is walked up by `id` (unique), a tree read by conversation
        batch.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("head_id", sa.Uuid(), nullable=True))
    op.execute(_PARENTS)
    op.execute(_HEADS)


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("head_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("parent_id")
