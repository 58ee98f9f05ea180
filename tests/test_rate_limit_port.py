"""The rate limiter behind its port: the accounts service admits a request (key, then limit),
and the `limits`-based implementation shares its windows through whatever storage it is
given (a Redis that two processes share, for the scale-out)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import RedisServer
from tests.helpers import make_settings
from threadline.container import Container
from threadline.domain.entities import Role
from threadline.domain.errors import RateLimited, Unauthorized
from threadline.storage.rate_limits import WindowRateLimiter


async def test_admit_authenticates_then_counts_each_key_in_its_own_window(
    tmp_path: Path, db_url: str
) -> None:
    container = Container(make_settings(tmp_path, db_url, rate_limit_per_minute=2))
    await container.start(worker=False)
    try:
        first = await container.bootstrap()
        assert first is not None
        other = await container.accounts.issue_key_in(
            "acme", role=Role.MEMBER, user_name="bo", create=True
        )

        with pytest.raises(Unauthorized):
            await container.accounts.admit("tl_000000000000_not-a-key")
        for _ in range(2):
            admitted = await container.accounts.admit(first.secret)
            assert admitted.user.id == first.user.id
        with pytest.raises(RateLimited) as caught:
            await container.accounts.admit(first.secret)
        assert 1 <= caught.value.retry_after <= 60
        assert "2 per minute" in caught.value.message

        # another key has its own window; an unknown key was never counted against anyone
        assert (await container.accounts.admit(other.secret)).user.name == "bo"
        # authenticating (no request admitted) counts nothing
        assert (await container.accounts.authenticate(first.secret)).user.id == first.user.id
    finally:
        await container.stop()


async def test_a_limit_of_zero_admits_everything() -> None:
    limiter = WindowRateLimiter(0)
    for _ in range(1000):
        await limiter.hit("key")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield f"async+redis://127.0.0.1:{server.port}"
    finally:
        server.stop()


async def test_two_limiters_on_one_redis_share_the_window(redis_url: str) -> None:
    """Two processes' limiters (two instances, two connections) let exactly the limit through."""
    a = WindowRateLimiter(3, redis_url, implementation="redispy")
    b = WindowRateLimiter(3, redis_url, implementation="redispy")
    passed = refused = 0
    for limiter in (a, b, a, b, a, b):
        try:
            await limiter.hit("key-1")
            passed += 1
        except RateLimited:
            refused += 1
    assert (passed, refused) == (3, 3)
    await b.hit("key-2")  # per key
