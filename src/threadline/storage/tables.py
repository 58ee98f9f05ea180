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
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.types import UserDefinedType

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Seq = BigInteger().with_variant(Integer(), "sqlite")


class PgVector(UserDefinedType[str]):
    """pgvector's `vector` without a fixed dimension (the dimension is per embedder; each
    one in use gets its own partial HNSW index, see `storage/chunks.py`). Values travel as
    pgvector's text form, `[0.1,0.2,...]`."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


# float32 little-endian bytes on SQLite; pgvector on PostgreSQL.
EmbeddingType = LargeBinary().with_variant(PgVector(), "postgresql")


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
    # What runs in progress hold (the sum of the user's credit_reservations; 0007).
    Column("reserved_credit", BigInteger, nullable=False, default=0, server_default="0"),
    Column("created_by", String(200), nullable=False),
    Column("updated_by", String(200), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_users_org", "org_id"),
)

# One row per run holding credits: the run's (its aiRecord's) id, the credits it holds and
# when it took them (0007, see storage/credits.py).
credit_reservations = Table(
    "credit_reservations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("credits", BigInteger, nullable=False),
    _ts("created_at"),
    Column("node_id", Uuid, nullable=True),  # 0010: the process whose run holds it
    Index("ix_credit_reservations_created", "created_at"),
)

# One row per (API key, Idempotency-Key): see storage/idempotency.py.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Uuid, nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("request", String(300), nullable=False),
    Column("token", Uuid, nullable=False),
    Column("record_id", Uuid, nullable=True),
    Column("status_code", Integer, nullable=True),
    Column("content_type", String(200), nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("stream", Boolean, nullable=False, default=False),
    _ts("created_at"),
    _ts("locked_until"),
    PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    Index("ix_idempotency_keys_created", "created_at"),
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
    Column("metadata", JSON, nullable=True),  # 0010: OpenAI's Conversations API sets it
    _ts("created_at"),
    _ts("updated_at"),
    Column("head_id", Uuid, nullable=True),  # the current branch's last message
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
    Column("parent_id", Uuid, nullable=True),  # the message it follows: a tree
    Index("ix_messages_conversation_seq", "conversation_id", "seq"),
    Index("ix_messages_record", "record_id"),  # 0010: a response's input items
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
    Column("finish_reason", String(20), nullable=True),  # 0006
    Column("sources", JSON, nullable=True),  # 0008: storage/record_json.py
    Column("route", JSON, nullable=True),  # 0010: who wrote which part (domain RouteSegment)
    _ts("created_at"),
    _ts("updated_at"),
    Column("node_id", Uuid, nullable=True),  # 0010: the process driving the run
    _ts("settled_at", nullable=True),  # 0015: outcome stored and charged, once (records.py)
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

# ---- documents (0003) ---------------------------------------------------------------

assets = Table(
    "assets",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(500), nullable=False),
    Column("name", String(500), nullable=False),
    Column("mime_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_path", String(500), nullable=False),
    _ts("created_at"),
    UniqueConstraint("org_id", "key", name="uq_assets_org_key"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column(
        "asset_id",
        Uuid,
        ForeignKey("assets.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("name", String(500), nullable=False),
    Column("mime_type", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("page_count", Integer, nullable=False, default=0),
    Column("char_count", BigInteger, nullable=False, default=0),
    Column("token_count", BigInteger, nullable=False, default=0),
    Column("pages", JSON, nullable=False),
    # Set by every replace_chunks: the number of chunks (vector search picks exact or HNSW
    # search by the size of the candidate set), and a version that in-process caches of a
    # document's vectors compare to know they are current, whichever process wrote them.
    Column("chunk_count", Integer, nullable=False, default=0),
    Column("chunks_version", Integer, nullable=False, default=0),
    # the document's title (PDF metadata or its first page's largest text), set with the
    # chunks: a question may name a document by it (services/retrieval.py)
    Column("title", Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_documents_org_created", "org_id", "created_at"),
    Index("ix_documents_state", "state"),
    sqlite_autoincrement=True,  # a document id is public: never hand a deleted one out again
)

conversation_documents = Table(
    "conversation_documents",
    metadata,
    Column(
        "conversation_id",
        Uuid,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "document_id",
        Seq,
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("org_id", Uuid, nullable=False),
    _ts("created_at"),
    Column("created_by", String(200), nullable=False),
    PrimaryKeyConstraint("conversation_id", "document_id", name="pk_conversation_documents"),
    Index("ix_conversation_documents_document", "document_id"),
)

# Not shown here, because they are per backend (see migrations/versions/0003_documents.py
# and 0009_retrieval_context.py):
# SQLite's FTS5 table `chunks_fts` (external content, kept in step by triggers) and
# PostgreSQL's generated column `chunks.tsv` (tsvector, GIN index) and the per-dimension
# HNSW indexes made on demand by `storage/chunks.py`.
chunks = Table(
    "chunks",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("org_id", Uuid, nullable=False),
    Column(
        "document_id",
        Seq,
        ForeignKey("documents.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("ordinal", Integer, nullable=False),
    Column("page_start", Integer, nullable=False),
    Column("page_end", Integer, nullable=False),
    Column("text", Text, nullable=False),
    # file name · title · section heading (services/retrieval_context.py), and the
    # symbols of the text encoded as tokens (storage/symbols.py); both searched beside it
    Column("context", Text, nullable=True),
    Column("symbols", Text, nullable=True),
    Column("embedder", String(200), nullable=True),
    Column("dim", SmallInteger, nullable=True),
    Column("embedding", EmbeddingType, nullable=True),
    # No index leads with org_id: SQLite's planner (without statistics) would prefer it to
    # a lookup by document or by id, and scan all of an org's chunks.
    UniqueConstraint("document_id", "ordinal", name="uq_chunks_document_ordinal"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Seq, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=True),
    Column("payload", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    _ts("run_after"),
    Column("lease_owner", String(200), nullable=True),
    _ts("lease_until", nullable=True),
    Column("last_error", Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_jobs_claim", "state", "run_after", "id"),
    Index("ix_jobs_lease", "state", "lease_until"),
)

# ---- brand voices (0004) ------------------------------------------------------------

brand_voices = Table(
    "brand_voices",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("examples", JSON, nullable=False),
    Column("created_by", Uuid, nullable=False),
    Column("updated_by", Uuid, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_brand_voices_org_created", "org_id", "created_at"),
)

# ---- memories (0005) ----------------------------------------------------------------

memories = Table(
    "memories",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("content", Text, nullable=False),
    Column("kind", String(100), nullable=True),
    Column("source", String(16), nullable=False),
    Column("record_id", Uuid, nullable=True),
    # float32 little-endian bytes on both backends: a user's vectors are few and compared
    # in numpy (see services/memories.py), never searched by the database.
    Column("embedder", String(200), nullable=True),
    Column("embedding", LargeBinary, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    Index("ix_memories_owner_updated", "org_id", "user_id", "updated_at"),
)

# ---- processes and blobs (0010) -------------------------------------------------------

# The processes serving this database (API servers, workers, CLI commands), each with a
# heartbeat: a run or reservation whose process is not here any more is an orphan
# (storage/nodes.py).
nodes = Table(
    "nodes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    _ts("started_at"),
    _ts("heartbeat_at"),
)

# `blob_store = "database"`: each file as numbered chunks (storage/blobs.py).
blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("name", String(255), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("name", "seq"),
)
