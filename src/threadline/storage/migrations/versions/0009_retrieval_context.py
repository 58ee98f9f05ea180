"""Contextual chunks and symbols (issue 18): `chunks.context`, `chunks.symbols` and
`documents.title`.

- `context`: the chunk's file name, document title and section heading
  (`services/retrieval_context.py`), searched beside the text with its own weight.
- `symbols`: the identifiers, commands, options and paths of the chunk as written
  (`storage/symbols.py`), each encoded as one letters-and-digits token, so a full-text
  index finds `glp_exact` or `R_DEFAULT_PACKAGES` whole instead of as common words.

SQLite: `chunks_fts` is made again with the columns (text, scope, context, symbols) and its
triggers, and filled from the rows there are. PostgreSQL: the generated `tsv` becomes the
context (weight A) and the text (weight D); a second generated column `symbols_tsv`
(`simple` configuration: the tokens are no words to stem) with its own GIN index.

Chunks stored before this revision have neither: re-ingest a document (delete and upload
it again) to give its chunks their context and symbols.

Revision ID: 0009_retrieval
Revises: 0008_thin
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_retrieval"
down_revision = "0008_thin"
branch_labels = None
depends_on = None

_SCOPE = "'d' || {row}.document_id"
_CONTEXT = "coalesce({row}.context, '')"
_SYMBOLS = "coalesce({row}.symbols, '')"


def _values(row: str) -> str:
    return (
        f"{row}.id, {row}.text, {_SCOPE.format(row=row)}, {_CONTEXT.format(row=row)}, "
        f"{_SYMBOLS.format(row=row)}"
    )


_TRIGGERS = ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update")
_COLUMNS = "rowid, text, scope, context, symbols"
SQLITE_FTS = [
    """CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, scope, context, symbols, content='',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    f"""CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts({_COLUMNS}) VALUES ({_values("new")});
    END""",
    f"""CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, {_COLUMNS}) VALUES ('delete', {_values("old")});
    END""",
    f"""CREATE TRIGGER chunks_fts_update
        AFTER UPDATE OF text, document_id, context, symbols ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, {_COLUMNS}) VALUES ('delete', {_values("old")});
        INSERT INTO chunks_fts({_COLUMNS}) VALUES ({_values("new")});
    END""",
    f"INSERT INTO chunks_fts({_COLUMNS}) SELECT {_values('chunks')} FROM chunks",
]

POSTGRES_FTS = [
    "DROP INDEX IF EXISTS ix_chunks_tsv",
    "ALTER TABLE chunks DROP COLUMN tsv",
    "ALTER TABLE chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english'::regconfig, coalesce(context, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, text), 'D')) STORED",
    "CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)",
    "ALTER TABLE chunks ADD COLUMN symbols_tsv tsvector GENERATED ALWAYS AS ("
    "to_tsvector('simple'::regconfig, coalesce(symbols, ''))) STORED",
    "CREATE INDEX ix_chunks_symbols_tsv ON chunks USING gin (symbols_tsv)",
]


def _drop_sqlite_fts() -> None:
    for trigger in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS chunks_fts")


def upgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("chunks", sa.Column("context", sa.Text, nullable=True))
    op.add_column("chunks", sa.Column("symbols", sa.Text, nullable=True))
    op.add_column("documents", sa.Column("title", sa.Text, nullable=True))
    if not is_postgres:
        _drop_sqlite_fts()
    for statement in POSTGRES_FTS if is_postgres else SQLITE_FTS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_chunks_symbols_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN symbols_tsv")
        op.execute("DROP INDEX IF EXISTS ix_chunks_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN tsv")
        op.execute(
            "ALTER TABLE chunks ADD COLUMN tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED"
        )
        op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
        op.drop_column("chunks", "symbols")
        op.drop_column("chunks", "context")
        op.drop_column("documents", "title")
        return
    _drop_sqlite_fts()
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("title")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("symbols")
        batch.drop_column("context")
    op.execute(
        """CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, scope, content='', tokenize='porter unicode61 remove_diacritics 2'
        )"""
    )
    scope = "'d' || {row}.document_id"
    op.execute(
        f"""CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, text, scope)
            VALUES (new.id, new.text, {scope.format(row="new")});
        END"""
    )
    op.execute(
        f"""CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text, scope)
            VALUES ('delete', old.id, old.text, {scope.format(row="old")});
        END"""
    )
    op.execute(
        f"""CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text, document_id ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, text, scope)
            VALUES ('delete', old.id, old.text, {scope.format(row="old")});
            INSERT INTO chunks_fts(rowid, text, scope)
            VALUES (new.id, new.text, {scope.format(row="new")});
        END"""
    )
    op.execute(
        "INSERT INTO chunks_fts(rowid, text, scope) SELECT id, text, 'd' || document_id FROM chunks"
    )
