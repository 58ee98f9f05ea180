"""Streams across processes with Redis (issue 13, tests 1 and 2): a reply driven by node A is
followed live from node B, and when A dies, B ends it with the text streamed so far; when A
was only frozen and wakes up, its late end neither changes the record nor charges again."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx

from tests.cluster import Cluster, chat_body
from tests.fake_upstream import Reply
from tests.helpers import Frame, content, frames_of

TOKENS = 300
FULL_TEXT = "".join(Reply(tokens=TOKENS).pieces())


def start_stream(cluster: Cluster, key: str, stop_at: int) -> tuple[str, list[Frame]]:
    """POST a streamed chat on node A, read `stop_at` characters or more, hang up."""
    url = f"{cluster.a.base_url}/api/chat-with-ai?isStreaming=true"
    frames: list[Frame] = []
    with httpx.stream("POST", url, headers={"API-KEY": key}, json=chat_body(), timeout=30) as r:
        assert r.status_code == 200, r.read()
        record_id = r.headers["x-ai-record-id"]
        for frame in frames_of(r.iter_lines()):
            assert frame["event"] == "content", frame
            frames.append(frame)
            if len(content(frames)) >= stop_at:
                break
    return record_id, frames


def resume_on(node_url: str, key: str, record_id: str, last_id: str) -> list[tuple[float, Frame]]:
    """GET the stream again with Last-Event-ID: (arrival time, frame) pairs."""
    headers = {"API-KEY": key, "Last-Event-ID": last_id}
    url = f"{node_url}/api/chat-with-ai/{record_id}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [(time.monotonic(), f) for f in frames_of(r.iter_lines())]


def record_of(cluster: Cluster, key: str, record_id: str) -> dict[str, Any]:
    r = httpx.get(f"{cluster.b.base_url}/api/chat-with-ai/{record_id}", headers={"API-KEY": key})
    assert r.status_code == 200, r.text
    return dict(r.json()["aiRecord"])


def used_credit(cluster: Cluster, key: str) -> int:
    r = httpx.get(f"{cluster.b.base_url}/api/me", headers={"API-KEY": key})
    assert r.status_code == 200, r.text
    return int(r.json()["user"]["usedCredit"])


def test_a_stream_resumed_on_another_node_follows_it_live(cluster: Cluster) -> None:
    key = cluster.new_key().secret
    cluster.upstream.enqueue(Reply(tokens=TOKENS, delay=0.01))  # ~3 s of words
    record_id, before = start_stream(cluster, key, stop_at=len(FULL_TEXT) // 4)
    had = content(before)
    assert FULL_TEXT.startswith(had)

    after = resume_on(cluster.b.base_url, key, record_id, before[-1]["id"])
    frames = [f for _, f in after]
    texts = [(at, f) for at, f in after if f["event"] == "content"]
    # every remaining character, once and in order, then the end
    assert had + content(frames) == FULL_TEXT
    assert [f["event"] for f in frames[len(texts) :]] == ["result", "done"]
    # live: many frames, spread over the time the upstream took to send them (not one lump)
    assert len(texts) > 10
    assert texts[-1][0] - texts[0][0] > 0.5
    # their ids count the characters, joining the ids node A sent
    assert texts[-1][1]["id"] == f"{record_id}:{len(FULL_TEXT)}"

    stored = record_of(cluster, key, record_id)
    assert stored["status"] == "SUCCESS"
    assert stored["aiRecordDetail"]["resultObject"] == [FULL_TEXT]
    # charged once: the user's whole use is this record's charge
    charged = stored["usage"]["credits"]
    assert charged > 0 and used_credit(cluster, key) == charged


def test_a_node_killed_mid_stream_leaves_the_reply_to_the_other(cluster: Cluster) -> None:
    key = cluster.new_key().secret
    cluster.upstream.enqueue(Reply(tokens=TOKENS * 4, delay=0.01))  # ~12 s: the kill lands mid-way
    record_id, before = start_stream(cluster, key, stop_at=200)
    had = content(before)
    try:
        time.sleep(0.3)  # node A streams on meanwhile (into the feed), nobody reading
        cluster.a.kill()
        after = resume_on(cluster.b.base_url, key, record_id, before[-1]["id"])
    finally:
        cluster.revive(cluster.a)
    frames = [f for _, f in after]
    assert [f["event"] for f in frames[-1:]] == ["error"]
    error = json.loads(frames[-1]["data"])["error"]
    assert error["code"] == "REPLY_FAILED" and "stopped" in error["message"]
    text = had + content(frames)
    # the text node A had streamed when it died: more than the client had, and not all of it
    assert len(had) < len(text) < len(FULL_TEXT * 4)
    assert "".join(Reply(tokens=TOKENS * 4).pieces()).startswith(text)

    stored = record_of(cluster, key, record_id)
    assert stored["status"] == "FAILED"
    assert stored["aiRecordDetail"]["resultObject"] == [text]
    charged = stored["usage"]["credits"]
    assert charged >= len(text.split()) and used_credit(cluster, key) == charged
    # once: reading it again (either node) ends the same way and charges nothing more
    again = resume_on(cluster.b.base_url, key, record_id, before[-1]["id"])
    assert had + content([f for _, f in again]) == text
    assert json.loads(again[-1][1]["data"])["error"]["code"] == "REPLY_FAILED"
    assert used_credit(cluster, key) == charged


def test_a_frozen_owner_that_wakes_after_its_reply_was_ended_charges_nothing_more(
    cluster: Cluster,
) -> None:
    """Node A stopped (SIGSTOP: frozen, not dead) past its owner key's TTL: B takes it for
    dead and ends the reply (FAILED, charged for the text so far). When A wakes (SIGCONT) its
    run ends too, but the record was settled: it stays as B left it, charged once."""
    key = cluster.new_key().secret
    cluster.upstream.enqueue(Reply(tokens=TOKENS, delay=0.01))
    record_id, before = start_stream(cluster, key, stop_at=200)
    # resumed from a frame well behind the last: A publishes to the feed in batches, so the
    # last frames its client got may not have reached Redis when it is frozen
    before = before[: len(before) // 2]
    had = content(before)
    assert cluster.a.pid is not None
    os.kill(cluster.a.pid, signal.SIGSTOP)
    try:
        after = resume_on(cluster.b.base_url, key, record_id, before[-1]["id"])
    finally:
        os.kill(cluster.a.pid, signal.SIGCONT)
    error = json.loads(after[-1][1]["data"])["error"]
    assert error["code"] == "REPLY_FAILED", error
    text = had + content([f for _, f in after])
    ended = record_of(cluster, key, record_id)
    charged = ended["usage"]["credits"]
    assert ended["status"] == "FAILED" and ended["aiRecordDetail"]["resultObject"] == [text]
    assert charged > 0 and used_credit(cluster, key) == charged

    # A wakes, reads the rest of the upstream's reply and ends its run: it says it lost
    late = "reply already ended by another process"
    deadline = time.monotonic() + 30
    while not any(late in line and record_id in line for line in cluster.a.output().splitlines()):
        assert time.monotonic() < deadline, cluster.a.output(since_start=True)[-3000:]
        time.sleep(0.05)
    assert record_of(cluster, key, record_id) == ended
    assert used_credit(cluster, key) == charged
    # and A serves on
    r = httpx.get(f"{cluster.a.base_url}/api/me", headers={"API-KEY": key}, timeout=10)
    assert r.status_code == 200
