"""The engine, its per-backend tuning, migrations, and the read/write connection scopes that
repositories use.

SQLite (embedded default) runs in WAL mode with a busy timeout, and this process serialises
its own write transactions (`WriteTurns`), so concurrent requests queue instead of failing with
"database is locked". PostgreSQL needs neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn

from threadline.domain.clock import utcnow
from threadline.domain.errors import Unavailable
from threadline.storage import sqlite_driver
from threadline.storage.prepared import PreparedQuery

__all__ = ["Database", "as_utc", "utcnow"]

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration's revision. A start on a database already at it reads the revision
# with one query and loads no alembic (~0.15 s of CPU a process: every `threadline` command
# and server start); tests/test_migration_head.py checks that it is alembic's head.
HEAD_REVISION = "0015_soak"


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything Threadline stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


URGENT_IN_A_ROW = 4
# The advisory lock key that serialises start-up work between processes (PostgreSQL): any
# constant unlikely to be chosen by another application on the same database.
STARTUP_LOCK = 0x7468726C6D6967  # "thrlmig"


class WriteTurns:
    """Whose write transaction is next, one at a time (SQLite, in this process).

    A transaction someone is waiting on before anything can start (`urgent`: the PENDING
    record of a new reply, which its first byte waits for) goes before the others (a finished
    reply's record), yet never more than URGENT_IN_A_ROW in a row while others wait: a busy
    server starts replies promptly and still finishes every one.
    """

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()
        self._urgent_in_a_row = 0

    async def acquire(self, urgent: bool) -> None:
        if not self._busy:
            self._busy = True
            self._urgent_in_a_row = self._urgent_in_a_row + 1 if urgent else 0
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._normal).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the turn as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    (self._urgent if urgent else self._normal).remove(turn)
            raise

    def release(self) -> None:
        while True:
            urgent = bool(self._urgent) and (
                not self._normal or self._urgent_in_a_row < URGENT_IN_A_ROW
            )
            waiters = self._urgent if urgent else self._normal
            if not waiters:
                self._busy = False
                return
            turn = waiters.popleft()
            if turn.done():  # its waiter was cancelled
                continue
            self._urgent_in_a_row = self._urgent_in_a_row + 1 if urgent else 0
            turn.set_result(None)  # the turn passes on: still busy
            return


class EncodedJSON:
    """A JSON column's value already encoded (in a thread, off the event loop: a record of a
    megabyte takes tens of milliseconds to encode); written as is."""

    __slots__ = ("text",)

    def __init__(self, value: Any) -> None:
        self.text = json.dumps(value)


def json_text(value: Any) -> str:
    """The engines' JSON serializer: json.dumps, or the text of an `EncodedJSON` (a JSON
    column left empty, the most common value, without a call to json.dumps)."""
    if value is None:
        return "null"
    return value.text if isinstance(value, EncodedJSON) else json.dumps(value)


class Database:
    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_turns = WriteTurns() if self.is_sqlite else None
        self.engine: AsyncEngine = self._make_engine(url, pool_size)

    @staticmethod
    def _make_engine(url: str, pool_size: int) -> AsyncEngine:
        # hide_parameters: a database error (logged, or in a traceback) names the statement,
        # never the values written (prompts, replies, document text, key hashes).
        if not url.startswith("sqlite"):
            return create_async_engine(
                url,
                connect_args={"timeout": 10},  # a server away answers 503 soon, not in 60 s
                pool_size=pool_size,
                max_overflow=pool_size,
                hide_parameters=True,
                json_serializer=json_text,
            )
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A file database gets a pool as large as PostgreSQL's: the default (5 + 10 overflow)
        # made busy servers open and close a connection (a thread each) per request.
        in_memory = not path or path == ":memory:" or "mode=memory" in url
        sizes = {} if in_memory else {"pool_size": pool_size, "max_overflow": pool_size}
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            hide_parameters=True,
            json_serializer=json_text,
            **sizes,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if engine.dialect.driver == "aiosqlite":
            sqlite_driver.install(engine)
        return engine

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent, safe at every start; N
        processes started at once on an empty database all come up: see `exclusive`)."""
        async with self.exclusive(), self.engine.begin() as conn:
            await conn.run_sync(_upgrade_to_head)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One process at a time, across every process on this database, for work that must
        run once at start (migrations, the first admin key): on PostgreSQL a session-level
        advisory lock, held by a connection of its own and released when it ends (or when its
        process dies); on a SQLite file an exclusive `flock` on a file beside the database."""
        if self.is_sqlite:
            async with _file_lock(_sqlite_path(self.url)):
                yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK})
            await conn.commit()
            unlock = text("SELECT pg_advisory_unlock(:key)")
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):  # the lock goes with the connection
                    await conn.execute(unlock, {"key": STARTUP_LOCK})
                raise
            await conn.execute(unlock, {"key": STARTUP_LOCK})
            await conn.commit()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except Exception as error:
            if unreachable(error):
                raise Unavailable(UNREACHABLE, retry_after=RETRY_AFTER_SECONDS) from error
            raise

    @asynccontextmanager
    async def write(
        self, *, urgent: bool = False, batched: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on success and rolled back on any error.

        `urgent`: a request waits on it to start (on SQLite it goes before other writes).
        `batched`: its statements' own errors need not be raised by those statements, nor
        their rowcounts known: SQLite then sends them to its thread together (see
        `sqlite_driver`), holding the write lock for less time.

        A database that cannot be reached (down, restarting, a connection cut) raises
        `Unavailable` (a 503 with Retry-After), on reads too."""
        try:
            async with self._write(urgent, batched) as conn:
                yield conn
        except Exception as error:
            if unreachable(error):
                raise Unavailable(UNREACHABLE, retry_after=RETRY_AFTER_SECONDS) from error
            raise

    @asynccontextmanager
    async def _write(self, urgent: bool, batched: bool) -> AsyncIterator[AsyncConnection]:
        if self._write_turns is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        await self._write_turns.acquire(urgent)
        dbapi_connection = None
        try:
            async with self.engine.begin() as conn:
                if batched and conn.sync_connection is not None:
                    # the connection is checked out: no await (a greenlet trip) to reach it
                    raw = conn.sync_connection.connection.dbapi_connection
                    if sqlite_driver.start_batch(raw):
                        dbapi_connection = raw
                yield conn
        finally:
            if dbapi_connection is not None:
                sqlite_driver.end_batch(dbapi_connection)
            self._write_turns.release()

    async def run_read(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` (plain SQLAlchemy, not async) on a connection of the pool, in
        one trip through SQLAlchemy's greenlet: the connect, the statements and the close.
        For the reads of every request, where `read()`'s three trips (and a task to close)
        were a good part of a chat reply's CPU. Errors as `read()` raises them."""
        return await self._in_greenlet(_read_with, work)

    async def run_write(
        self, work: Callable[[Connection], T], *, urgent: bool = False, batched: bool = False
    ) -> T:
        """`work(connection)` in one transaction, as `write()` (committed on success, rolled
        back on any error, `urgent` and `batched` alike), in one trip through SQLAlchemy's
        greenlet instead of four."""
        turns = self._write_turns
        if turns is None:
            return await self._in_greenlet(_write_with, work, False)
        await turns.acquire(urgent)
        try:
            return await self._in_greenlet(_write_with, work, batched)
        finally:
            turns.release()

    async def run_claim(
        self,
        work: Callable[[Connection], bool],
        then: tuple[PreparedQuery, dict[str, Any]] | None = None,
        *,
        urgent: bool = False,
    ) -> list[Any] | None:
        """`work(connection)` in one batched transaction, as `run_write`, where it claims
        something (a row a conditional UPDATE finds) and returns whether it did: None when
        it did not (with a `PreparedQuery.guard` on SQLite, nothing it wrote is kept). If it
        did, the rows of `then` (a query and its values, [] without one), read after the
        commit on the same connection. The write turn is passed on at the commit, before the
        read (so the read never delays the next writer). On SQLite the claim, the writes,
        the commit and the read are one trip to the database's thread."""
        turns = self._write_turns
        if turns is None:
            return await self._in_greenlet(_claim_then_read, work, then, False, _nothing)
        await turns.acquire(urgent)
        passed = _Once(turns.release)
        try:
            return await self._in_greenlet(_claim_then_read, work, then, True, passed)
        finally:
            passed()

    async def _in_greenlet(self, function: Callable[..., T], *args: Any) -> T:
        """`function(sync_engine, *args)` in SQLAlchemy's greenlet; a database that cannot be
        reached raises `Unavailable`, as `read()` and `write()` do."""
        try:
            return await greenlet_spawn(function, self.engine.sync_engine, *args)
        except Exception as error:
            if unreachable(error):
                raise Unavailable(UNREACHABLE, retry_after=RETRY_AFTER_SECONDS) from error
            raise

    async def revisions(self) -> tuple[str | None, str]:
        """(the schema's migration revision, the newest this code has): equal when current."""
        async with self.read() as conn:
            current = await conn.run_sync(_current_revision)
        return current, HEAD_REVISION

    async def dispose(self) -> None:
        await self.engine.dispose()


UNREACHABLE = "The database cannot be reached right now; try again shortly"
RETRY_AFTER_SECONDS = 5
# PostgreSQL's SQLSTATE classes of a server that is away: 08 connection exception,
# 57P operator intervention (shutting down, starting up), 53 insufficient resources.
_AWAY_STATES = ("08", "57P", "53")
_AWAY_SQLITE = ("database is locked", "unable to open database", "disk i/o error")


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the database is away (worth a retry), not that a statement is
    wrong: a connection refused, cut or timed out, a server shutting down or starting."""
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        original = error.orig
        state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        if isinstance(state, str) and state.startswith(_AWAY_STATES):
            return True
        if isinstance(error, OperationalError) and str(original).lower().startswith(_AWAY_SQLITE):
            return True
        cause = original.__cause__ if original is not None else None
        return isinstance(cause, ConnectionError | TimeoutError)
    return False


def _read_with(engine: Engine, work: Callable[[Connection], T]) -> T:
    """In SQLAlchemy's greenlet: `work` on a connection, given back to the pool after."""
    with engine.connect() as connection:
        return work(connection)


def _write_with(engine: Engine, work: Callable[[Connection], T], batched: bool) -> T:
    """In SQLAlchemy's greenlet: `work` in a transaction (SQLite's batched when asked, until
    after its commit: see `sqlite_driver`)."""
    with engine.connect() as connection, _batch(connection, batched), connection.begin():
        return work(connection)


def _claim_then_read(
    engine: Engine,
    work: Callable[[Connection], bool],
    then: tuple[PreparedQuery, dict[str, Any]] | None,
    batched: bool,
    committed: Callable[[], None],
) -> list[Any] | None:
    """In SQLAlchemy's greenlet: `run_claim`'s transaction, `committed()` once it has ended,
    then its read when the claim held (on SQLite's batch, sent with the commit)."""
    with engine.connect() as connection:
        try:
            with _batch(connection, batched) as batch, connection.begin():
                won = work(connection)
                rows = None
                if won and then is not None:
                    rows = then[0].after_commit(connection, then[1])
        finally:
            committed()
        if not won or (batch is not None and not batch.claimed):
            return None
        if then is None:
            return []
        return rows() if rows is not None else then[0].all(connection, then[1])


@contextmanager
def _batch(connection: Connection, batched: bool) -> Iterator[sqlite_driver.Batch | None]:
    """SQLite's batch on `connection` while the block runs (its transaction inside it, so
    the commit is sent with the batch), when asked and when SQLite is the database."""
    raw = connection.connection.dbapi_connection if batched else None
    batching = raw is not None and sqlite_driver.start_batch(raw)
    try:
        yield sqlite_driver.held(raw) if batching else None
    finally:
        if batching:
            sqlite_driver.end_batch(raw)


def _nothing() -> None:
    return None


class _Once:
    """Calls `action` the first time it is called, never again."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
    if not path or path == ":memory:" or "mode=memory" in url:
        return None
    return Path(path)


@asynccontextmanager
async def _file_lock(database: Path | None) -> AsyncIterator[None]:
    """An exclusive `flock` on `<database>.migrate-lock` (waited for in a thread)."""
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".migrate-lock")
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "busy_timeout=30000",
        "synchronous=NORMAL",
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _current_revision(connection: Connection) -> str | None:
    """The database's migration revision (None before the first migration)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def _upgrade_to_head(connection: Connection) -> None:
    # At head already (every start but a new database's first): nothing to load or run.
    if _current_revision(connection) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
