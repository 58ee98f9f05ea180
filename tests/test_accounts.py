"""Keys, roles, the admin API, credits and rate limits."""

from __future__ import annotations

from sqlalchemy import select

from tests.helpers import CHAT, HELLO, count, make_settings
from threadline.container import create_app
from threadline.domain.events import Usage
from threadline.storage.tables import ai_records, api_keys


async def test_missing_and_bad_keys_are_401(client, admin_key):
    for headers in (
        {},
        {"API-KEY": "nope"},
        {"API-KEY": admin_key[:-1] + ("y" if admin_key.endswith("x") else "x")},
        {"Authorization": "Basic abc"},
    ):
        r = await client.post(CHAT, headers=headers, json=HELLO)
        assert r.status_code == 401
        assert r.json() == {
            "success": False,
            "error": {"code": "UNAUTHORIZED", "message": "Invalid or missing API key"},
        }


async def test_bearer_is_accepted(client, admin_key):
    r = await client.post(CHAT, headers={"Authorization": f"Bearer {admin_key}"}, json=HELLO)
    assert r.status_code == 200


async def test_keys_are_stored_hashed(client, admin_key, container):
    async with container.db.read() as conn:
        rows = (await conn.execute(select(api_keys.c.prefix, api_keys.c.secret_hash))).all()
    assert all(admin_key not in (prefix + secret_hash) for prefix, secret_hash in rows)
    assert admin_key.split("_")[1] in [prefix for prefix, _ in rows]


async def test_admin_manages_users_keys_and_revocation_is_immediate(client, admin):
    user = (
        await client.post(
            "/api/admin/users", headers=admin, json={"name": "bob", "creditLimit": 50}
        )
    ).json()["user"]
    assert user["role"] == "MEMBER" and user["creditLimit"] == 50 and user["usedCredit"] == 0
    made = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": user["userId"], "name": "laptop"}
    )
    assert made.status_code == 201
    key = made.json()["apiKey"]
    member = {"API-KEY": key["key"]}
    assert (await client.get("/api/me", headers=member)).json()["user"]["userName"] == "bob"
    listed = (await client.get("/api/admin/keys", headers=admin)).json()["apiKeys"]
    assert all("key" not in k for k in listed)
    assert key["id"] in [k["id"] for k in listed]
    # members cannot administer
    forbidden = await client.get("/api/admin/users", headers=member)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"
    revoked = await client.delete(f"/api/admin/keys/{key['id']}", headers=admin)
    assert revoked.json()["apiKey"]["revokedAt"] is not None
    assert (await client.get("/api/me", headers=member)).status_code == 401


async def test_org_admins_only_see_their_org(client, admin):
    acme = (
        await client.post(
            "/api/admin/orgs", headers=admin, json={"name": "acme", "creditLimit": 10}
        )
    ).json()
    acme_admin = {"API-KEY": acme["apiKey"]["key"]}
    assert [
        o["name"] for o in (await client.get("/api/admin/orgs", headers=acme_admin)).json()["orgs"]
    ] == ["acme"]
    assert (
        await client.post("/api/admin/orgs", headers=acme_admin, json={"name": "evil"})
    ).status_code == 403
    root_users = (await client.get("/api/admin/users", headers=admin)).json()["users"]
    root_user_id = root_users[0]["userId"]
    r = await client.patch(
        f"/api/admin/users/{root_user_id}", headers=acme_admin, json={"creditLimit": 0}
    )
    assert r.status_code == 404
    system_org = (await client.get("/api/admin/orgs", headers=admin)).json()["orgs"]
    assert {o["name"] for o in system_org} == {"default", "acme"}


