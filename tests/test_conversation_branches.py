"""Conversations that branch, through real HTTP on a live server in front of the fake
OpenAI-compatible upstream, on SQLite and PostgreSQL: the tree, a reply regenerated, a prompt
edited, the head moved, and what each dialect then lists and sends the model as history."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from tests.fake_upstream import FakeUpstream, Reply
from tests.helpers import make_settings, sse_events
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.domain.clock import utcnow
from threadline.settings import Credits, ModelConfig
from threadline.storage.database import MIGRATIONS_DIR

UPSTREAM_KEY = "sk-upstream-branches-test"
MODEL = "gpt-4o-mini"
OTHER = "other-model"


@dataclass
class Live:
    server: LiveServer
    key: str
    upstream: FakeUpstream

    def call(self, method: str, path: str, body: Any = None, key: str | None = None):
        headers = {"API-KEY": key or self.key}
        url = f"{self.server.base_url}{path}"
        return httpx.request(method, url, headers=headers, json=body, timeout=30)

    def conversation(self) -> str:
        body = {"title": "branches", "type": "CHAT_WITH_AI", "model": MODEL}
        return str(self.call("POST", "/api/conversations", body).json()["conversation"]["uuid"])

    def chat(self, cid: str, prompt: str, answer: str) -> dict[str, Any]:
        self.upstream.enqueue(Reply(answer))
        body = {
            "type": "UNIFY_CHAT_WITH_AI",
            "model": MODEL,
            "promptObject": {"prompt": prompt, "conversationId": cid},
        }
        r = self.call("POST", "/api/chat-with-ai", body)
        assert r.status_code == 200, r.text
        return dict(r.json()["aiRecord"])

    def tree(self, cid: str) -> dict[str, Any]:
        r = self.call("GET", f"/api/conversations/{cid}/tree")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def listed(self, cid: str) -> list[str]:
        messages = self.call("GET", f"/api/conversations/{cid}").json()["conversation"]["messages"]
        return [m["content"] for m in messages]

    def sent_history(self) -> list[str]:
        """The texts of the last model request's messages (system prompt aside)."""
        sent = self.upstream.requests[-1]["messages"]
        return [m["content"] for m in sent if m["role"] != "system"]

    def used_credit(self) -> int:
        return int(self.call("GET", "/api/me").json()["user"]["usedCredit"])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("branches")
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp / "threadline.db")
        db_url = f"sqlite+aiosqlite:///{tmp / 'threadline.db'}"
    else:
        pg = request.getfixturevalue("postgres")
        db_url = str(pg.create_database(f"b_{os.urandom(6).hex()}", "threadline_migrated"))
    os.environ["BRANCHES_TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        config = {
            "provider": "openai-compatible",
            "base_url": upstream.url,
            "api_key_env": "BRANCHES_TEST_UPSTREAM_KEY",
            "upstream_model": "upstream-model",
            "timeout_seconds": 5.0,
            "credits": Credits(input_per_1k=1000, output_per_1k=1000),
        }
        models = {MODEL: ModelConfig(**config), OTHER: ModelConfig(**config)}
        settings = make_settings(tmp, db_url, models=models, default_model=MODEL)
        app = create_app(settings)
        server = LiveServer(app)
        server.start()
        try:
            key = server.call(app.state.container.bootstrap()).secret
            yield Live(server, key, upstream)
        finally:
            server.stop()


def _by_content(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["content"]: m for m in tree["messages"]}


