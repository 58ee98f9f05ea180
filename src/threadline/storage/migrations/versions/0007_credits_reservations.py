"""Credit reservations: `users.reserved_credit` and the `credit_reservations` table.

A run reserves the most it can cost before its model starts (one conditional update of the
user's `reserved_credit`, and a row naming the run) and settles to its real cost when it ends
(the row deleted, its credits released, the real cost charged, in one transaction). A row left
behind by a process that died is released when a server starts (see `storage/credits.py`).

Revision ID: 0007_credits
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_credits"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("reserved_credit", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.Uuid, primary_key=True),  # the run's (its aiRecord's) id
        sa.Column("org_id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.Uuid, nullable=False),
        sa.Column("credits", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_credit_reservations_created", "credit_reservations", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_reservations_created", "credit_reservations")
    op.drop_table("credit_reservations")
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it): a batch copy of `users`
    # would DROP TABLE users, which SQLite refuses while another statement reads it.
    op.drop_column("users", "reserved_credit")
