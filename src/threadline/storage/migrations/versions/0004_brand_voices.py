"""Brand voices: an org's named tone instructions and sample texts (`brandVoiceId`).

`created_by` / `updated_by` are user ids without a foreign key, like `ai_records.user_id`:
a voice outlives the account that wrote it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "brand_voices",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text, nullable=False),
        sa.Column("examples", sa.JSON, nullable=False),
        sa.Column("created_by", sa.Uuid, nullable=False),
        sa.Column("updated_by", sa.Uuid, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_brand_voices_org_created", "brand_voices", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_table("brand_voices")