def test_a_linear_conversation_is_one_branch(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    live.chat(cid, "Q2", "A2")
    assert live.sent_history() == ["Q1", "A1", "Q2"]
    tree = live.tree(cid)
    assert [m["content"] for m in tree["messages"]] == ["Q1", "A1", "Q2", "A2"]
    assert all(m["onCurrentBranch"] for m in tree["messages"])
    ids = [m["uuid"] for m in tree["messages"]]
    assert [m["parentId"] for m in tree["messages"]] == [None, *ids[:-1]]
    assert tree["headId"] == ids[-1]
    first = tree["messages"][0]
    assert {"role", "model", "createdAt", "status"} <= set(first)
    assert (first["role"], first["model"]) == ("user", MODEL)


def test_regenerate_makes_a_sibling_reply_and_charges_it(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    live.chat(cid, "Q2", "A2")
    a2 = _by_content(live.tree(cid))["A2"]
    before = live.used_credit()
    live.upstream.enqueue(Reply("A2 again"))
    r = live.call("POST", f"/api/conversations/{cid}/messages/{a2['uuid']}/regenerate", {})
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert record["aiRecordDetail"]["resultObject"] == ["A2 again"]
    assert live.sent_history() == ["Q1", "A1", "Q2"]  # the path to the prompt, not A2
    charged = record["usage"]["credits"]
    assert charged > 0 and live.used_credit() - before == charged
    tree = _by_content(live.tree(cid))
    again = tree["A2 again"]
    assert again["parentId"] == a2["parentId"] == tree["Q2"]["uuid"]
    assert again["onCurrentBranch"] and not tree["A2"]["onCurrentBranch"]
    assert live.listed(cid) == ["Q1", "A1", "Q2", "A2 again"]
    live.chat(cid, "Q3", "A3")  # continues the new branch
    assert live.sent_history() == ["Q1", "A1", "Q2", "A2 again", "Q3"]


def test_regenerate_streamed_with_another_model(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    a1 = _by_content(live.tree(cid))["A1"]
    live.upstream.enqueue(Reply("streamed again"))
    path = f"/api/conversations/{cid}/messages/{a1['uuid']}/regenerate?isStreaming=true"
    r = live.call("POST", path, {"model": OTHER})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert "".join(d["content"] for name, d in events if name == "content") == "streamed again"
    assert [name for name, _ in events][-2:] == ["result", "done"]
    assert events[-2][1]["aiRecord"]["model"] == OTHER
    assert _by_content(live.tree(cid))["streamed again"]["model"] == OTHER


def test_edit_makes_a_sibling_prompt_with_its_reply(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    live.chat(cid, "Q2", "A2")
    q2 = _by_content(live.tree(cid))["Q2"]
    live.upstream.enqueue(Reply("A2 edited"))
    r = live.call(
        "POST", f"/api/conversations/{cid}/messages/{q2['uuid']}/edit", {"prompt": "Q2 edited"}
    )
    assert r.status_code == 200, r.text
    assert live.sent_history() == ["Q1", "A1", "Q2 edited"]
    tree = _by_content(live.tree(cid))
    assert tree["Q2 edited"]["parentId"] == q2["parentId"]
    assert tree["A2 edited"]["parentId"] == tree["Q2 edited"]["uuid"]
    assert not tree["Q2"]["onCurrentBranch"] and not tree["A2"]["onCurrentBranch"]
    assert live.listed(cid) == ["Q1", "A1", "Q2 edited", "A2 edited"]
    # the first message edited: a second root
    q1 = tree["Q1"]
    live.upstream.enqueue(Reply("fresh"))
    live.call("POST", f"/api/conversations/{cid}/messages/{q1['uuid']}/edit", {"prompt": "new"})
    assert live.sent_history() == ["new"]
    assert _by_content(live.tree(cid))["new"]["parentId"] is None
    assert live.listed(cid) == ["new", "fresh"]


def test_head_moves_what_every_dialect_continues_and_lists(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    live.chat(cid, "Q2", "A2")
    a1 = _by_content(live.tree(cid))["A1"]
    r = live.call("PUT", f"/api/conversations/{cid}/head", {"messageId": a1["uuid"]})
    assert r.status_code == 200 and r.json()["headId"] == a1["uuid"]
    assert live.listed(cid) == ["Q1", "A1"]
    me = live.call("GET", "/api/me").json()["user"]
    sessions = live.call(
        "GET", f"/api/conversation/messages?org_id={me['teamId']}&conversation_id={cid}"
    )
    assert [m["content"] for m in sessions.json()["messages"]] == ["Q1", "A1"]
    live.chat(cid, "Q2 other", "A2 other")
    assert live.sent_history() == ["Q1", "A1", "Q2 other"]
    tree = _by_content(live.tree(cid))
    assert tree["Q2 other"]["parentId"] == a1["uuid"]
    assert not tree["A2"]["onCurrentBranch"]
    # and back to the first branch
    live.call("PUT", f"/api/conversations/{cid}/head", {"messageId": tree["A2"]["uuid"]})
    assert live.listed(cid) == ["Q1", "A1", "Q2", "A2"]


def test_refusals(live):
    cid = live.conversation()
    live.chat(cid, "Q1", "A1")
    tree = _by_content(live.tree(cid))
    q1, a1 = tree["Q1"]["uuid"], tree["A1"]["uuid"]
    base = f"/api/conversations/{cid}/messages"
    user_regen = live.call("POST", f"{base}/{q1}/regenerate", {})
    assert user_regen.status_code == 400 and "not an assistant reply" in user_regen.text
    edit_reply = live.call("POST", f"{base}/{a1}/edit", {"prompt": "x"})
    assert edit_reply.status_code == 400 and "not a user message" in edit_reply.text
    unknown = "00000000-0000-4000-8000-000000000000"
    assert live.call("POST", f"{base}/{unknown}/regenerate", {}).status_code == 404
    other = live.conversation()
    moved = live.call("PUT", f"/api/conversations/{other}/head", {"messageId": q1})
    assert moved.status_code == 404 and moved.json()["success"] is False
    assert live.call("GET", f"/api/conversations/{unknown}/tree").status_code == 404
    assert live.call("POST", f"{base}/{q1}/edit", {"prompt": ""}).status_code == 400
    assert live.call("POST", f"{base}/{a1}/regenerate", {"model": "nope"}).status_code == 422
    assert live.listed(cid) == ["Q1", "A1"]  # nothing refused was stored


# ---- the migration: existing conversations become single branches


async def test_the_migration_makes_existing_conversations_single_branches(container):
    operator = await container.accounts.operator()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    ids = [uuid4() for _ in range(3)]
    cid, empty = uuid4(), uuid4()

    def migrate(connection) -> tuple[set[str], set[str]]:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011_routing")
        down = {c["name"] for c in inspect(connection).get_columns("messages")}
        now = utcnow()
        for conversation in (cid, empty):
            connection.execute(
                text(
                    "INSERT INTO conversations (id, org_id, user_id, title, description, type, "
                    "status, is_archived, created_at, updated_at) VALUES (:id, :org, :user, 't', "
                    "'', 'CHAT_WITH_AI', 'ACTIVE', false, :now, :now)"
                ),
                {
                    "id": _db_uuid(connection, conversation),
                    "org": _db_uuid(connection, operator.org_id),
                    "user": _db_uuid(connection, operator.user.id),
                    "now": now,
                },
            )
        for index, message_id in enumerate(ids):
            connection.execute(
                text(
                    "INSERT INTO messages (id, org_id, conversation_id, role, content, model, "
                    "status, created_at) VALUES (:id, :org, :cid, :role, :content, 'm', "
                    "'SUCCESS', :now)"
                ),
                {
                    "id": _db_uuid(connection, message_id),
                    "org": _db_uuid(connection, operator.org_id),
                    "cid": _db_uuid(connection, cid),
                    "role": ("user", "assistant")[index % 2],
                    "content": f"m{index}",
                    "now": now,
                },
            )
        command.upgrade(config, "head")
        return down, {c["name"] for c in inspect(connection).get_columns("messages")}

    async with container.db.engine.begin() as conn:
        down, up = await conn.run_sync(migrate)
    assert "parent_id" not in down and "parent_id" in up
    messages = await container.conversation_store.tree(operator.org_id, cid)
    assert [m.parent_id for m in messages] == [None, ids[0], ids[1]]
    conversation = await container.conversation_store.get(operator.org_id, cid)
    assert conversation.head_id == ids[2]
    assert (await container.conversation_store.get(operator.org_id, empty)).head_id is None
    history = await container.conversations.history(operator, cid, model=None, limit=10)
    assert [m.content for m in history.messages] == ["m0", "m1", "m2"]


def _db_uuid(connection: Any, value: Any) -> Any:
    """A uuid as the column stores it: native on PostgreSQL, 32 hex characters on SQLite."""
    return value if connection.dialect.name == "postgresql" else value.hex
