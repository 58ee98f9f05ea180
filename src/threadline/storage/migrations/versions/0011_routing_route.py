"""Which models and upstreams wrote a reply: `ai_records.route` (JSON, null when routing
played no part). A list of `{"model", "upstream", "chars"}` in the order they wrote.

Revision ID: 0011_routing
Revises: 0010_nodes
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_routing"
down_revision = "0010_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ai_records", sa.Column("route", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_records") as batch:
        batch.drop_column("route")
