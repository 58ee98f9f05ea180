"""Chat sessions: a conversation bound to one model (the Conversation Service dialect).

At most one session per (conversation, model); deleting the conversation deletes its sessions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "conversation_id",
            sa.Uuid,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint(
            "conversation_id", "model_name", name="uq_chat_sessions_conversation_model"
        ),
    )
    op.create_index(
        "ix_chat_sessions_org_conversation", "chat_sessions", ["org_id", "conversation_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_chat_sessions_org_conversation", table_name="chat_sessions")
    op.drop_table("chat_sessions")
