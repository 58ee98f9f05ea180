"""Alembic environment. Threadline runs migrations itself (`storage.database.migrate`), handing
over a live connection in `config.attributes["connection"]`; this file only wires that up."""

from alembic import context

from threadline.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