async def test_exhausted_credits_are_403_before_any_model_runs(client, admin, fakes, container):
    user = (
        await client.post(
            "/api/admin/users", headers=admin, json={"name": "c", "creditLimit": 1050}
        )
    ).json()["user"]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["userId"]})
    ).json()["apiKey"]["key"]
    member = {"API-KEY": key}
    # "Hello" may cost up to (1 + 4) input tokens + 512 output tokens (the model's maximum)
    # at 1 and 2 credits a token: 1029 fit the limit of 1050; after a reply that cost
    # 10 + 2*15 = 40, the 1010 left do not.
    fakes["gpt-4o-mini"].enqueue(["x", Usage(10, 15)])
    first = await client.post(CHAT, headers=member, json=HELLO)
    assert first.json()["aiRecord"]["teamUser"]["usedCredit"] == 40
    calls, records = len(fakes["gpt-4o-mini"].requests), await count(container, ai_records)
    r = await client.post(CHAT, headers=member, json=HELLO)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "FORBIDDEN"
    assert "40 of 1050 credits used, 1010 left" in r.json()["error"]["message"]
    assert "may cost up to 1029 credits" in r.json()["error"]["message"]
    assert len(fakes["gpt-4o-mini"].requests) == calls
    assert await count(container, ai_records) == records
    # an admin raises the limit: the user can chat again
    await client.patch(
        f"/api/admin/users/{user['userId']}", headers=admin, json={"creditLimit": 2000}
    )
    assert (await client.post(CHAT, headers=member, json=HELLO)).status_code == 200


async def test_rate_limit_is_429_with_retry_after(tmp_path, db_url, fakes):
    app = create_app(
        make_settings(tmp_path, db_url, rate_limit_per_minute=2), model_factory=fakes.factory
    )
    import httpx

    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"API-KEY": key}
            assert (await client.get("/api/models", headers=headers)).status_code == 200
            assert (await client.get("/api/models", headers=headers)).status_code == 200
            r = await client.get("/api/models", headers=headers)
            assert r.status_code == 429
            assert r.json()["error"] == {
                "code": "RATE_LIMITED",
                "message": r.json()["error"]["message"],
            }
            assert int(r.headers["Retry-After"]) >= 1
            records = await count(app.state.container, ai_records)
            assert (await client.post(CHAT, headers=headers, json=HELLO)).status_code == 429
            assert await count(app.state.container, ai_records) == records


async def test_models_endpoint(client, admin):
    models = (await client.get("/api/models", headers=admin)).json()["models"]
    by_name = {m["name"]: m for m in models}
    assert set(by_name) == {"fake", "gpt-4o-mini", "other-model"}
    assert by_name["gpt-4o-mini"]["default"] is True
    assert by_name["gpt-4o-mini"]["credits"] == {"inputPer1k": 1000, "outputPer1k": 2000}
    assert "chat" in by_name["fake"]["capabilities"]
    assert len(by_name["fake"]["id"]) == 36


async def test_health_metrics_openapi_and_request_ids(client, admin):
    health = await client.get("/healthz")
    assert health.json()["status"] == "ok"
    assert len(health.headers["x-request-id"]) == 32
    assert (await client.get("/healthz", headers={"X-Request-ID": "abc-123"})).headers[
        "x-request-id"
    ] == "abc-123"
    await client.post(CHAT, headers=admin, json=HELLO)
    metrics = (await client.get("/metrics")).text
    assert (
        'threadline_http_requests_total{method="POST",route="/api/chat-with-ai",status="200"} 1.0'
        in metrics
    )
    assert 'threadline_replies_total{model="gpt-4o-mini",status="SUCCESS"} 1.0' in metrics
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/conversations",
        "/api/chat-with-ai",
        "/api/features",
        "/api/models",
        "/api/admin/keys",
    ):
        assert path in paths


async def test_oversized_body_is_413(client, admin):
    huge = {"model": "fake", "promptObject": {"prompt": "x" * 2_000_000}}
    r = await client.post(CHAT, headers=admin, json=huge)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_oversized_body_is_413_in_the_dialects_shape(client, admin):
    """A body over `max_body_bytes` with a Content-Length is refused before any route runs,
    in the error shape of the dialect that owns the path (not 1min.ai's everywhere)."""
    huge = "x" * 2_000_000
    r = await client.post(
        "/v1/chat/completions",
        headers=admin,
        json={"model": "fake", "messages": [{"role": "user", "content": huge}]},
    )
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "larger than 1 MB" in r.json()["error"]["message"]
    r = await client.post(
        "/api/conversation/stream_chat?org_id=x", headers=admin, json={"message": huge}
    )
    assert r.status_code == 413
    assert r.json() == {
        "detail": "The request body is larger than 1 MB",
        "code": "PAYLOAD_TOO_LARGE",
    }
    r = await client.post("/api/conversations", headers=admin, json={"title": huge})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
