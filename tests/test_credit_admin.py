"""Who may set whose credit limit (api/admin.py, AccountService.update_user), the range a
limit may take, and reservations a stopped process left behind (released at start-up)."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from tests.helpers import Fakes, make_settings
from threadline.container import create_app
from threadline.storage.tables import credit_reservations, users

ME = "/api/me"


async def _me(client: httpx.AsyncClient, headers: dict[str, str]) -> dict:
    return dict((await client.get(ME, headers=headers)).json()["user"])


async def _patch(client, headers, user_id, limit, org_id=None):
    query = f"?orgId={org_id}" if org_id else ""
    return await client.patch(
        f"/api/admin/users/{user_id}{query}", headers=headers, json={"creditLimit": limit}
    )


async def test_an_admin_cannot_raise_their_own_credit_limit(client, admin):
    me = await _me(client, admin)
    r = await _patch(client, admin, me["userId"], me["creditLimit"] + 1)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert "cannot raise your own credit limit" in r.json()["error"]["message"]
    assert (await _me(client, admin))["creditLimit"] == me["creditLimit"]
    # lowering one's own is allowed, and so is setting it to what it is
    assert (await _patch(client, admin, me["userId"], 500)).status_code == 200
    assert (await _patch(client, admin, me["userId"], 500)).status_code == 200
    assert (await _patch(client, admin, me["userId"], 501)).status_code == 403
    # another admin of the org raises it
    second = (
        await client.post("/api/admin/users", headers=admin, json={"name": "ops", "role": "ADMIN"})
    ).json()["user"]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": second["userId"]})
    ).json()["apiKey"]["key"]
    other_admin = {"API-KEY": key}
    assert (await _patch(client, other_admin, me["userId"], 9000)).status_code == 200
    assert (await _me(client, admin))["creditLimit"] == 9000
    # ...and cannot raise their own either
    assert (await _patch(client, other_admin, second["userId"], 10**9)).status_code == 403


async def test_an_org_admin_cannot_raise_their_own_a_system_admin_can(client, admin):
    acme = (
        await client.post(
            "/api/admin/orgs", headers=admin, json={"name": "acme", "creditLimit": 100}
        )
    ).json()
    acme_admin = {"API-KEY": acme["apiKey"]["key"]}
    acme_admin_id = acme["user"]["userId"]
    assert (await _patch(client, acme_admin, acme_admin_id, 1000)).status_code == 403
    # ...not with its own org named either
    assert (
        await _patch(client, acme_admin, acme_admin_id, 1000, org_id=acme["org"]["id"])
    ).status_code == 403
    assert (await _me(client, acme_admin))["creditLimit"] == 100
    r = await _patch(client, admin, acme_admin_id, 1000, org_id=acme["org"]["id"])
    assert r.status_code == 200 and r.json()["user"]["creditLimit"] == 1000
    # an org admin sets the limits of their org's members
    member = (
        await client.post(
            "/api/admin/users", headers=acme_admin, json={"name": "bob", "creditLimit": 5}
        )
    ).json()["user"]
    r = await _patch(client, acme_admin, member["userId"], 50)
    assert r.status_code == 200 and r.json()["user"]["creditLimit"] == 50


@pytest.mark.parametrize("limit", [2**53, 2**63, 2**64, 10**30, -1, -(2**63)])
async def test_an_out_of_range_credit_limit_is_a_400_naming_it(client, admin, limit):
    """The admin API's error shape (400 INVALID_REQUEST naming the field), never a 500."""
    me = await _me(client, admin)
    for method, path, body in (
        ("POST", "/api/admin/users", {"name": "x", "creditLimit": limit}),
        ("POST", "/api/admin/orgs", {"name": "big", "creditLimit": limit}),
        ("PATCH", f"/api/admin/users/{me['userId']}", {"creditLimit": limit}),
    ):
        r = await client.request(method, path, headers=admin, json=body)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert [d["field"] for d in error["details"]] == ["creditLimit"]
    assert (await _me(client, admin))["creditLimit"] == me["creditLimit"]


async def test_the_largest_credit_limit_is_stored_exactly(client, admin):
    """The largest is 2^53 - 1, the largest integer every JSON client reads exactly."""
    r = await client.post(
        "/api/admin/users", headers=admin, json={"name": "whale", "creditLimit": 2**53 - 1}
    )
    assert r.status_code == 201 and r.json()["user"]["creditLimit"] == 2**53 - 1
    listed = (await client.get("/api/admin/users", headers=admin)).json()["users"]
    assert [u["creditLimit"] for u in listed if u["userName"] == "whale"] == [2**53 - 1]


async def test_reservations_a_stopped_process_left_are_released_at_start(
    tmp_path: Path, db_url: str, fakes: Fakes
):
    """A process killed while runs held credits leaves their reservation rows and the
    user's `reserved_credit`; the next server to start gives them back."""
    settings = make_settings(tmp_path, db_url)
    app = create_app(settings, model_factory=fakes.factory)
    async with app.router.lifespan_context(app):
        container = app.state.container
        issued = await container.bootstrap()
        principal = await container.accounts.authenticate(issued.secret)
        limit = principal.user.credit_limit
        for _ in range(3):  # as runs in progress hold them when the process dies
            await container.credits.reserve(principal, uuid4(), limit // 4, "a reply")
        async with container.db.read() as conn:
            held = (await conn.execute(select(users.c.reserved_credit))).scalar_one()
        assert held == 3 * (limit // 4)
        # a fourth does not fit while they are held
        with pytest.raises(Exception, match="left"):
            await container.credits.reserve(principal, uuid4(), limit // 2, "a reply")
    app = create_app(settings, model_factory=fakes.factory)
    async with app.router.lifespan_context(app):  # the next start
        container = app.state.container
        async with container.db.read() as conn:
            assert (await conn.execute(select(users.c.reserved_credit))).scalar_one() == 0
            assert (await conn.execute(select(credit_reservations))).all() == []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"model": "gpt-4o-mini", "promptObject": {"prompt": "Hello"}}
            r = await client.post(
                "/api/chat-with-ai", headers={"API-KEY": issued.secret}, json=body
            )
            assert r.status_code == 200, r.text
