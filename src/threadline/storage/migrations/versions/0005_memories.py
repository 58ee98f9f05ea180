"""Memories: durable facts about a user, remembered across conversations (`withMemories`).

A memory belongs to a user of an org; deleting either deletes it. `record_id` (the aiRecord
the fact came from) has no foreign key, like `messages.record_id`. The embedding is float32
bytes on both backends (a user's few vectors are compared in numpy, not searched in SQL).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("kind", sa.String(100), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("record_id", sa.Uuid, nullable=True),
        sa.Column("embedder", sa.String(200), nullable=True),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_memories_owner_updated", "memories", ["org_id", "user_id", "updated_at"])


def downgrade() -> None:
    op.drop_table("memories")
