"""The loop-lag guard (tests/loop_watch.py) fires on a handler that blocks the event loop,
names it, and stays quiet for a handler that waits without blocking."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.helpers import make_settings
from tests.live_server import LiveServer
from tests.loop_watch import LIMIT_SECONDS
from threadline.container import create_app

pytestmark = pytest.mark.skipif(LIMIT_SECONDS <= 0, reason="the loop-lag guard is turned off")

# The inner tests run in a pytester session with this repository's plugin and fixtures; the
# blocking route is served through the app's middleware, so app code is on the stack.
INNER = textwrap.dedent(
    """
    import asyncio, time

    import httpx
    import pytest

    from tests.conftest import *  # noqa: F403  (the suite's settings, app, client fixtures)


    def add_routes(app):
        async def block_the_loop() -> dict:
            end = time.thread_time() + 0.6
            while time.thread_time() < end:  # 0.6 s of CPU on the loop
                pass
            return {"blocked": True}

        async def wait_politely() -> dict:
            await asyncio.sleep(0.5)
            return {"blocked": False}

        app.add_api_route("/test/block", block_the_loop)
        app.add_api_route("/test/wait", wait_politely)


    @pytest.fixture(params=["sqlite"])
    def db_url(request, tmp_path):
        return f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}"


    async def test_blocks(app, client):
        add_routes(app)
        assert (await client.get("/test/block")).status_code == 200


    async def test_waits(app, client):
        add_routes(app)
        assert (await client.get("/test/wait")).status_code == 200


    @pytest.mark.loop_blocking("blocks on purpose, to show the marker")
    async def test_blocks_with_marker(app, client):
        add_routes(app)
        assert (await client.get("/test/block")).status_code == 200
    """
)


def test_the_guard_fails_a_test_whose_handler_blocks_the_loop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    result = pytester.runpytest_inprocess("-p", "tests.loop_watch", "-q")
    out = result.stdout.str()
    summary = out.split("short test summary")[-1]
    # Judged after the call, or after teardown when the stall closed late (then an ERROR).
    outcomes = ("FAILED", "ERROR")
    assert any(f"{o} test_inner.py::test_blocks[sqlite]" in summary for o in outcomes), out
    assert "test_waits" not in summary and "test_blocks_with_marker" not in summary, out
    failed = "test_inner.py::test_blocks[sqlite] - Failed: event loop 'app' blocked"
    assert any(f"{o} {failed}" in out for o in outcomes), out
    assert "block_the_loop" in out and "while time.thread_time() < end" in out, out
    used = re.search(r"the loop's thread used (\d+) ms of CPU", out)
    assert used is not None and int(used.group(1)) >= 400, out  # its CPU time, not ~0
    assert "stalls not blamed on the app" in out, out  # the marked test's stall is listed


def test_under_xdist_the_stalls_not_blamed_are_listed_by_the_controller(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(Path(__file__).resolve().parent.parent)  # `tests` importable in the child
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    result = pytester.runpytest_subprocess(
        *("-p", "tests.loop_watch", "-q", "-n", "1", "-k", "test_blocks_with_marker"),
        *("-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"),
    )
    out = result.stdout.str()
    assert result.ret == 0, out
    listed = out.split("stalls not blamed on the app")[-1]
    assert "stalls not blamed on the app" in out, out  # printed by the controller
    assert "test_inner.py::test_blocks_with_marker[sqlite]: " in listed, out
    assert listed.count("test_blocks_with_marker") == 1, out  # once, not per phase


def test_the_guard_watches_the_live_server(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db'}"))

    async def block_the_live_loop() -> dict[str, bool]:
        import time

        time.sleep(0.6)  # noqa: ASYNC251 (the point of the test: asleep on the loop)
        return {"blocked": True}

    app.add_api_route("/test/block", block_the_live_loop)
    server = LiveServer(app)
    base = server.start()
    try:
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.get(base + "/test/block").status_code == 200
    finally:
        server.stop()
    stalls = server._watch.take()
    assert len(stalls) == 1
    assert 0.5 < stalls[0].seconds < 5
    found = stalls[0].culprit()
    assert found is not None, stalls[0].report()
    assert any(frame.name == "block_the_live_loop" for frame in found), stalls[0].report()
    assert "block_the_live_loop" in stalls[0].report()
