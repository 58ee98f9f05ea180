"""Documents: assets, documents, their links to conversations, chunks with full-text and
vector search, and the job queue that ingests them.

Full text, per backend:
- SQLite: a contentless FTS5 table `chunks_fts` (rowid = `chunks.id`; columns: the text,
  and a token naming the chunk's document), kept in step by triggers, so deletes
  by cascade (asset → document → chunks) leave no stale entries. Porter stemming over
  unicode61 (diacritics folded).
- PostgreSQL: a generated `tsvector` column `chunks.tsv` with the `english` configuration
  (stemming and stop words, like FTS5's porter tokenizer; `ts_rank_cd` weighs terms without
  IDF, so with `simple` the stop words of an OR-ed question would dominate the ranking), and
  a GIN index on it.

Vectors: `chunks.embedding` is float32 bytes on SQLite and pgvector's `vector` (no fixed
dimension) on PostgreSQL, with `chunks.dim` beside it. The HNSW index of a dimension is a
partial expression index made on demand by `storage/chunks.py` when the first embeddings of
that dimension arrive; dropping the table drops them.

The downgrade leaves the `vector` extension installed: other databases objects may use it.

Revision ID: 0003
Revises: 0002
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import UserDefinedType

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class _Vector(UserDefinedType[str]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


EMBEDDING = sa.LargeBinary().with_variant(_Vector(), "postgresql")

# `scope` holds a chunk's document as a token ("d42"), so a search can restrict the match to
# a set of documents inside FTS5 itself and rank only the chunks in scope. Contentless: the
# text is in `chunks`; the triggers hand FTS5 the old values it needs to delete a row.
_SCOPE = "'d' || {row}.document_id"
SQLITE_FTS = [
    """CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, scope, content='', tokenize='porter unicode61 remove_diacritics 2'
    )""",
    f"""CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text, scope)
        VALUES (new.id, new.text, {_SCOPE.format(row="new")});
    END""",
    f"""CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, scope)
        VALUES ('delete', old.id, old.text, {_SCOPE.format(row="old")});
    END""",
    f"""CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text, document_id ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, scope)
        VALUES ('delete', old.id, old.text, {_SCOPE.format(row="old")});
        INSERT INTO chunks_fts(rowid, text, scope)
        VALUES (new.id, new.text, {_SCOPE.format(row="new")});
    END""",
]

POSTGRES_FTS = [
    "ALTER TABLE chunks ADD COLUMN tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)",
    # A chunk's row (text ~1 kB, tsv ~1 kB, a 384-dim vector 1.5 kB) passes TOAST's 2 kB
    # threshold, and searches then fetch each vector or tsvector from the TOAST table
    # (about 2.5x slower exact vector search in the benchmark). Keep rows whole up to a
    # page; the vector, which does not compress, leaves the row only as a last resort.
    "ALTER TABLE chunks SET (toast_tuple_target = 8160)",
    "ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN",
]


def upgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"
    if is_postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    _assets()
    _documents()
    _conversation_documents()
    _chunks()
    for statement in POSTGRES_FTS if is_postgres else SQLITE_FTS:
        op.execute(statement)
    _jobs()


def _assets() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "user_id", sa.Uuid, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("mime_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_path", sa.String(500), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("org_id", "key", name="uq_assets_org_key"),
    )


def _documents() -> None:
    op.create_table(
        "documents",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Uuid, nullable=False),
        sa.Column(
            "asset_id",
            sa.Uuid,
            sa.ForeignKey("assets.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("mime_type", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("page_count", sa.Integer, nullable=False),
        sa.Column("char_count", sa.BigInteger, nullable=False),
        sa.Column("token_count", sa.BigInteger, nullable=False),
        sa.Column("pages", sa.JSON, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("chunks_version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_documents_org_created", "documents", ["org_id", "created_at"])
    op.create_index("ix_documents_state", "documents", ["state"])


def _conversation_documents() -> None:
    op.create_table(
        "conversation_documents",
        sa.Column(
            "conversation_id",
            sa.Uuid,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "document_id", SEQ, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("org_id", sa.Uuid, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "document_id", name="pk_conversation_documents"),
    )
    op.create_index("ix_conversation_documents_document", "conversation_documents", ["document_id"])


def _chunks() -> None:
    op.create_table(
        "chunks",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Uuid, nullable=False),
        sa.Column(
            "document_id", SEQ, sa.ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("page_start", sa.Integer, nullable=False),
        sa.Column("page_end", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedder", sa.String(200), nullable=True),
        sa.Column("dim", sa.SmallInteger, nullable=True),
        sa.Column("embedding", EMBEDDING, nullable=True),
        sa.UniqueConstraint("document_id", "ordinal", name="uq_chunks_document_ordinal"),
    )


def _jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("org_id", sa.Uuid, sa.ForeignKey("orgs.id", ondelete="CASCADE"), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("run_after", TS, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobs_claim", "jobs", ["state", "run_after", "id"])
    op.create_index("ix_jobs_lease", "jobs", ["state", "lease_until"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS chunks_fts")
    for table in ("jobs", "chunks", "conversation_documents", "documents", "assets"):
        op.drop_table(table)
