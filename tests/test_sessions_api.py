"""The Conversation Service API (003_*), in process, on SQLite and PostgreSQL.

The spec's curl examples are replayed as written, with the host, the token and the
placeholders (`your-org-id`, the example ids) replaced by real values.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.helpers import make_settings, sse_events
from threadline.container import create_app
from threadline.domain.errors import ModelError
from threadline.domain.events import Usage

BASE = "/api/conversation"
EXAMPLE_MODEL_ID = "457d4f38-e3c0-43eb-b519-a867f9f5325a"  # 003_*'s model id: not one of ours


@pytest.fixture
def bearer(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}


@pytest.fixture
async def org_id(client: httpx.AsyncClient, bearer: dict[str, str]) -> str:
    return str((await client.get("/api/me", headers=bearer)).json()["user"]["teamId"])


async def model_id(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    models = (await client.get("/api/models", headers=headers)).json()["models"]
    return next(m["id"] for m in models if m["name"] == name)


async def new_conversation(client, headers, org, title="Project Discussion") -> str:
    r = await client.post(
        f"{BASE}/create?org_id={org}", headers=headers, json={"title": title, "is_archived": False}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def new_session(client, headers, org, conversation, model="gpt-4o-mini") -> str:
    body = {"conversation_id": conversation, "model_id": await model_id(client, headers, model)}
    r = await client.post(f"{BASE}/create_session?org_id={org}", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def chat(client, headers, org, session, message) -> httpx.Response:
    body = {"chat_session_id": session, "message": message}
    return await client.post(f"{BASE}/stream_chat?org_id={org}", headers=headers, json=body)


# ---- the examples of 003_* ----


async def test_create_conversation_example(client, bearer, org_id):
    r = await client.post(
        f"{BASE}/create?org_id={org_id}",
        headers=bearer,
        json={"title": "Project Discussion", "is_archived": False},
    )
    assert r.status_code == 200
    c = r.json()
    assert c["title"] == "Project Discussion"
    assert c["is_archived"] is False
    assert len(c["id"]) == 36
    assert c["created_at"].endswith("Z") and c["updated_at"].endswith("Z")
    archived = await client.post(
        f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "Old"}
    )
    assert archived.json()["is_archived"] is False  # the documented default


async def test_create_session_example(client, bearer, org_id):
    conversation = await new_conversation(client, bearer, org_id)
    gpt = await model_id(client, bearer, "gpt-4o-mini")
    r = await client.post(
        f"{BASE}/create_session?org_id={org_id}",
        headers=bearer,
        json={"conversation_id": conversation, "model_id": gpt},
    )
    assert r.status_code == 200
    s = r.json()
    assert s["conversation_id"] == conversation
    assert s["model_id"] == gpt
    assert s["model_name"] == "gpt-4o-mini"
    assert s["status"] == "active"
    assert {"id", "created_at", "updated_at"} <= set(s)


async def test_stream_chat_example_sends_start_content_end(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    fakes["gpt-4o-mini"].enqueue(["Vector databases", " store embeddings", Usage(9, 4)])
    r = await client.post(
        f"{BASE}/stream_chat?org_id={org_id}",
        headers=bearer,
        json={"chat_session_id": session, "message": "Can you explain how vector databases work?"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["start", "content", "content", "end"]
    start, end = events[0][1], events[-1][1]
    assert start["chat_session_id"] == session and start["conversation_id"] == conversation
    assert [data["content"] for _, data in events[1:3]] == ["Vector databases", " store embeddings"]
    assert end["status"] == "completed"
    assert end["finish_reason"] == "stop"
    assert end["usage"] == {"input_tokens": 9, "output_tokens": 4, "credits": 9 + 2 * 4}

    stored = (
        await client.get(
            f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}", headers=bearer
        )
    ).json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Can you explain how vector databases work?", "completed"),
        ("assistant", "Vector databases store embeddings", "completed"),
    ]
    # start names the reply (stored at the end under the id it had from the start)
    assert stored[1]["id"] == start["message_id"] == end["message_id"] == end["reply_message_id"]
    assert stored[0]["id"] == start["user_message_id"] == end["user_message_id"]
    assert {m["chat_session_id"] for m in stored} == {session}


async def test_list_example(client, bearer, org_id):
    first = await new_conversation(client, bearer, org_id, "first")
    second = await new_conversation(client, bearer, org_id, "second")
    r = await client.get(f"{BASE}/list?org_id={org_id}", headers=bearer)
    assert r.status_code == 200
    listed = r.json()
    assert [c["id"] for c in listed] == [second, first]  # most recently active first
    assert r.headers["x-total-count"] == "2"
    paged = await client.get(f"{BASE}/list?org_id={org_id}&limit=1&offset=1", headers=bearer)
    assert [c["id"] for c in paged.json()] == [first]


async def test_get_with_sessions_example(client, bearer, org_id):
    conversation = await new_conversation(client, bearer, org_id)
    gpt = await new_session(client, bearer, org_id, conversation, "gpt-4o-mini")
    other = await new_session(client, bearer, org_id, conversation, "other-model")
    r = await client.get(
        f"{BASE}/get_with_sessions?org_id={org_id}&conversation_id={conversation}",
        headers=bearer,
    )
    assert r.status_code == 200
    c = r.json()
    assert c["id"] == conversation and c["title"] == "Project Discussion"
    sessions = {s["id"]: s["model_name"] for s in c["chat_sessions"]}
    assert sessions == {gpt: "gpt-4o-mini", other: "other-model"}


async def test_messages_example(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    for i in range(3):
        fakes["gpt-4o-mini"].enqueue([f"answer {i}"])
        await chat(client, bearer, org_id, session, f"question {i}")
    r = await client.get(
        f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}&limit=10&offset=0",
        headers=bearer,
    )
    assert r.status_code == 200
    page = r.json()
    assert [m["content"] for m in page["messages"]] == [
        "question 0",
        "answer 0",
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
    ]
    assert (page["total"], page["limit"], page["offset"], page["has_more"]) == (6, 10, 0, False)


# ---- sessions: one per model, per-model history ----


async def test_a_second_session_for_the_same_model_is_the_existing_one(client, bearer, org_id):
    conversation = await new_conversation(client, bearer, org_id)
    first = await new_session(client, bearer, org_id, conversation, "gpt-4o-mini")
    again = await new_session(client, bearer, org_id, conversation, "gpt-4o-mini")
    other = await new_session(client, bearer, org_id, conversation, "other-model")
    assert again == first and other != first
    c = (
        await client.get(
            f"{BASE}/get_with_sessions?org_id={org_id}&conversation_id={conversation}",
            headers=bearer,
        )
    ).json()
    assert len(c["chat_sessions"]) == 2


async def test_each_session_replays_only_its_models_history(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    gpt = await new_session(client, bearer, org_id, conversation, "gpt-4o-mini")
    other = await new_session(client, bearer, org_id, conversation, "other-model")
    fakes["gpt-4o-mini"].enqueue(["gpt answer"])
    await chat(client, bearer, org_id, gpt, "to gpt")
    fakes["other-model"].enqueue(["other answer"])
    await chat(client, bearer, org_id, other, "to other")
    fakes["gpt-4o-mini"].enqueue(["again"])
    await chat(client, bearer, org_id, gpt, "gpt again")
    sent = [(m.role, m.content) for m in fakes["gpt-4o-mini"].requests[-1].messages]
    assert sent == [("user", "to gpt"), ("assistant", "gpt answer"), ("user", "gpt again")]
    assert [m.content for m in fakes["other-model"].requests[-1].messages] == ["to other"]


async def test_unknown_model_or_conversation_is_404(client, bearer, org_id):
    conversation = await new_conversation(client, bearer, org_id)
    r = await client.post(
        f"{BASE}/create_session?org_id={org_id}",
        headers=bearer,
        json={"conversation_id": conversation, "model_id": EXAMPLE_MODEL_ID},
    )
    assert r.status_code == 404
    assert EXAMPLE_MODEL_ID in r.json()["detail"] and "gpt-4o-mini" in r.json()["detail"]
    gpt = await model_id(client, bearer, "gpt-4o-mini")
    r = await client.post(
        f"{BASE}/create_session?org_id={org_id}",
        headers=bearer,
        json={"conversation_id": str(uuid4()), "model_id": gpt},
    )
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


# ---- stream_chat: failures ----


async def test_model_failure_is_an_error_event_and_a_failed_message(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    fakes["gpt-4o-mini"].enqueue(["Half an ans", ModelError("upstream said 500")])
    r = await chat(client, bearer, org_id, session, "Will this work?")
    assert r.status_code == 200
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["start", "content", "error"]
    error = events[-1][1]
    assert error["code"] == "MODEL_ERROR" and "upstream said 500" in error["detail"]
    stored = (
        await client.get(
            f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}", headers=bearer
        )
    ).json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [
        ("user", "Will this work?", "failed"),
        ("assistant", "Half an ans", "failed"),
    ]
    start = events[0][1]
    assert stored[1]["id"] == start["message_id"] == error["message_id"]
    assert stored[1]["id"] == error["reply_message_id"]
    assert stored[0]["id"] == start["user_message_id"] == error["user_message_id"]


async def test_unknown_or_malformed_chat_session_id(client, bearer, org_id, fakes):
    r = await chat(client, bearer, org_id, str(uuid4()), "hello")
    assert r.status_code == 404
    assert "chat session" in r.json()["detail"]
    r = await chat(client, bearer, org_id, "9b8c7d6e-5f4e-3d2c-1b0a-9z8y7x6w5v4u", "hello")
    assert r.status_code == 400
    assert r.json()["errors"] == [
        {"field": "chat_session_id", "message": "chat_session_id must be a valid UUID"}
    ]
    assert fakes["gpt-4o-mini"].requests == []


async def test_empty_message_and_unknown_fields_are_400(client, bearer, org_id):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    assert (await chat(client, bearer, org_id, session, "")).status_code == 400
    r = await client.post(
        f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "t", "colour": "red"}
    )
    assert r.status_code == 400 and "colour is not a known field" in r.json()["detail"]
    r = await client.post(f"{BASE}/create?org_id={org_id}", headers=bearer, json={})
    assert r.status_code == 400 and r.json()["detail"] == "title is required"


# ---- pagination ----


async def test_message_pagination_edges(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    for i in range(11):
        fakes["gpt-4o-mini"].enqueue([f"a{i}"])
        await chat(client, bearer, org_id, session, f"q{i}")
    url = f"{BASE}/messages?org_id={org_id}&conversation_id={conversation}"

    default = (await client.get(url, headers=bearer)).json()
    assert len(default["messages"]) == 20 and default["limit"] == 20
    assert default["total"] == 22 and default["has_more"] is True
    assert default["messages"][0]["content"] == "q0"
    rest = (await client.get(url + "&offset=20", headers=bearer)).json()
    assert [m["content"] for m in rest["messages"]] == ["q10", "a10"]
    assert rest["has_more"] is False
    past = await client.get(url + "&offset=500", headers=bearer)
    assert past.status_code == 200 and past.json()["messages"] == []
    for bad in ("limit=0", "limit=-5", "offset=-1", "limit=ten"):
        r = await client.get(f"{url}&{bad}", headers=bearer)
        assert r.status_code == 400, bad
        assert r.json()["code"] == "INVALID_REQUEST" and r.json()["detail"]


async def test_huge_limit_is_capped(tmp_path, db_url, fakes):
    app = create_app(make_settings(tmp_path, db_url, page_size_max=5), model_factory=fakes.factory)
    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            org = (await client.get("/api/me", headers=headers)).json()["user"]["teamId"]
            conversation = await new_conversation(client, headers, org)
            session = await new_session(client, headers, org, conversation)
            for i in range(4):
                await chat(client, headers, org, session, f"q{i}")
            r = await client.get(
                f"{BASE}/messages?org_id={org}&conversation_id={conversation}&limit=1000000",
                headers=headers,
            )
            page = r.json()
            assert r.status_code == 200
            assert len(page["messages"]) == 5 and page["limit"] == 5
            assert page["total"] == 8 and page["has_more"] is True
            listed = await client.get(f"{BASE}/list?org_id={org}&limit=99999", headers=headers)
            assert listed.status_code == 200 and len(listed.json()) == 1


# ---- org_id, auth, limits and the error shape ----

# Fixed ids (of nothing stored): test ids must be the same in every pytest-xdist worker.
UNKNOWN = ["0fd600b0-5cf0-412e-9778-862b84e402e0", "fe17a70a-b628-4d1c-ab46-39c1f87c43b9"]
ENDPOINTS = [
    ("POST", "/create", {"title": "t"}),
    ("POST", "/create_session", {"conversation_id": UNKNOWN[0], "model_id": UNKNOWN[1]}),
    ("POST", "/stream_chat", {"chat_session_id": UNKNOWN[0], "message": "hi"}),
    ("GET", "/list", None),
    ("GET", f"/get_with_sessions?conversation_id={UNKNOWN[0]}", None),
    ("GET", f"/messages?conversation_id={UNKNOWN[1]}", None),
]


def _with_org(path: str, org: str | None) -> str:
    if org is None:
        return BASE + path
    return BASE + path + ("&" if "?" in path else "?") + f"org_id={org}"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_org_id_is_required_everywhere(client, bearer, method, path, body):
    r = await client.request(method, _with_org(path, None), headers=bearer, json=body)
    assert r.status_code == 400
    assert r.json()["detail"] == "org_id is required"
    r = await client.request(method, _with_org(path, "your-org-id"), headers=bearer, json=body)
    assert r.status_code == 400
    assert r.json()["detail"] == "org_id must be a valid UUID"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_no_or_bad_token_is_401(client, admin_key, org_id, method, path, body):
    r = await client.request(method, _with_org(path, org_id), json=body)
    assert r.status_code == 401
    assert r.json() == {"detail": "Invalid or missing API key", "code": "UNAUTHORIZED"}
    bad = {"Authorization": "Bearer tl_000000000000_nope"}
    r = await client.request(method, _with_org(path, org_id), headers=bad, json=body)
    assert r.status_code == 401


async def test_another_orgs_id_is_404_with_no_data(client, admin, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id, "secret plans")
    session = await new_session(client, bearer, org_id, conversation)
    acme = (await client.post("/api/admin/orgs", headers=admin, json={"name": "acme"})).json()
    acme_org = acme["org"]["id"]
    acme_key = {"Authorization": f"Bearer {acme['apiKey']['key']}"}
    # our key with their org id, and their key with our org id
    for headers, org in ((bearer, acme_org), (acme_key, org_id)):
        for method, path, body in [
            ("GET", "/list", None),
            ("GET", f"/get_with_sessions?conversation_id={conversation}", None),
            ("GET", f"/messages?conversation_id={conversation}", None),
            ("POST", "/stream_chat", {"chat_session_id": session, "message": "leak?"}),
            ("POST", "/create", {"title": "t"}),
        ]:
            r = await client.request(method, _with_org(path, org), headers=headers, json=body)
            assert r.status_code == 404, (path, r.text)
            assert set(r.json()) == {"detail", "code"}
            assert "secret plans" not in r.text
    # their key with their own org id still cannot reach our objects
    for path in (
        f"/get_with_sessions?conversation_id={conversation}",
        f"/messages?conversation_id={conversation}",
    ):
        r = await client.get(_with_org(path, acme_org), headers=acme_key)
        assert r.status_code == 404
    r = await chat(client, acme_key, acme_org, session, "leak?")
    assert r.status_code == 404
    assert (await client.get(_with_org("/list", acme_org), headers=acme_key)).json() == []
    assert fakes["gpt-4o-mini"].requests == []


async def test_no_credit_left_is_403(client, admin, org_id, fakes):
    broke = (
        await client.post(
            "/api/admin/orgs", headers=admin, json={"name": "broke", "creditLimit": 0}
        )
    ).json()
    headers = {"Authorization": f"Bearer {broke['apiKey']['key']}"}
    org = broke["org"]["id"]
    conversation = await new_conversation(client, headers, org)
    session = await new_session(client, headers, org, conversation)
    r = await chat(client, headers, org, session, "hello")
    assert r.status_code == 403
    assert r.json()["code"] == "FORBIDDEN" and "credit" in r.json()["detail"]
    assert fakes["gpt-4o-mini"].requests == []


async def test_rate_limit_is_429_with_retry_after(tmp_path, db_url, fakes):
    app = create_app(
        make_settings(tmp_path, db_url, rate_limit_per_minute=2), model_factory=fakes.factory
    )
    async with app.router.lifespan_context(app):
        key = (await app.state.container.bootstrap()).secret
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            org = (await client.get("/api/me", headers=headers)).json()["user"]["teamId"]
            assert (
                await client.get(f"{BASE}/list?org_id={org}", headers=headers)
            ).status_code == 200
            r = await client.get(f"{BASE}/list?org_id={org}", headers=headers)
            assert r.status_code == 429
            assert r.json()["code"] == "RATE_LIMITED" and "per minute" in r.json()["detail"]
            assert int(r.headers["retry-after"]) >= 1


async def test_a_crash_is_500_in_the_same_shape(client, bearer, org_id, container, monkeypatch):
    async def boom(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("database exploded: password=hunter2")

    monkeypatch.setattr(container.sessions, "create_conversation", boom)
    r = await client.post(f"{BASE}/create?org_id={org_id}", headers=bearer, json={"title": "t"})
    assert r.status_code == 500
    assert r.json() == {"detail": "Internal server error", "code": "INTERNAL_ERROR"}


async def test_the_end_event_says_a_reply_was_cut_at_max_tokens(client, bearer, org_id, fakes):
    conversation = await new_conversation(client, bearer, org_id)
    session = await new_session(client, bearer, org_id, conversation)
    fakes["gpt-4o-mini"].enqueue(["Vector databases", Usage(9, 2, finish_reason="length")])
    r = await client.post(
        f"{BASE}/stream_chat?org_id={org_id}",
        headers=bearer,
        json={"chat_session_id": session, "message": "Explain vector databases"},
    )
    end = sse_events(r.text)[-1]
    assert end[0] == "end"
    assert end[1]["finish_reason"] == "length" and end[1]["status"] == "completed"
