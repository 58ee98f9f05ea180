"""Several processes on one database (issue 13): who drives a run, and files in the database.

- `nodes`: every process serving the database, with a heartbeat (storage/nodes.py).
- `ai_records.node_id`, `credit_reservations.node_id`: the process whose run it is, so that a
  process starting (or noticing a dead sibling) fails only the runs of processes that are
  gone, never those of a live sibling. Rows from before this revision have none: they are
  taken for orphans, as before.
- `blob_chunks`: files kept in the database (`blob_store = "database"`), in numbered chunks.

Revision ID: 0010_nodes
Revises: 0009_retrieval
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_nodes"
down_revision = "0009_retrieval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("ai_records", sa.Column("node_id", sa.Uuid, nullable=True))
    op.add_column("credit_reservations", sa.Column("node_id", sa.Uuid, nullable=True))
    op.create_table(
        "blob_chunks",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("name", "seq"),
    )


def downgrade() -> None:
    op.drop_table("blob_chunks")
    with op.batch_alter_table("credit_reservations") as batch:
        batch.drop_column("node_id")
    with op.batch_alter_table("ai_records") as batch:
        batch.drop_column("node_id")
    op.drop_table("nodes")
