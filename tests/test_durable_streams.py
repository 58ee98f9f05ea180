"""Durable streams (1min.ai dialect): a streamed reply cut off mid-way is resumed with the
standard `Last-Event-ID`, from the run while it lives in memory, else from the stored
aiRecord. A real uvicorn in front of a fake upstream that streams slowly over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Reply
from tests.faults import Disconnect
from tests.helpers import Frame, content, frames_of, make_settings, names, pending_record
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.domain.clock import utcnow
from threadline.domain.entities import AiRecord, Message, RecordStatus, Role
from threadline.settings import ModelConfig

UPSTREAM_KEY = "sk-upstream-test-key"
TOKENS = 24
FULL_TEXT = "".join(Reply(tokens=TOKENS).pieces())


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


class Live:
    """A Threadline server on the test's data dir; `restart()` makes a new one on it."""

    def __init__(self, tmp_path: Path, db_url: str, upstream: FakeUpstream, **settings: Any):
        model = ModelConfig(
            provider="openai-compatible",
            base_url=upstream.url,
            api_key_env="FAKE_UPSTREAM_KEY",
            upstream_model="fake-upstream-model",
            timeout_seconds=2.0,
        )
        self.settings = make_settings(
            tmp_path, db_url, models={"gpt-4o-mini": model}, default_model="gpt-4o-mini", **settings
        )
        self.server = self._start()
        self.key = self.server.call(self.container.bootstrap()).secret

    def _start(self) -> LiveServer:
        server = LiveServer(create_app(self.settings))
        server.start()
        return server

    @property
    def container(self) -> Any:
        return self.server.app.state.container

    @property
    def base(self) -> str:
        return self.server.base_url

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"API-KEY": key or self.key}

    def restart(self) -> None:
        self.server.stop()
        self.server = self._start()

    def key_for(self, *, other_org: bool = False, role: Role = Role.MEMBER) -> str:
        async def issue() -> str:
            store, accounts = self.container.account_store, self.container.accounts
            admin = await accounts.authenticate(self.key)
            org = await store.create_org(f"other-{uuid4().hex[:6]}") if other_org else admin.org
            return str((await accounts.issue_key(org, role=role)).secret)

        return self.server.call(issue())


@pytest.fixture
def live(tmp_path: Path, db_url: str, upstream: FakeUpstream, monkeypatch) -> Iterator[Live]:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    server = Live(tmp_path, db_url, upstream)
    yield server
    server.server.stop()


@pytest.fixture
def forgetful(tmp_path: Path, db_url: str, upstream: FakeUpstream, monkeypatch) -> Iterator[Live]:
    """Finished runs leave memory at once: a resume is answered from the stored record."""
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    server = Live(tmp_path, db_url, upstream, stream_retention_seconds=0)
    yield server
    server.server.stop()


def start_chat(
    live: Live, until: Callable[[list[Frame]], bool] | None = None, key: str | None = None
) -> tuple[str, list[Frame]]:
    """Stream a reply; hang up once `until(frames)` holds (None: read it all)."""
    url = f"{live.base}/api/chat-with-ai?isStreaming=true"
    body = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": {"prompt": "Go"}}
    frames: list[Frame] = []
    with httpx.stream("POST", url, headers=live.headers(key), json=body, timeout=30) as r:
        assert r.status_code == 200
        record_id = r.headers["x-ai-record-id"]
        for frame in frames_of(r.iter_lines()):
            frames.append(frame)
            if until is not None and until(frames):
                break
    return record_id, frames


def resume(
    live: Live, record_id: str, last_id: str | None = None, key: str | None = None, **params: Any
) -> httpx.Response:
    headers = live.headers(key)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    url = f"{live.base}/api/chat-with-ai/{record_id}/stream"
    return httpx.get(url, headers=headers, params=params, timeout=30)


def frames_in(r: httpx.Response) -> list[Frame]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return list(frames_of(iter(r.text.splitlines())))


def stored(live: Live, record_id: str, key: str | None = None) -> dict[str, Any]:
    r = httpx.get(f"{live.base}/api/chat-with-ai/{record_id}", headers=live.headers(key))
    assert r.status_code == 200, r.text
    return dict(r.json()["aiRecord"])


