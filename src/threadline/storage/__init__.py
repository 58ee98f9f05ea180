"""SQL storage: SQLAlchemy 2 Core tables, Alembic migrations and the repositories that
implement the ports of `threadline.domain.ports` on SQLite (embedded) and PostgreSQL."""
