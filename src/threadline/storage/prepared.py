"""A reply's writes, compiled once and handed to SQLite's batch without SQLAlchemy's
per-statement execution.

Why it exists: every chat reply writes about ten rows (its record, messages, conversation,
credits; storage/records.py, storage/credits.py). In a batched SQLite transaction
(`Database.write(batched=True)`, storage/sqlite_driver.py) those statements are only held and
sent with the commit, yet each `conn.execute` still cost SQLAlchemy's full execution path
(cache key, execution context, result object): most of a reply's database CPU. A `Prepared`
statement keeps its compiled form per dialect and set of parameter names and, on a batching
SQLite connection, binds the values with the compiled form's own bind processors (as
SQLAlchemy does) and appends the statement to the batch. Everywhere else (PostgreSQL, a
transaction that is not batched, a statement with Python-side defaults or expanding
parameters) it is `conn.execute(statement, values)`.

    _INSERT_MESSAGE = Prepared(insert(messages))
    async with db.write(batched=True) as conn:
        await _INSERT_MESSAGE.run(conn, message_values(message))
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from threadline.storage import sqlite_driver

_SQLITE = "sqlite"


class _Form:
    """A statement compiled for a positional dialect and one set of parameter names."""

    __slots__ = ("_compiled", "_names", "_processors", "sql")

    def __init__(self, compiled: SQLCompiler) -> None:
        self._compiled = compiled
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        # name -> processor (a sequence only for tuple-valued binds, which these have not)
        self._processors: dict[str, Any] = dict(compiled._bind_processors)

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The DBAPI parameters, as `DefaultExecutionContext._init_compiled` makes them."""
        bound = self._compiled.construct_params(values, escape_names=False)
        processors = self._processors
        return tuple(
            processors[name](bound[name]) if name in processors else bound[name]
            for name in self._names
        )


class Prepared:
    """A write statement (INSERT, UPDATE or DELETE without RETURNING) run many times."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, ...], _Form | None] = {}

    async def run(self, conn: AsyncConnection, values: dict[str, Any]) -> None:
        """Execute it in `conn`'s transaction (on a batching SQLite connection: held, sent
        with the next statement that returns rows or with the commit)."""
        if conn.dialect.name == _SQLITE:
            sync = conn.sync_connection
            held = None if sync is None else sqlite_driver.held(sync.connection.dbapi_connection)
            if held is not None:
                form = self._form(conn.dialect, values)
                if form is not None:
                    held.append((form.sql, form.parameters(values)))
                    return
        await conn.execute(self.statement, values)

    def run_sync(self, conn: Connection, values: dict[str, Any]) -> None:
        """`run` on a plain connection (in `Database.run_write`'s work)."""
        if conn.dialect.name == _SQLITE:
            held = sqlite_driver.held(conn.connection.dbapi_connection)
            if held is not None:
                form = self._form(conn.dialect, values)
                if form is not None:
                    held.append((form.sql, form.parameters(values)))
                    return
        conn.execute(self.statement, values)

    def _form(self, dialect: Dialect, values: dict[str, Any]) -> _Form | None:
        keys = tuple(values)
        try:
            return self._forms[keys]
        except KeyError:
            pass
        compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys))
        assert isinstance(compiled, SQLCompiler)
        usable = (
            compiled.positional
            and compiled.positiontup is not None
            and not compiled.insert_prefetch  # Python-side defaults: SQLAlchemy's path
            and not compiled.update_prefetch
            and not compiled.literal_execute_params
            and not compiled.post_compile_params
            and not compiled.returning
            and not compiled.schema_translate_map
            and sqlite_driver.holdable(compiled.string)
        )
        form = _Form(compiled) if usable else None
        if len(self._forms) < 16:  # a few call sites' key sets, not one per call
            self._forms[keys] = form
        return form