def wait_finished(live: Live, record_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (record := stored(live, record_id))["status"] == "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return record


def contents(n: int) -> Callable[[list[Frame]], bool]:
    return lambda frames: names(frames).count("content") >= n


def test_a_cut_stream_resumes_live_with_exactly_the_rest(live, upstream):
    upstream.enqueue(Reply(tokens=TOKENS, delay=0.05))
    record_id, first = start_chat(live, until=contents(5))
    assert names(first) == ["content"] * 5
    ids = [f["id"] for f in first]
    got = content(first)
    assert ids == [f"{record_id}:{len(content(first[: i + 1]))}" for i in range(5)]
    assert ids[-1] == f"{record_id}:{len(got)}"
    assert stored(live, record_id)["status"] == "PENDING"  # the reply is still running

    rest = frames_in(resume(live, record_id, ids[-1]))
    # live: one frame a token, exactly those not received, then result + done
    assert names(rest) == ["content"] * (TOKENS - 5) + ["result", "done"]
    assert got + content(rest) == FULL_TEXT
    counts = [int(f["id"].rpartition(":")[2]) for f in rest]
    assert counts == sorted(counts) and counts[0] > len(got) and counts[-1] == len(FULL_TEXT)
    assert all(f["id"].startswith(f"{record_id}:") for f in rest)
    result = json.loads(rest[-2]["data"])["aiRecord"]
    assert result["uuid"] == record_id and result["status"] == "SUCCESS"
    assert result["aiRecordDetail"]["resultObject"] == [FULL_TEXT]
    assert stored(live, record_id)["aiRecordDetail"]["resultObject"] == [FULL_TEXT]


def test_a_finished_run_in_memory_replays_from_any_frame(live, upstream):
    upstream.enqueue(Reply(tokens=TOKENS))
    record_id, frames = start_chat(live)
    assert names(frames) == ["content"] * TOKENS + ["result", "done"]
    assert frames[-1]["id"] == frames[-2]["id"] == f"{record_id}:{len(FULL_TEXT)}"
    assert wait_finished(live, record_id)["status"] == "SUCCESS"

    rest = frames_in(resume(live, record_id, frames[9]["id"]))
    assert [f["id"] for f in rest] == [f["id"] for f in frames[10:]]
    assert content(frames[:10]) + content(rest) == FULL_TEXT
    # a position inside a token (as a stored record's frames give) splits it
    assert content(frames_in(resume(live, record_id, after=3))) == FULL_TEXT[3:]
    # the whole reply again (?after=0), and nothing but its end from the last frame
    assert names(frames_in(resume(live, record_id, after=0))) == names(frames)
    assert names(frames_in(resume(live, record_id, frames[-1]["id"]))) == ["result", "done"]
    # Last-Event-ID wins over ?after (a reconnecting EventSource keeps its URL)
    assert content(frames_in(resume(live, record_id, frames[-4]["id"], after=0))) == (
        content(frames[-3:])
    )


def test_a_run_gone_from_memory_resumes_from_the_stored_record(forgetful, upstream):
    live = forgetful
    upstream.enqueue(Reply(tokens=TOKENS, delay=0.02))
    record_id, first = start_chat(live, until=contents(3))
    wait_finished(live, record_id)
    time.sleep(0.1)
    assert live.container.runs.get(_org(live), UUID(record_id)) is None  # forgotten

    rest = frames_in(resume(live, record_id, first[-1]["id"]))
    assert names(rest) == ["content", "result", "done"]  # the remaining text as one frame
    assert content(first) + content(rest) == FULL_TEXT
    assert rest[0]["id"] == rest[1]["id"] == rest[2]["id"] == f"{record_id}:{len(FULL_TEXT)}"
    assert names(frames_in(resume(live, record_id, after=0))) == ["content", "result", "done"]
    assert content(frames_in(resume(live, record_id, after=0))) == FULL_TEXT
    assert names(frames_in(resume(live, record_id, rest[-1]["id"]))) == ["result", "done"]


def test_a_new_server_process_resumes_from_the_stored_record(live, upstream):
    upstream.enqueue(Reply(tokens=TOKENS, delay=0.02))
    record_id, first = start_chat(live, until=contents(4))
    wait_finished(live, record_id)
    live.restart()
    rest = frames_in(resume(live, record_id, first[-1]["id"]))
    assert names(rest) == ["content", "result", "done"]
    assert content(first) + content(rest) == FULL_TEXT


def test_a_failed_reply_resumes_to_its_error_live_and_stored(live, upstream):
    upstream.enqueue(Disconnect(after_chunks=2, reply=Reply("one two three four")))
    record_id, frames = start_chat(live)
    assert names(frames) == ["content", "content", "error"]
    wait_finished(live, record_id)
    again = frames_in(resume(live, record_id, frames[0]["id"]))  # from the run in memory
    assert names(again) == ["content", "error"] and again == frames[1:]
    live.restart()
    stored_frames = frames_in(resume(live, record_id, frames[0]["id"]))
    assert names(stored_frames) == ["content", "error"]
    assert content(frames[:1]) + content(stored_frames) == "one two"
    error = json.loads(stored_frames[-1]["data"])["error"]
    assert error["code"] == "REPLY_FAILED" and error["aiRecordId"] == record_id


def test_only_the_records_user_or_an_org_admin_can_resume_it(live, upstream):
    member = live.key_for()
    upstream.enqueue(Reply("mine alone"))
    record_id, _ = start_chat(live, key=member)
    wait_finished(live, record_id)
    other_member, outsider = live.key_for(), live.key_for(other_org=True, role=Role.ADMIN)
    for key in (other_member, outsider):
        for r in (
            resume(live, record_id, key=key, after=0),
            httpx.get(f"{live.base}/api/chat-with-ai/{record_id}", headers=live.headers(key)),
        ):
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "NOT_FOUND"
    assert content(frames_in(resume(live, record_id, key=member))) == "mine alone"
    assert content(frames_in(resume(live, record_id))) == "mine alone"  # the org's admin
    assert stored(live, record_id, key=member)["teamUser"]["role"] == "MEMBER"
    assert stored(live, record_id)["teamUser"]["role"] == "MEMBER"  # the record's user


def test_malformed_ids_and_positions_are_400(live, upstream):
    upstream.enqueue(Reply("short reply"))
    record_id, _ = start_chat(live)
    wait_finished(live, record_id)
    bad_ids = ["nonsense", f"{record_id}", f"{record_id}:x", f"{record_id}:-1", f"{uuid4()}:3"]
    for last_id in bad_ids:
        r = resume(live, record_id, last_id)
        assert r.status_code == 400, last_id
        assert r.json()["success"] is False
        assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert resume(live, record_id, f"{record_id}:999").status_code == 400  # past the end
    assert resume(live, record_id, after=-1).status_code == 400
    assert resume(live, "not-a-uuid", after=0).status_code == 400
    r = httpx.get(f"{live.base}/api/chat-with-ai/not-a-uuid", headers=live.headers())
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
    assert resume(live, str(uuid4()), after=0).status_code == 404


def test_a_record_pending_in_another_process_is_waited_for(live):
    container = live.container
    container.replays.poll_seconds = 0.05
    admin = live.server.call(container.accounts.authenticate(live.key))
    record = pending_record(admin.org_id, admin.user.id, "elsewhere")
    live.server.call(container.record_store.start(record, None))
    done = replace(record, status=RecordStatus.SUCCESS, result_text="made elsewhere")
    finisher = threading.Timer(
        0.5, lambda: live.server.call(container.record_store.finish(done, None, None, 0))
    )
    finisher.start()
    started = time.monotonic()
    frames = frames_in(resume(live, str(record.id), f"{record.id}:5"))
    finisher.join()
    assert time.monotonic() - started >= 0.4
    assert names(frames) == ["content", "result", "done"]
    assert content(frames) == "elsewhere"
    # one that stays PENDING past the wait ends with an error the client can act on
    container.replays.pending_wait = 0.2
    stuck = replace(record, id=uuid4())
    live.server.call(container.record_store.start(stuck, None))
    frames = frames_in(resume(live, str(stuck.id), after=0))
    assert names(frames) == ["error"]
    assert "REPLY_PENDING" in frames[0]["data"]


def _org(live: Live) -> Any:
    return live.server.call(live.container.accounts.authenticate(live.key)).org_id


def test_a_resumed_stream_is_a_rate_limited_request(tmp_path, db_url, upstream, monkeypatch):
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", UPSTREAM_KEY)
    live = Live(tmp_path, db_url, upstream, rate_limit_per_minute=3)
    try:
        upstream.enqueue(Reply("limited"))
        record_id, _ = start_chat(live)  # 1
        assert content(frames_in(resume(live, record_id, after=0))) == "limited"  # 2
        assert resume(live, record_id, after=0).status_code == 200  # 3
        r = resume(live, record_id, after=0)
        assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    finally:
        live.server.stop()


# ---- the Conversation Service's stream_chat (003_*) ----

SESSIONS = "/api/conversation"


def new_chat_session(live: Live) -> tuple[str, str]:
    """(org id, chat session id) of a new conversation's session for gpt-4o-mini."""
    headers = live.headers()
    org = httpx.get(f"{live.base}/api/me", headers=headers).json()["user"]["teamId"]
    models = httpx.get(f"{live.base}/api/models", headers=headers).json()["models"]
    model = next(m["id"] for m in models if m["name"] == "gpt-4o-mini")
    url = f"{live.base}{SESSIONS}"
    conversation = httpx.post(
        f"{url}/create?org_id={org}", headers=headers, json={"title": "durable"}
    ).json()["id"]
    body = {"conversation_id": conversation, "model_id": model}
    session = httpx.post(f"{url}/create_session?org_id={org}", headers=headers, json=body)
    return org, session.json()["id"]


def test_stream_chat_resumes_with_exactly_the_rest_then_end(live, upstream):
    org, session = new_chat_session(live)
    upstream.enqueue(Reply(tokens=TOKENS, delay=0.05))
    url = f"{live.base}{SESSIONS}/stream_chat?org_id={org}"
    body = {"chat_session_id": session, "message": "Go"}
    first: list[Frame] = []
    with httpx.stream("POST", url, headers=live.headers(), json=body, timeout=30) as r:
        record_id = r.headers["x-ai-record-id"]
        for frame in frames_of(r.iter_lines()):
            first.append(frame)
            if names(first).count("content") == 4:
                break
    assert names(first) == ["start"] + ["content"] * 4
    assert first[0]["id"] == f"{record_id}:0"
    assert first[-1]["id"] == f"{record_id}:{len(content(first))}"

    resume_url = f"{live.base}{SESSIONS}/stream_chat/resume"
    params = {"org_id": org, "ai_record_id": record_id}
    headers = {**live.headers(), "Last-Event-ID": first[-1]["id"]}
    rest = frames_in(httpx.get(resume_url, params=params, headers=headers, timeout=30))
    assert names(rest) == ["content"] * (TOKENS - 4) + ["end"]  # live, no second start
    assert content(first) + content(rest) == FULL_TEXT
    end, start = json.loads(rest[-1]["data"]), json.loads(first[0]["data"])
    assert end["status"] == "completed" and end["reply_message_id"] == start["message_id"]
    assert end["message_id"] == start["message_id"] and start["user_message_id"]
    assert end["user_message_id"] == start["user_message_id"]
    # no position: the whole stream again, start included (naming the same messages)
    again = frames_in(httpx.get(resume_url, params=params, headers=live.headers(), timeout=30))
    assert names(again) == ["start"] + ["content"] * TOKENS + ["end"]
    assert json.loads(again[0]["data"]) == start
    # after a restart: from the stored record, the rest as one frame
    live.restart()
    resume_url = f"{live.base}{SESSIONS}/stream_chat/resume"  # a new server, a new port
    rest = frames_in(httpx.get(resume_url, params=params, headers=headers, timeout=30))
    assert names(rest) == ["content", "end"]
    assert content(first) + content(rest) == FULL_TEXT
    assert json.loads(rest[-1]["data"]) == end
    again = frames_in(httpx.get(resume_url, params=params, headers=live.headers(), timeout=30))
    assert names(again) == ["start", "content", "end"]
    assert json.loads(again[0]["data"]) == start and json.loads(again[-1]["data"]) == end


def test_stream_chat_resume_is_scoped_and_its_errors_are_the_dialects(live, upstream):
    org, session = new_chat_session(live)
    upstream.enqueue(Reply("scoped"))
    url = f"{live.base}{SESSIONS}/stream_chat?org_id={org}"
    body = {"chat_session_id": session, "message": "Go"}
    r = httpx.post(url, headers=live.headers(), json=body, timeout=30)
    record_id = r.headers["x-ai-record-id"]
    resume_url = f"{live.base}{SESSIONS}/stream_chat/resume"

    def get(key: str | None = None, org_id: str = org, **extra: str) -> httpx.Response:
        params = {"org_id": org_id, "ai_record_id": record_id, **extra}
        return httpx.get(resume_url, params=params, headers=live.headers(key), timeout=30)

    assert names(frames_in(get())) == ["start", "content", "end"]
    outsider = live.key_for(other_org=True, role=Role.ADMIN)
    outsider_org = httpx.get(f"{live.base}/api/me", headers=live.headers(outsider)).json()
    for r in (get(live.key_for()), get(outsider, outsider_org["user"]["teamId"])):
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = get(after="x")
    assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST"
    r = httpx.get(
        resume_url,
        params={"org_id": org, "ai_record_id": record_id},
        headers={**live.headers(), "Last-Event-ID": "garbage"},
    )
    assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST"
    # a 1min.ai reply is not a stream_chat stream
    upstream.enqueue(Reply("other dialect"))
    other, _ = start_chat(live)
    r = httpx.get(resume_url, params={"org_id": org, "ai_record_id": other}, headers=live.headers())
    assert r.status_code == 404


def stream_chat(
    live: Live, org: str, session: str, until: Callable[[list[Frame]], bool] | None = None
) -> list[Frame]:
    """Send a message through the session; hang up once `until(frames)` holds."""
    url = f"{live.base}{SESSIONS}/stream_chat?org_id={org}"
    body = {"chat_session_id": session, "message": "Go"}
    frames: list[Frame] = []
    with httpx.stream("POST", url, headers=live.headers(), json=body, timeout=30) as r:
        assert r.status_code == 200
        for frame in frames_of(r.iter_lines()):
            frames.append(frame)
            if until is not None and until(frames):
                break
    return frames


def listed_messages(live: Live, org: str, conversation: str) -> list[dict[str, Any]]:
    params = {"org_id": org, "conversation_id": conversation}
    r = httpx.get(f"{live.base}{SESSIONS}/messages", params=params, headers=live.headers())
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


@pytest.mark.parametrize(
    ("script", "hang_up", "last", "status"),
    [
        (Reply(tokens=6), False, "end", "completed"),
        (Disconnect(after_chunks=3), False, "error", "failed"),  # the upstream drops mid-way
        (Reply(tokens=TOKENS, delay=0.03), True, None, "completed"),  # the client leaves
    ],
    ids=["completed", "failed", "client-gone"],
)
def test_stream_chat_start_names_the_reply_message_stored_at_the_end(
    live, upstream, script, hang_up, last, status
):
    org, session = new_chat_session(live)
    upstream.enqueue(script)
    until = (lambda frames: names(frames) == ["start"]) if hang_up else None
    frames = stream_chat(live, org, session, until)
    start = json.loads(frames[0]["data"])
    record_id = frames[0]["id"].partition(":")[0]
    wait_finished(live, record_id)
    user, reply = listed_messages(live, org, start["conversation_id"])
    assert (user["role"], reply["role"], reply["status"]) == ("user", "assistant", status)
    assert reply["content"] == content(frames) or hang_up
    assert start["message_id"] == reply["id"] and start["user_message_id"] == user["id"]
    if last is not None:
        assert names(frames)[-1] == last
        closing = json.loads(frames[-1]["data"])
        assert closing["message_id"] == closing["reply_message_id"] == reply["id"]
        assert closing["user_message_id"] == user["id"]


def test_stream_chat_resume_of_a_reply_pending_elsewhere_names_its_stored_reply(live):
    container = live.container
    container.replays.poll_seconds = 0.05
    org, session_id = new_chat_session(live)
    admin = live.server.call(container.accounts.authenticate(live.key))
    session = live.server.call(container.sessions.get(admin, UUID(session_id)))
    now = utcnow()
    record = AiRecord(
        id=uuid4(),
        org_id=admin.org_id,
        user_id=admin.user.id,
        conversation_id=session.conversation_id,
        model="gpt-4o-mini",
        type="CONVERSATION_SESSION_CHAT",
        status=RecordStatus.PENDING,
        prompt_object={"prompt": "Go", "chatSessionId": session_id},
        result_text="",
        created_at=now,
        updated_at=now,
    )
    asked = Message(
        id=uuid4(),
        org_id=admin.org_id,
        conversation_id=session.conversation_id,
        session_id=session.id,
        record_id=record.id,
        role="user",
        content="Go",
        model="gpt-4o-mini",
        status=RecordStatus.PENDING,
        created_at=now,
    )
    live.server.call(container.record_store.start(record, asked))
    done = replace(record, status=RecordStatus.SUCCESS, result_text="made elsewhere")
    answer = replace(asked, id=uuid4(), role="assistant", content=done.result_text)
    finisher = threading.Timer(
        0.3, lambda: live.server.call(container.record_store.finish(done, answer, asked.id, 0))
    )
    finisher.start()
    params = {"org_id": org, "ai_record_id": str(record.id)}
    url = f"{live.base}{SESSIONS}/stream_chat/resume"
    r = httpx.get(url, params=params, headers=live.headers(), timeout=30)
    finisher.join()
    frames = frames_in(r)
    assert names(frames) == ["start", "content", "end"]  # start waited for the reply
    assert content(frames) == "made elsewhere"
    start, end = json.loads(frames[0]["data"]), json.loads(frames[-1]["data"])
    assert start["message_id"] == end["message_id"] == end["reply_message_id"] == str(answer.id)
    assert start["user_message_id"] == end["user_message_id"] == str(asked.id)
