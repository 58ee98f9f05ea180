"""Table definitions. Separate from API schemas; the migrations under `migrations/` are the
source of truth for the database shape and must be kept in step with this module."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Seq = BigInteger().with_variant(Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> Column[Any]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


orgs = Table(
    "orgs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("is_system", Boolean, nullable=False, default=False),
    _ts("created_at"),
)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("credit_limit", BigInteger, nullable=False),
    Column("used_credit", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("updated_by", String(200), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_users_org", "org_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    _ts("created_at"),
    _ts("revoked_at", nullable=True),
    Index("ix_api_keys_org", "org_id"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("type", String(40), nullable=False),
    Column("model", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("is_archived", Boolean, nullable=False, default=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_conversations_org_created", "org_id", "created_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column("org_id", Uuid, nullable=False),
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("session_id", Uuid, nullable=True),
    Column("record_id", Uuid, nullable=True),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    _ts("created_at"),
    Index("ix_messages_conversation_seq", "conversation_id", "seq"),
)

ai_records = Table(
    "ai_records",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("conversation_id", Uuid, nullable=True),
    Column("model", String(200), nullable=False),
    Column("type", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("prompt_object", JSON, nullable=False),
    Column("result_text", Text, nullable=False, default=""),
    Column("metadata", JSON, nullable=True),
    Column("citations", JSON, nullable=False),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("credits", BigInteger, nullable=False, default=0),
    Column("error", Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_ai_records_org_created", "org_id", "created_at"),
    Index("ix_ai_records_status", "status"),
)

chat_sessions = Table(
    "chat_sessions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("model_name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    UniqueConstraint("conversation_id", "model_name", name="uq_chat_sessions_conversation_model"),
    Index("ix_chat_sessions_org_conversation", "org_id", "conversation_id"),
)
