"""What a reply read beside its documents: `ai_records.sources` (JSON, storage/record_json.py).

Null for a reply that read nothing of the kind and for the records stored before this
revision, which kept the same facts inside their prompt object (1min.ai's names), where the
1min.ai dialect still finds them.

Revision ID: 0008_thin
Revises: 0007_credits
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_thin"
down_revision = "0007_credits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ai_records", sa.Column("sources", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ai_records") as batch:
        batch.drop_column("sources")
