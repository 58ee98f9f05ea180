"""Several `threadline serve` processes started at once on one empty database all come up:
migrations and the first admin key run once, serialised between processes (PostgreSQL
advisory lock, a file lock beside a SQLite file). Real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ServerProcess, upstream_model

MODELS = {"gpt-4o-mini": upstream_model("http://127.0.0.1:9/v1")}
PROCESSES = 3


def _empty_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    server: Any = request.getfixturevalue("postgres")
    return str(server.create_database(f"n_{os.urandom(6).hex()}"))  # empty: no schema


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_processes_started_at_once_on_an_empty_database_all_come_up(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _empty_database(kind, tmp_path, request)
    servers = [
        ServerProcess(tmp_path / f"node{i}", models=MODELS, database_url=url)
        for i in range(PROCESSES)
    ]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_started(first_key=False)
        keys = {server.key for server in servers if server.key is not None}
        assert len(keys) == 1, [s.output() for s in servers]  # one admin key, printed once
        (key,) = keys
        for server in servers:
            me = httpx.get(f"{server.base_url}/api/me", headers={"API-KEY": key}, timeout=10)
            assert me.status_code == 200, me.text
            assert me.json()["user"]["userName"] == "admin"
    finally:
        for server in servers:
            server.kill()
