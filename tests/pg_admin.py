"""One kept connection for the statements tests/pg_server.py sends while a test session runs.

Why it exists: every PostgreSQL test gets a database of its own (`CREATE DATABASE ...
TEMPLATE`), made before the test starts. A `psql` process per statement cost ~75 ms of wall
time and ~8 ms of CPU (the process, its connection's SCRAM exchange) on each of ~600 tests a
run; a statement on a connection kept open costs ~25 ms and no process. The connection is
asyncpg's, on an event loop of its own thread: a caller may be a test's own running loop,
which it blocks for the statement as the `psql` process did.

A server stopped and started again (the outage tests) answers on a new connection: the kept
one is closed at `stop()`, and one found dead is opened again once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

import asyncpg

STATEMENT_TIMEOUT = 120.0


class AdminConnection:
    """`execute(sql)` on a connection to `dsn()` (called at each connect: the port can
    change on a restart), opened on first use in this process."""

    def __init__(self, dsn: Callable[[], str]) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._pid: int | None = None

    def execute(self, sql: str) -> None:
        """Run one statement; a failure is a RuntimeError with the server's message."""
        with self._lock:
            loop = self._running_loop()
            future = asyncio.run_coroutine_threadsafe(self._execute(sql), loop)
            try:
                future.result(STATEMENT_TIMEOUT)
            except asyncpg.PostgresError as error:
                raise RuntimeError(f"{sql!r} failed: {error}") from error

    def close(self) -> None:
        """Close the connection and end the loop's thread (idempotent; `execute` opens them
        again)."""
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is None or self._pid != os.getpid():
                self._conn = None
                return
            asyncio.run_coroutine_threadsafe(self._disconnect(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._pid != os.getpid():  # none yet, or a forked child's
            self._conn, self._pid = None, os.getpid()
            self._loop = loop = asyncio.new_event_loop()
            threading.Thread(target=_serve, args=(loop,), name="pg-admin", daemon=True).start()
        return self._loop

    async def _execute(self, sql: str) -> None:
        for attempt in (1, 2):
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn(), timeout=10)
            try:
                await self._conn.execute(sql, timeout=STATEMENT_TIMEOUT)
                return
            except (asyncpg.ConnectionDoesNotExistError, ConnectionError, OSError):
                await self._disconnect()  # the server went away and came back: once more
                if attempt == 2:
                    raise

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (asyncpg.PostgresError, ConnectionError, OSError, TimeoutError):
                conn.terminate()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:
        loop.close()
