"""Why a reply ended: `ai_records.finish_reason` ("stop", "length", "content_filter").

Null for a record still PENDING, a FAILED one, and the records stored before this revision
(whose reason nobody recorded).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ai_records", sa.Column("finish_reason", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_records") as batch:
        batch.drop_column("finish_reason")
