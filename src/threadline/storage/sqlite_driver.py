"""One trip to aiosqlite's thread per SQL statement, instead of four.

Why it exists: aiosqlite runs each call on its connection's thread, and SQLAlchemy's adapter
makes four such calls per statement (open a cursor, execute, fetch, close) plus one to roll
back every read-only connection it returns to the pool. Each trip costs the event loop a
future, a cross-thread wake-up and a context switch, and under load each waits for the
worker thread to be scheduled: a chat request made about thirty of them. Here a statement
runs with its cursor, fetch and close in one call on that thread, and a connection that
holds no transaction is returned to the pool without a rollback call.

A write transaction can also be *batched* (`Database.write(batched=True)`, which calls
`start_batch`/`end_batch`): its INSERT, UPDATE and DELETE statements without RETURNING are
held and sent with the next statement that returns rows, or with the commit, in one trip. A
reply's writes then hold the write lock (see `database.WriteTurns`) for one trip each instead
of up to six. The price: such a statement's error is raised by the statement or commit that
sends it, and its rowcount is not known (1 is reported); so only transactions that neither
read their rowcounts nor handle a statement's error on its own use it.

A batch may also start with a *guard* (`Batch.guard`): a statement with RETURNING held like
the others, on whose row the rest depends: when it finds none, nothing after it runs and the
commit rolls the transaction back instead (`Batch.claimed` says which). And it may name a
query to run right after its commit (`Batch.then`), in the commit's trip. A reply's credit
reservation (take the credits, record who holds them) and its end (claim the record, store
and charge the reply, then read the user charged) are then one trip each instead of two and
three.

`install(engine)` switches an aiosqlite engine's connections to this cursor as they are
made. Server-side cursors (`stream()`) keep SQLAlchemy's own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, int, int | None, list[Any]]  # description, rowcount, lastrowid, rows


def _execute(connection: Any, operation: str, parameters: Any) -> Outcome:
    """On aiosqlite's thread: the whole statement."""
    db: sqlite3.Connection = connection._conn
    cursor = db.cursor()
    try:
        cursor.execute(operation, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


Statement = tuple[str, Any]  # SQL and its parameters


class Guard(tuple[str, Any]):
    """A held statement (SQL, parameters) that must return a row for the rest to run."""

    __slots__ = ()


class Batch(list[Statement]):
    """The statements held back on a connection, in order (`Guard`s among them), and what
    its commit is to do besides: the query run after it (`then`) and, once it is done,
    whether every guard found its row (`claimed`) and that query's rows (`rows`)."""

    __slots__ = ("claimed", "rows", "then")

    def __init__(self) -> None:
        super().__init__()
        self.then: Statement | None = None
        self.claimed = True
        self.rows: list[Any] = []

    def guard(self, sql: str, parameters: Any) -> None:
        """Hold a statement with RETURNING on whose row the rest depends: if it returns
        none when sent, the statements after it are not run and the commit rolls back (the
        transaction meant nothing without it), leaving `claimed` False."""
        self.append(Guard((sql, parameters)))


class GuardFailed(sqlite3.OperationalError):
    """A batch's guard found no row before its commit (a statement that returns rows sent
    the batch): the transaction fails rather than going on without it."""


def _send(db: sqlite3.Connection, held: list[Statement]) -> bool:
    """On aiosqlite's thread: the held statements in order; False, the rest not run, when a
    guard returns no row."""
    for statement in held:
        sql, values = statement
        cursor = db.execute(sql, () if values is None else values)
        try:
            if type(statement) is Guard and cursor.fetchone() is None:
                return False
        finally:
            cursor.close()
    return True


def _execute_all(
    connection: Any, held: list[Statement], operation: str, parameters: Any
) -> Outcome:
    """On aiosqlite's thread: the held statements, then this one (its outcome)."""
    if not _send(connection._conn, held):
        raise GuardFailed("the transaction's guard found no row")
    return _execute(connection, operation, parameters)


def _commit_all(
    connection: Any, held: list[Statement], then: Statement | None = None
) -> tuple[bool, list[Any]]:
    """On aiosqlite's thread: the held statements and the commit (a rollback when a guard
    found no row), then the `then` query if they were committed: (committed, its rows)."""
    db: sqlite3.Connection = connection._conn
    if not _send(db, held):
        db.rollback()
        return False, []
    db.commit()
    if then is None:
        return True, []
    sql, values = then
    cursor = db.execute(sql, () if values is None else values)
    try:
        return True, cursor.fetchall()
    finally:
        cursor.close()


def holdable(operation: str) -> bool:
    """Whether a statement may be held back in a batch."""
    head = operation.lstrip()[:7].upper()
    return head.startswith(("INSERT", "UPDATE", "DELETE")) and "RETURNING" not in operation


def held(dbapi_connection: Any) -> Batch | None:
    """The statements held back on this (adapted) connection, to which a caller may append
    one it has compiled itself (storage/prepared.py); None when it is not batching."""
    if not isinstance(dbapi_connection, OneTripConnection):
        return None
    return _held(dbapi_connection)


def _held(adapt_connection: Any) -> Batch | None:
    """The statements held back on this connection; None when it is not batching."""
    held: Batch | None = getattr(adapt_connection._connection, _HELD, None)
    return held


_HELD = "_threadline_held_statements"  # kept on the aiosqlite connection (the adapter has slots)


def start_batch(dbapi_connection: Any) -> bool:
    """Batch the write transaction beginning on this (adapted) connection, until `end_batch`
    (after its commit or rollback); see the module doc. False if it cannot be batched."""
    if not isinstance(dbapi_connection, OneTripConnection):
        return False
    setattr(dbapi_connection._connection, _HELD, Batch())
    return True


def end_batch(dbapi_connection: Any) -> None:
    with contextlib.suppress(AttributeError):
        delattr(dbapi_connection._connection, _HELD)


def _execute_many(
    connection: Any, operation: str, parameters: Any, held: list[Statement] | None = None
) -> Outcome:
    db: sqlite3.Connection = connection._conn
    if held and not _send(db, held):
        raise GuardFailed("the transaction's guard found no row")
    cursor = db.cursor()
    try:
        cursor.executemany(operation, parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


async def _nothing() -> None:
    """Completes without suspending: no trip, no turn of the event loop."""


class OneTripCursor:
    """A DBAPI cursor over an aiosqlite connection; results are fetched with the execute."""

    server_side = False
    __slots__ = ("_adapt", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt = adapt_connection
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    def execute(self, operation: Any, parameters: Any = None) -> None:
        held = _held(self._adapt)
        if held is None:
            self._run(_execute, operation, parameters)
        elif holdable(operation):
            held.append((operation, parameters))
            self.description, self.rowcount, self.lastrowid = None, 1, None
            self._rows.clear()
            await_(_nothing())  # SQLAlchemy's async layer insists that an execute awaits
        else:
            sending, held[:] = list(held), []
            self._run(partial(_execute_all, held=sending), operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        held = _held(self._adapt)
        sending = list(held) if held else None
        if held:
            held.clear()
        self._run(partial(_execute_many, held=sending), operation, seq_of_parameters)

    def _run(self, function: Any, operation: Any, parameters: Any) -> None:
        try:
            outcome = await_(self._trip(function, operation, parameters))
        except Exception as error:
            self._adapt._handle_exception(error)
        self.description, self.rowcount, self.lastrowid, rows = outcome
        self._rows = deque(rows)

    async def _trip(self, function: Any, operation: Any, parameters: Any) -> Outcome:
        connection = self._adapt._connection
        async with self._adapt._execute_mutex:
            outcome: Outcome = await connection._execute(
                function, connection, operation=operation, parameters=parameters
            )
            return outcome

    async def _async_soft_close(self) -> None:
        """Called by SQLAlchemy's asyncio results: nothing is left open on the thread."""

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(size or self.arraysize, len(rows)))]

    def fetchall(self) -> Sequence[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def commit(self) -> None:
        held = _held(self)
        if held is None or not (held or held.then):
            super().commit()
            return
        sending, held[:] = list(held), []
        then, held.then = held.then, None
        try:
            held.claimed, held.rows = await_(
                self._connection._execute(_commit_all, self._connection, sending, then)
            )
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        held = _held(self)
        if held is not None:
            held.clear()  # never sent: nothing to undo for them
            held.then = None
        db: sqlite3.Connection | None = self._connection._connection
        if db is not None and not db.in_transaction:
            return  # nothing to roll back (a read): no trip to the thread
        super().rollback()


def install(engine: AsyncEngine) -> None:
    """Give the engine's aiosqlite connections one trip per statement."""

    @event.listens_for(engine.sync_engine, "connect")
    def _one_trip(dbapi_connection: Any, _record: Any) -> None:
        if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
            dbapi_connection.__class__ = OneTripConnection
