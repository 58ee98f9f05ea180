"""A small Threadline cluster for the scale-out tests: two `threadline serve` processes on one
PostgreSQL and one Redis, with the fake upstream.

Why it exists: what Redis adds (rate limits counted across processes, invalidations, live
streams followed from another process, run ownership, degraded mode) shows only between real
processes. The nodes keep files in the database (`blob_store = "database"`), so an upload
to one is read on the other and ingested by the worker. The cluster is costly to start (two
servers), so tests share it: the `cluster`
fixture (session scope; conftest.py) starts it once per test process. A test that kills a
node or stops Redis brings it back before it ends (`revive`, `RedisServer.start`).

    cluster.a, cluster.b        # ServerProcess (tests/server_process.py), each its own data dir
    cluster.worker()            # a `threadline worker` on the same database, started on first use
    cluster.redis.stop()        # the same port on start(): the nodes reconnect by themselves
    cluster.upstream.enqueue(Reply(tokens=400, delay=0.01))
    member = cluster.new_key()  # a new user with its own key (never the rate-limited admin's)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from tests.fake_upstream import FakeUpstream
from tests.live_server import free_port
from tests.server_process import ServerProcess, WorkerProcess, upstream_model
from threadline.domain.entities import Role
from threadline.services.accounts import AccountService, hash_key, new_key
from threadline.storage.accounts import SqlAccountStore
from threadline.storage.database import Database

MODEL = "gpt-4o-mini"
PRICES = {"input_per_1k": 1000, "output_per_1k": 1000}  # a credit a token: charges are visible
RATE_LIMIT = 10  # per minute and key, across the cluster
AUTH_CACHE_SECONDS = 30.0
NO_DISK = (
    "--save",
    "",
    "--appendonly",
    "no",
)  # so long that only an invalidation explains a quick revocation


class RedisServer:
    """A real `redis-server` on 127.0.0.1, no persistence; `stop()` and `start()` again keep
    its port (what a restarted Redis looks like to its clients)."""

    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._binary = server
        self._workdir = workdir
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            [self._binary, *("--port", str(self.port), "--bind", "127.0.0.1"), *NO_DISK],
            cwd=self._workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@dataclass(frozen=True)
class Member:
    """A user of the cluster's org with its own key."""

    secret: str
    user_id: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"API-KEY": self.secret}


@dataclass
class Cluster:
    database_url: str
    redis: RedisServer
    upstream: FakeUpstream
    a: ServerProcess
    b: ServerProcess
    workdir: Path
    job_worker: WorkerProcess | None = None

    def worker(self) -> WorkerProcess:
        """The cluster's `threadline worker` (the nodes run none), started on first use."""
        if self.job_worker is None or self.job_worker.pid is None:
            self.job_worker = WorkerProcess(self.workdir / "worker", self.a.values)
            self.job_worker.start()
        return self.job_worker

    def new_key(self, role: Role = Role.MEMBER, credit_limit: int = 1_000_000) -> Member:
        """A new user of the org "cluster" (its own credits and rate-limit window), made in
        the database directly: the admin's key is rate-limited like any other."""

        async def issue() -> Member:
            db = Database(self.database_url)
            try:
                accounts = AccountService(SqlAccountStore(db), credit_limit)
                name = f"u-{os.urandom(4).hex()}"
                issued = await accounts.issue_key_in(
                    "cluster", role=role, user_name=name, create=True
                )
                return Member(issued.secret, str(issued.user.id), str(issued.key.id))
            finally:
                await db.dispose()

        return asyncio.run(issue())

    def more_keys(self, member: Member, count: int) -> list[str]:
        """`count` more keys of the member's user (each with its own rate-limit window)."""

        async def issue() -> list[str]:
            db = Database(self.database_url)
            try:
                store = SqlAccountStore(db)
                user = await store.get_user(await self._org_id(store), UUID(member.user_id))
                assert user is not None
                keys = []
                for _ in range(count):
                    secret, prefix = new_key()
                    await store.create_key(user.org_id, user.id, "more", prefix, hash_key(secret))
                    keys.append(secret)
                return keys
            finally:
                await db.dispose()

        return asyncio.run(issue())

    @staticmethod
    async def _org_id(store: SqlAccountStore) -> UUID:
        org = await store.find_org_by_name("cluster")
        assert org is not None
        return org.id

    def revive(self, node: ServerProcess) -> None:
        """Start a node again after a kill (its data dir, the same database and Redis)."""
        if node.pid is None:
            node.start()


def start_cluster(workdir: Path, database_url: str) -> Cluster:
    redis = RedisServer(workdir)
    redis.start()
    upstream = FakeUpstream().start()
    nodes = []
    try:
        for name in ("a", "b"):
            node = ServerProcess(
                workdir / name,
                models={MODEL: upstream_model(upstream.url, timeout_seconds=60, credits=PRICES)},
                database_url=database_url,
                settings={
                    "redis_url": redis.url,
                    "rate_limit_per_minute": RATE_LIMIT,
                    "auth_cache_seconds": AUTH_CACHE_SECONDS,
                    "stream_checkpoint_seconds": 0.5,
                    "blob_store": "database",
                    "page_size_max": 500,  # a test's every upload in one page
                    "documents": {
                        "embedded_worker": False,
                        "worker_concurrency": 4,  # for `worker()`
                        "job_lease_seconds": 5.0,
                    },
                },
            )
            if nodes:  # one database: only the first start prints the admin key
                node.key = nodes[0].key
            node.start()
            nodes.append(node)
    except BaseException:
        for node in nodes:
            node.kill()
        upstream.stop()
        redis.stop()
        raise
    return Cluster(database_url, redis, upstream, nodes[0], nodes[1], workdir)


def stop_cluster(cluster: Cluster) -> None:
    if cluster.job_worker is not None:
        cluster.job_worker.kill()
    for node in (cluster.a, cluster.b):
        with contextlib.suppress(Exception):
            node.stop(timeout=10)
    cluster.upstream.stop()
    cluster.redis.stop()


def metric(node: ServerProcess, name: str) -> float | None:
    """A metric's value in the node's /metrics (no labels), None when absent."""
    text = httpx.get(f"{node.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def chat_body(prompt: str = "Go") -> dict[str, Any]:
    return {"type": "UNIFY_CHAT_WITH_AI", "model": MODEL, "promptObject": {"prompt": prompt}}
