"""Several API processes on one database (issue 13), real processes on SQLite and PostgreSQL:

- a process starting beside a sibling's live reply leaves it alone (recovery fails only the
  replies of processes that are gone), and a sibling killed with SIGKILL mid-reply has its
  reply failed, with the text it had checkpointed, by the survivor's heartbeat, no restart;
- `threadline serve --workers 2`: two processes on one port; one killed is replaced by the
  supervisor while the other keeps answering; the supervisor killed with SIGKILL takes its
  children with it (no orphan keeps the port).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import content, frames_of
from tests.server_process import ServerProcess, upstream_model

STOPPED = "the server stopped before the reply ended"
LEASE = 3.0  # a beat a second
SETTINGS = {"stream_checkpoint_seconds": 0.2, "node_lease_seconds": LEASE}
BODY = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "Go"}}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _server(path: Path, db_url: str, upstream: FakeUpstream) -> ServerProcess:
    return ServerProcess(
        path,
        models={"gpt-4o-mini": upstream_model(upstream.url, timeout_seconds=60)},
        database_url=db_url,
        settings=SETTINGS,
    )


def _record(server: ServerProcess, key: str, record_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{server.base_url}/api/chat-with-ai/{record_id}", headers={"API-KEY": key}, timeout=10
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["aiRecord"])


def _until(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_sibling_leaves_live_replies_alone_and_fails_a_killed_ones(
    tmp_path: Path, db_url: str, upstream: FakeUpstream
) -> None:
    first = _server(tmp_path / "a", db_url, upstream)
    second = _server(tmp_path / "b", db_url, upstream)
    first.start()
    key = first.key
    assert key is not None
    url = f"{first.base_url}/api/chat-with-ai?isStreaming=true"
    try:
        upstream.enqueue(Reply(tokens=1000, delay=0.05))  # 50 s: outlives what follows
        with httpx.stream("POST", url, headers=first.headers(), json=BODY, timeout=30) as r:
            assert r.status_code == 200
            record_id = r.headers["x-ai-record-id"]
            frames = frames_of(r.iter_lines())
            received = [next(frames)]
            second.launch()  # its start-up recovery runs while this reply streams
            second.wait_started(first_key=False)
            before_second = len(content(received))
            assert _record(second, key, record_id)["status"] == "PENDING"
            began = time.monotonic()
            for frame in frames:  # the reply goes on through the sibling's heartbeats
                received.append(frame)
                if time.monotonic() - began > LEASE:
                    break
            assert received[-1]["event"] == "content", received[-1]
            assert _record(second, key, record_id)["status"] == "PENDING"
            first.kill()  # mid-reply
        # the survivor's heartbeat sees its sibling gone (same host, pid dead): FAILED
        failed = _until(lambda: _record(second, key, record_id)["status"] == "FAILED", 4 * LEASE)
        stored = _record(second, key, record_id)
        assert failed, stored
        assert stored["error"] == STOPPED
        [kept] = stored["aiRecordDetail"]["resultObject"]
        text = content(received)
        assert text.startswith(kept) or kept.startswith(text)
        assert len(kept) > before_second
    finally:
        first.kill()
        second.kill()


def _workers(pid: int) -> set[int]:
    """The uvicorn worker processes of a `serve --workers` parent."""
    found = set()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.add(int(child))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_serve_with_two_workers_answers_on_one_port_and_replaces_a_dead_one(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """On SQLite (the sibling test above covers both databases). Last, the supervisor is
    killed outright: its workers follow it within seconds and the port is free."""
    server = _server(tmp_path / "w", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", upstream)
    server.launch(("--workers", "2"))
    try:
        server.wait_started()
        assert server.pid is not None
        assert "(2 processes)" in server.output()
        workers = _until(lambda: len(_workers(server.pid)) == 2 and _workers(server.pid), 60)
        assert workers, server.output()
        me = f"{server.base_url}/api/me"
        with httpx.Client(timeout=10) as client:
            assert all(
                client.get(me, headers=server.headers()).status_code == 200 for _ in range(10)
            )
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            # the survivor answers meanwhile (new connections: the dead one accepts none)
            for _ in range(5):
                with httpx.Client(timeout=10) as fresh:
                    assert fresh.get(me, headers=server.headers()).status_code == 200
        replaced = _until(
            lambda: len(_workers(server.pid)) == 2 and victim not in _workers(server.pid), 60
        )
        assert replaced, server.output()
        upstream.enqueue(Reply("hello from a worker"))
        r = httpx.post(
            f"{server.base_url}/api/chat-with-ai", headers=server.headers(), json=BODY, timeout=30
        )
        assert r.status_code == 200, r.text
        assert r.json()["aiRecord"]["aiRecordDetail"]["resultObject"] == ["hello from a worker"]
        children = _workers(server.pid)
        assert len(children) == 2 and server.port is not None
        assert not _port_free(server.port)
        os.kill(server.pid, signal.SIGKILL)  # the supervisor alone, not its process group
        gone = _until(lambda: not any(_alive(pid) for pid in children), 10)
        assert gone, [pid for pid in children if _alive(pid)]
        assert _until(lambda: _port_free(server.port), 5)
    finally:
        server.kill()  # reaps the supervisor; any straggler of its group goes too
        assert server.pid is None
