"""One trip to aiosqlite's thread per SQL statement, instead of four.

Why it exists: aiosqlite runs each call on its connection's thread, and SQLAlchemy's adapter
makes four such calls per statement (open a cursor, execute, fetch, close) plus one to roll
back every read-only connection it returns to the pool. Each trip costs the event loop a
future, a cross-thread wake-up and a context switch, and under load each waits for the
worker thread to be scheduled: a chat request made about thirty of them. Here a statement
runs with its cursor, fetch and close in one call on that thread, and a connection that
holds no transaction is returned to the pool without a rollback call.

`install(engine)` switches an aiosqlite engine's connections to this cursor as they are
made. Server-side cursors (`stream()`) keep SQLAlchemy's own.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
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


def _execute_many(connection: Any, operation: str, seq_of_parameters: Any) -> Outcome:
    db: sqlite3.Connection = connection._conn
    cursor = db.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


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
        self._run(_execute, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        self._run(_execute_many, operation, seq_of_parameters)

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
                function, connection, operation, parameters
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

    def rollback(self) -> None:
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
