"""A server process killed with SIGKILL while a reply holds credits: the reservation it
leaves (the row and the user's `reserved_credit`) is given back when the next server starts,
and the user can spend those credits again. Real processes, a real upstream that stalls
mid-reply, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Hang
from tests.live_server import free_port
from threadline.settings import Settings
from threadline.storage.database import Database
from threadline.storage.tables import ai_records, credit_reservations, users

MODEL = "stalling"
KEY_ENV = "THREADLINE_TEST_KILL_UPSTREAM_KEY"


def _config(path: Path, upstream: FakeUpstream) -> Path:
    path.write_text(
        f'default_model = "{MODEL}"\n'
        f'[models."{MODEL}"]\n'
        'provider = "openai-compatible"\n'
        f'base_url = "{upstream.url}"\n'
        f'api_key_env = "{KEY_ENV}"\n'
        'upstream_model = "fake-upstream-model"\n'
        "credits = { input_per_1k = 1000, output_per_1k = 2000 }\n"
        '[embeddings]\nprovider = "none"\n'
    )
    return path


def _serve(
    config: Path, data_dir: Path, db_url: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEY_ENV: "sk-test", "THREADLINE_DATABASE_URL": db_url}
    command = [sys.executable, "-m", "threadline", "serve", "--port", str(port)]
    command += ["--config", str(config), "--data-dir", str(data_dir)]
    with log.open("ab") as out:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _key(log: Path) -> str:
    """The admin key the first start printed."""
    for word in log.read_text().replace("'", " ").split():
        if word.startswith("tl_"):
            return word
    raise AssertionError(f"no key printed:\n{log.read_text()[-2000:]}")


async def _held(db: Database) -> tuple[int, int, list[str]]:
    async with db.read() as conn:
        reserved = (await conn.execute(select(users.c.reserved_credit))).scalars().all()
        rows = (await conn.execute(select(credit_reservations))).all()
        statuses = (await conn.execute(select(ai_records.c.status))).scalars().all()
    return sum(reserved), len(rows), list(statuses)


async def test_sigkill_while_a_reply_holds_credits_then_restart_releases_them(
    tmp_path: Path, db_url: str
):
    upstream = FakeUpstream(api_key="sk-test").start()
    config = _config(tmp_path / "threadline.toml", upstream)
    data_dir = tmp_path / "data"
    port = free_port()
    db = Database(Settings(data_dir=data_dir, database_url=db_url).resolved_database_url)
    log = tmp_path / "server.log"
    first = _serve(config, data_dir, db_url, port, log)
    try:
        upstream.enqueue(Hang(3600, after_chunks=2))  # two words, then the upstream stalls
        base = f"http://127.0.0.1:{port}"
        key = _key(log)
        body = {"model": MODEL, "promptObject": {"prompt": "Tell me a long story"}}
        with httpx.stream(
            "POST",
            f"{base}/api/chat-with-ai?isStreaming=true",
            headers={"API-KEY": key},
            json=body,
            timeout=30,
        ) as r:
            assert r.status_code == 200
            received = b""
            for chunk in r.iter_bytes():
                received += chunk
                if received.count(b"event: content") >= 2:
                    break
            reserved, rows, statuses = await _held(db)
            assert reserved > 0 and rows == 1 and statuses == ["PENDING"]
            first.send_signal(signal.SIGKILL)
            first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert (await _held(db))[:2] == (reserved, 1)  # the dead process left them held
    upstream.default = Reply("Once upon a time.")
    second = _serve(config, data_dir, db_url, port, log)
    try:
        assert await _held(db) == (0, 0, ["FAILED"])
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{base}/api/chat-with-ai", headers={"API-KEY": key}, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["aiRecord"]["status"] == "SUCCESS"
    finally:
        second.terminate()
        second.wait(30)
        upstream.stop()
        await db.dispose()
