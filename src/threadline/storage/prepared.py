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

`PreparedQuery` does the same for the few statements that return rows on every reply (its
history, the credit reservation, the settle claim, the user after it): on SQLite it runs the
compiled SQL on the connection's one-trip cursor (storage/sqlite_driver.py: held statements
go with it) and converts each row with the columns' own result processors, skipping
SQLAlchemy's per-execution cache key, context and result objects (about a third of such a
statement's CPU). Its rows are named tuples: fields by name, as SQLAlchemy's rows have them.
In a batch it can also be the guard the rest depends on (`guard`: the credit take, the settle
claim) or the query sent after the commit (`after_commit`: the user charged), both without a
trip of their own.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

from threadline.storage import sqlite_driver

_SQLITE = "sqlite"


class _Form:
    """A statement compiled for a positional dialect and one set of parameter names."""

    __slots__ = ("_compiled", "_names", "_ordered", "_row", "_rows", "sql")

    def __init__(self, compiled: SQLCompiler) -> None:
        self._compiled = compiled
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        # name -> processor (a sequence only for tuple-valued binds, which these have not)
        processors: dict[str, Any] = dict(compiled._bind_processors)
        self._ordered = tuple(processors.get(name) for name in self._names)
        # A row-returning statement: its columns' names and result processors.
        dialect = compiled.dialect
        columns = compiled._result_columns
        self._row: Any = namedtuple("Row", [c.keyname for c in columns], rename=True)  # type: ignore[misc]
        self._rows = tuple(c.type._cached_result_processor(dialect, None) for c in columns)

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The DBAPI parameters, as `DefaultExecutionContext._init_compiled` makes them.
        When `values` names every parameter (the usual case) they are taken from it directly;
        otherwise (a literal in the statement, a default) SQLAlchemy's `construct_params`
        fills in the rest."""
        try:
            raw = [values[name] for name in self._names]
        except KeyError:
            bound = self._compiled.construct_params(values, escape_names=False)
            raw = [bound[name] for name in self._names]
        return tuple(
            value if process is None else process(value)
            for process, value in zip(self._ordered, raw, strict=True)
        )

    def rows(self, raw: Sequence[Any]) -> list[Any]:
        """DBAPI rows as named tuples of converted values."""
        make, processors = self._row._make, self._rows
        if not any(processors):
            return [make(row) for row in raw]
        return [
            make(
                [
                    value if p is None or value is None else p(value)
                    for p, value in zip(processors, row, strict=True)
                ]
            )
            for row in raw
        ]


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
        return _form(self.statement, self._forms, dialect, values, rows=False)


class PreparedQuery:
    """A statement that returns rows (a SELECT, or a write with RETURNING), run many times
    inside `Database.run_read`/`run_write` work."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: Select[Any] | UpdateBase) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, ...], _Form | None] = {}

    def all(self, conn: Connection, values: dict[str, Any]) -> list[Any]:
        """Its rows, in `conn`'s transaction (on a batching SQLite connection, the held
        statements are sent first, in the same trip)."""
        if conn.dialect.name == _SQLITE:
            dbapi_connection = conn.connection.dbapi_connection
            if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
                form = self._form(conn.dialect, values)
                if form is not None:
                    cursor = dbapi_connection.cursor()
                    cursor.execute(form.sql, form.parameters(values))
                    return form.rows(cursor.fetchall())
        return list(conn.execute(self.statement, values))

    def first(self, conn: Connection, values: dict[str, Any]) -> Any:
        rows = self.all(conn, values)
        return rows[0] if rows else None

    def guard(self, conn: Connection, values: dict[str, Any]) -> bool:
        """Whether it returns a row, as `first(...) is not None`; on a batching SQLite
        connection it is held as the batch's guard instead (True here): the commit runs
        what follows it only if it returns a row, and `Batch.claimed` says whether it did
        (storage/sqlite_driver.py)."""
        batch, form = self._batched(conn, values)
        if batch is None or form is None:
            return self.first(conn, values) is not None
        batch.guard(form.sql, form.parameters(values))
        return True

    def after_commit(
        self, conn: Connection, values: dict[str, Any]
    ) -> Callable[[], list[Any]] | None:
        """On a batching SQLite connection: run right after the transaction's commit, in
        the commit's trip; returns how to get its rows once committed. None elsewhere (the
        caller runs it after the commit)."""
        batch, form = self._batched(conn, values)
        if batch is None or form is None:
            return None
        batch.then = (form.sql, form.parameters(values))
        return lambda: form.rows(batch.rows)

    def _batched(
        self, conn: Connection, values: dict[str, Any]
    ) -> tuple[sqlite_driver.Batch | None, _Form | None]:
        if conn.dialect.name != _SQLITE:
            return None, None
        batch = sqlite_driver.held(conn.connection.dbapi_connection)
        return (None, None) if batch is None else (batch, self._form(conn.dialect, values))

    def _form(self, dialect: Dialect, values: dict[str, Any]) -> _Form | None:
        return _form(self.statement, self._forms, dialect, values, rows=True)


def _form(
    statement: Select[Any] | UpdateBase,
    forms: dict[tuple[str, ...], _Form | None],
    dialect: Dialect,
    values: dict[str, Any],
    *,
    rows: bool,
) -> _Form | None:
    """The statement's compiled form for these parameter names (kept in `forms`), or None
    when it needs SQLAlchemy's own execution: Python-side defaults, expanding or
    literal-rendered parameters, or (`rows`) no rows returned / (not `rows`) rows returned
    or a statement SQLite's batch cannot hold."""
    keys = tuple(values)
    try:
        return forms[keys]
    except KeyError:
        pass
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    assert isinstance(compiled, SQLCompiler)
    usable = (
        compiled.positional
        and compiled.positiontup is not None
        and not compiled.insert_prefetch  # Python-side defaults: SQLAlchemy's path
        and not compiled.update_prefetch
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and not compiled.schema_translate_map
    )
    if rows:
        usable = usable and bool(compiled._result_columns)
    else:
        usable = usable and not compiled.returning and sqlite_driver.holdable(compiled.string)
    form = _Form(compiled) if usable else None
    if len(forms) < 16:  # a few call sites' key sets, not one per call
        forms[keys] = form
    return form
