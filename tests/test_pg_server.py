"""The throwaway PostgreSQL server that the integration tests run against (tests/pg_server.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

try:
    from tests.pg_server import EmbeddedPostgres
except ImportError:  # tests/ not a package
    from pg_server import EmbeddedPostgres  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
pg_server = sys.modules[EmbeddedPostgres.__module__]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the root-only code path")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    print(f"embedded PostgreSQL started in {server.startup_seconds:.2f} s")
    yield server
    server.stop()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _postmasters_for(data_dir: Path) -> list[int]:
    """Live processes whose command line names ``data_dir`` (the postmaster does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if os.fsencode(str(data_dir)) in argv and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split()[1]
    raise AssertionError(f"no {key} line for {pid}")


def _uid(pid: int) -> int:
    return int(_status(pid, "Uid"))


def _modes(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in (path, *path.parents)}


async def _vector_distance(server: EmbeddedPostgres) -> float:
    conn = await asyncpg.connect(server.dsn())
    try:
        return float(await conn.fetchval("select '[1,2,3]'::vector <-> '[1,2,4]'::vector"))
    finally:
        await conn.close()


def test_url_has_the_promised_form(pg: EmbeddedPostgres) -> None:
    assert re.fullmatch(
        rf"postgresql\+asyncpg://threadline:threadline@127\.0\.0\.1:{pg.port}/threadline_test",
        pg.url,
    )
    assert pg.startup_seconds is not None and pg.startup_seconds < 30


async def test_it_is_postgresql_18(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert (await conn.fetchval("select version()")).startswith("PostgreSQL 18.")
        assert int(await conn.fetchval("show server_version_num")) // 10000 == 18
        assert await conn.fetchval("select current_database()") == "threadline_test"
    finally:
        await conn.close()


async def test_url_works_with_sqlalchemy(pg: EmbeddedPostgres) -> None:
    engine = create_async_engine(pg.url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("select current_database()")) == "threadline_test"
    finally:
        await engine.dispose()


async def test_pgvector_extension_is_there(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("select extversion from pg_extension where extname = 'vector'")
    finally:
        await conn.close()
    assert await _vector_distance(pg) == 1.0


async def test_server_is_tuned_for_tests(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        for name, value in {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "listen_addresses": "127.0.0.1",
        }.items():
            assert await conn.fetchval(f"show {name}") == value, name
    finally:
        await conn.close()


def test_server_never_runs_as_root(pg: EmbeddedPostgres) -> None:
    assert pg.pid is not None
    uid = _uid(pg.pid)
    assert uid != 0
    if os.geteuid() != 0:
        assert uid == os.geteuid()  # not root: it simply runs as us
    elif pg._ambient_caps:
        assert int(_status(pg.pid, "CapAmb"), 16) == 1 << 2  # CAP_DAC_READ_SEARCH, no more
    else:
        assert int(_status(pg.pid, "CapEff"), 16) == 0


@needs_root
async def test_as_root_nothing_outside_base_dir_is_chmodded(tmp_path: Path) -> None:
    account = pg_server._ensure_os_user()
    if not pg_server._ambient_caps_work(account.pw_uid, account.pw_gid):
        pytest.skip("no CAP_DAC_READ_SEARCH to hand on here: the chmod fallback is used")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    before = _modes(locked)
    with EmbeddedPostgres(locked / "pg") as server:
        assert server._ambient_caps
        assert await _vector_distance(server) == 1.0
        assert _modes(locked) == before
        # Another pytest session of root resets /tmp/pytest-of-root to 0700: no matter.
        assert server.create_database("after_reset").endswith("/after_reset")


@needs_root
async def test_as_root_without_capabilities_falls_back_to_chmod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_server, "_ambient_caps_work", lambda uid, gid: False)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with EmbeddedPostgres(locked / "pg") as server:
        assert not server._ambient_caps
        assert server.pid is not None
        assert _uid(server.pid) != 0
        assert int(_status(server.pid, "CapEff"), 16) == 0
        assert await _vector_distance(server) == 1.0
        assert locked.stat().st_mode & 0o001  # given the search bit, and nothing more
        assert not locked.stat().st_mode & 0o006


async def test_create_database_is_isolated(pg: EmbeddedPostgres) -> None:
    url_a = pg.create_database("iso_a")
    url_b = pg.create_database("iso_b")
    assert url_a == pg.url.removesuffix("threadline_test") + "iso_a"
    assert url_b == pg.url.removesuffix("threadline_test") + "iso_b"

    a = await asyncpg.connect(pg.dsn("iso_a"))
    b = await asyncpg.connect(pg.dsn("iso_b"))
    main = await asyncpg.connect(pg.dsn())
    try:
        assert await a.fetchval("select current_database()") == "iso_a"
        assert await a.fetchval("select count(*) from pg_tables where schemaname = 'public'") == 0
        await a.execute("create table items (id int primary key, embedding vector(3))")
        await a.execute("insert into items values (1, '[1,2,3]')")
        assert await a.fetchval("select count(*) from items") == 1
        for other in (b, main):
            assert await other.fetchval("select to_regclass('public.items')") is None
        # every fresh database has pgvector
        assert await b.fetchval("select '[0,0]'::vector <-> '[3,4]'::vector") == 5.0
    finally:
        for conn in (a, b, main):
            await conn.close()

    with pytest.raises(RuntimeError, match="already exists"):
        pg.create_database("iso_a")
    for bad in ("bad name", 'x"; drop database threadline_test; --', "postgres", ""):
        with pytest.raises(ValueError):
            pg.create_database(bad)

    pg.drop_database("iso_a")
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(pg.dsn("iso_a"))


async def test_stop_leaves_no_postgres_process(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    server.start()
    postmaster = server.pid
    assert postmaster is not None
    client = await asyncpg.connect(server.dsn())  # a session that is still open at stop()
    backend = await client.fetchval("select pg_backend_pid()")
    pids = {postmaster, backend, *_children(postmaster)}
    assert len(pids) >= 4  # postmaster, the backend, checkpointer, walwriter...
    assert _postmasters_for(server.data_dir) == [postmaster]

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    client.terminate()

    assert [pid for pid in pids if _alive(pid)] == []
    assert _postmasters_for(server.data_dir) == []
    assert not (server.data_dir / "postmaster.pid").exists()
    assert not server.running
    server.stop()  # idempotent


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path) as server:
        postmaster = server.pid
        assert postmaster is not None and _alive(postmaster)
        assert server.create_database("cm_db").endswith("/cm_db")
    assert not _alive(postmaster)
    assert _postmasters_for(server.data_dir) == []


_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from pg_server import EmbeddedPostgres

server = EmbeddedPostgres(Path(sys.argv[2]))
server.start()
print(server.pid, flush=True)
if sys.argv[3] == "wait":
    sys.stdin.read()  # until killed
"""


@pytest.mark.parametrize("ending", ["normal exit without stop()", "SIGKILL"])
def test_no_server_outlives_the_process_that_started_it(tmp_path: Path, ending: str) -> None:
    killed = ending == "SIGKILL"
    if killed and not pg_server._setpriv_supports("--pdeathsig"):
        pytest.skip("no setpriv --pdeathsig here: only atexit protects the server")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(HERE), str(tmp_path), "wait" if killed else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        postmaster = int(child.stdout.readline())
        if killed:
            assert _alive(postmaster)
            child.kill()
        child.wait(timeout=60)
    finally:
        child.kill()
        child.stdin.close()
        child.stdout.close()
    deadline = time.monotonic() + 15
    while _alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(postmaster)
    assert _postmasters_for(tmp_path.resolve() / "data") == []
