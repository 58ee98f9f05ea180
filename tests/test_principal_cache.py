"""The cache of authenticated principals: what it must never get wrong (revocation, user
changes, charges) and how long another process's changes take to reach it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import httpx
from sqlalchemy import update

from tests.helpers import CHAT, HELLO, make_settings
from threadline.container import create_app
from threadline.domain.entities import Org, Principal, Role, User
from threadline.domain.events import Usage
from threadline.services.principal_cache import PrincipalCache
from threadline.storage.tables import api_keys

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def principal(used_credit: int = 0, user_id=None) -> Principal:
    org = Org(id=uuid4(), name="o", is_system=False, created_at=NOW)
    user = User(
        id=user_id or uuid4(),
        org_id=org.id,
        name="u",
        role=Role.MEMBER,
        status="ACTIVE",
        credit_limit=100,
        used_credit=used_credit,
        created_at=NOW,
        updated_at=NOW,
    )
    return Principal(org=org, user=user, key_id=uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_ttl():
    clock = Clock()
    cache = PrincipalCache(5.0, clock=clock)
    p = principal()
    cache.put("h", p, cache.generation)
    clock.now = 4.9
    assert cache.get("h") is p
    clock.now = 5.0
    assert cache.get("h") is None


def test_a_lookup_that_raced_an_invalidation_is_not_cached():
    cache = PrincipalCache(5.0)
    p = principal()
    started = cache.generation  # the lookup reads the database...
    cache.drop_key(p.key_id)  # ...while the key is revoked
    cache.put("h", p, started)
    assert cache.get("h") is None


def test_drop_key_and_drop_user():
    cache = PrincipalCache(5.0)
    a, b = principal(), principal()
    c = principal(user_id=a.user.id)
    for key_hash, p in (("a", a), ("b", b), ("c", c)):
        cache.put(key_hash, p, cache.generation)
    cache.drop_key(b.key_id)
    assert cache.get("b") is None and cache.get("a") is a
    cache.drop_user(a.user.id)
    assert cache.get("a") is None and cache.get("c") is None


def test_charges_update_cached_figures_and_never_go_back():
    cache = PrincipalCache(5.0)
    p = principal(used_credit=10)
    cache.put("h", p, cache.generation)
    cache.update_user(replace(p.user, used_credit=40))
    assert cache.get("h").user.used_credit == 40
    cache.update_user(p.user)  # an older figure arriving late
    assert cache.get("h").user.used_credit == 40


def test_size_is_capped():
    cache = PrincipalCache(5.0, max_entries=3)
    for i in range(5):
        cache.put(str(i), principal(), cache.generation)
    assert [cache.get(str(i)) is not None for i in range(5)] == [False, False, True, True, True]


def test_ttl_zero_turns_it_off():
    cache = PrincipalCache(0)
    cache.put("h", principal(), cache.generation)
    assert cache.get("h") is None


async def test_deactivating_a_user_is_immediate(client, admin):
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "d"})).json()["user"]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["userId"]})
    ).json()["apiKey"]["key"]
    member = {"API-KEY": key}
    assert (await client.get("/api/me", headers=member)).status_code == 200  # now cached
    await client.patch(
        f"/api/admin/users/{user['userId']}", headers=admin, json={"status": "INACTIVE"}
    )
    assert (await client.get("/api/me", headers=member)).status_code == 401


async def test_lowering_the_credit_limit_is_immediate(client, admin, fakes):
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "e"})).json()["user"]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["userId"]})
    ).json()["apiKey"]["key"]
    member = {"API-KEY": key}
    fakes["gpt-4o-mini"].enqueue(["x", Usage(10, 15)])
    assert (await client.post(CHAT, headers=member, json=HELLO)).status_code == 200
    await client.patch(
        f"/api/admin/users/{user['userId']}", headers=admin, json={"creditLimit": 40}
    )
    r = await client.post(CHAT, headers=member, json=HELLO)
    assert r.status_code == 403 and "40 of 40" in r.json()["error"]["message"]


async def test_another_process_revoking_is_seen_within_the_ttl(tmp_path, db_url, fakes):
    """A revocation this process did not make (the CLI, another API process) writes only
    the database: the cached key stays valid until its entry expires, and no longer."""
    settings = make_settings(tmp_path, db_url, auth_cache_seconds=0.5)
    app = create_app(settings, model_factory=fakes.factory)
    async with app.router.lifespan_context(app):
        container = app.state.container
        key = (await container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"API-KEY": key}
            assert (await client.get("/api/me", headers=headers)).status_code == 200
            async with container.db.write() as conn:  # as another process would
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.prefix == key.split("_")[1])
                    .values(revoked_at=NOW)
                )
            assert (await client.get("/api/me", headers=headers)).status_code == 200
            await asyncio.sleep(0.6)
            assert (await client.get("/api/me", headers=headers)).status_code == 401
