"""Idempotency keys (issue 13): the `idempotency_keys` table.

One row per (API key, `Idempotency-Key` header value): the request's fingerprint, who holds
it while it runs (`token`, `locked_until`), the aiRecord it started (a chat's run) and, once
it has answered, the response to replay (`status_code`, `content_type`, `body`; `stream`
when the answer was a stream, replayed from the aiRecord). The primary key is what decides
two concurrent first requests: the database lets one INSERT through.

Revision ID: 0013_idem
Revises: 0012_anthropic
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_idem"
down_revision = "0012_anthropic"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Uuid, nullable=False),  # the caller's API key id
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("request", sa.String(300), nullable=False),  # "POST /path", for messages
        sa.Column("token", sa.Uuid, nullable=False),
        sa.Column("record_id", sa.Uuid, nullable=True),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("content_type", sa.String(200), nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created", "idempotency_keys")
    op.drop_table("idempotency_keys")
