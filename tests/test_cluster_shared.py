"""Shared fast state across processes with Redis (issue 13, tests 5 and 6): one rate limit
for the whole cluster, revocations that reach every node at once, and Redis going away and
coming back under load without a single 5xx."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.cluster import RATE_LIMIT, Cluster, Member, chat_body, metric
from tests.fake_upstream import Reply
from tests.helpers import content, frames_of
from tests.server_process import ServerProcess
from threadline.domain.entities import Role


def me(node: ServerProcess, member: Member) -> int:
    return httpx.get(f"{node.base_url}/api/me", headers=member.headers, timeout=30).status_code


def test_a_rate_limit_holds_across_both_nodes(cluster: Cluster) -> None:
    member = cluster.new_key()
    nodes = [cluster.a, cluster.b] * 15
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda node: me(node, member), nodes))
    assert sorted(statuses) == [200] * RATE_LIMIT + [429] * (30 - RATE_LIMIT)


def test_credits_hold_across_both_nodes_under_a_storm(cluster: Cluster) -> None:
    """Issue 13's test 6, credits: the most a reply may cost is held in the database, so 30
    concurrent chats of one user spread over both nodes run exactly the two that fit."""
    admin = cluster.new_key(Role.ADMIN)
    member = cluster.new_key(credit_limit=1)
    keys = cluster.more_keys(member, 30)  # one per request: rate limits stay out of the way
    refused = chat(cluster.a, keys[0])
    found = re.search(r"may cost up to (\d+) credits", refused.text)
    assert refused.status_code == 403 and found, refused.text
    most = int(found.group(1))
    r = httpx.patch(
        f"{cluster.b.base_url}/api/admin/users/{member.user_id}",
        headers=admin.headers,
        json={"creditLimit": 3 * most - 1},  # two replies fit, not three
    )
    assert r.status_code == 200, r.text
    # slow replies: none ends (and gives credits back) during the storm
    default, cluster.upstream.default = cluster.upstream.default, Reply(tokens=8, delay=0.5)
    try:
        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(chat, [cluster.a, cluster.b] * 15, keys))
    finally:
        cluster.upstream.default = default
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200] + [403] * 28, statuses
    charged = sum(a.json()["aiRecord"]["usage"]["credits"] for a in answers if a.status_code == 200)
    user = httpx.get(f"{cluster.a.base_url}/api/me", headers={"API-KEY": keys[1]}).json()["user"]
    assert user["usedCredit"] == charged <= user["creditLimit"]


def chat(node: ServerProcess, key: str) -> httpx.Response:
    url = f"{node.base_url}/api/chat-with-ai"
    return httpx.post(url, headers={"API-KEY": key}, json=chat_body(), timeout=60)


def until_refused(node: ServerProcess, member: Member, limit: float = 5.0) -> float:
    """Seconds until the node refuses the member's key (polled every 5 ms)."""
    began = time.monotonic()
    while me(node, member) == 200:
        assert time.monotonic() - began < limit, "the change never reached the node"
        time.sleep(0.005)
    return time.monotonic() - began


def test_a_revocation_on_one_node_is_refused_on_the_other_at_once(cluster: Cluster) -> None:
    admin = cluster.new_key(Role.ADMIN)
    delays = []
    for _ in range(3):
        member = cluster.new_key()
        assert me(cluster.b, member) == 200  # now in node B's cache (30 s)
        r = httpx.delete(
            f"{cluster.a.base_url}/api/admin/keys/{member.key_id}", headers=admin.headers
        )
        assert r.status_code == 200, r.text
        delays.append(until_refused(cluster.b, member))
    # the cache would keep the key 30 s; the invalidation takes a round trip
    assert statistics.median(delays) <= 0.1, delays

    member = cluster.new_key()
    assert me(cluster.b, member) == 200
    r = httpx.patch(
        f"{cluster.a.base_url}/api/admin/users/{member.user_id}",
        headers=admin.headers,
        json={"status": "INACTIVE"},
    )
    assert r.status_code == 200, r.text
    assert until_refused(cluster.b, member) <= 1.0


def test_redis_going_away_degrades_without_errors_and_recovers(cluster: Cluster) -> None:
    nodes = (cluster.a, cluster.b)
    assert [metric(n, "threadline_redis_up") for n in nodes] == [1.0, 1.0]
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:  # requests to both nodes all along, a new member now and then
        while not stop.is_set():
            member = cluster.new_key()
            for node in nodes * 4:
                statuses.append(me(node, member))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        cluster.redis.stop()
        _wait(lambda: [metric(n, "threadline_redis_up") for n in nodes] == [0.0, 0.0])
        ready = httpx.get(f"{cluster.a.base_url}/readyz", timeout=10)
        assert (ready.status_code, ready.json()["checks"]["redis"]) == (
            503,
            "unreachable (degraded mode)",
        )
        # a stream started and resumed on the other node: from the store, no error
        key = cluster.new_key()
        cluster.upstream.enqueue(Reply(tokens=60, delay=0.01))
        url = f"{cluster.a.base_url}/api/chat-with-ai?isStreaming=true"
        with httpx.stream("POST", url, headers=key.headers, json=chat_body(), timeout=30) as r:
            assert r.status_code == 200
            record_id = r.headers["x-ai-record-id"]
            first = next(frames_of(r.iter_lines()))
        resumed = httpx.get(
            f"{cluster.b.base_url}/api/chat-with-ai/{record_id}/stream",
            headers={**key.headers, "Last-Event-ID": first["id"]},
            timeout=60,
        )
        assert resumed.status_code == 200
        frames = list(frames_of(iter(resumed.text.splitlines())))
        assert frames[-1]["event"] == "done"
        assert content([first, *frames]) == "".join(Reply(tokens=60).pieces())
        time.sleep(0.5)
    finally:
        cluster.redis.start()
        try:
            _wait(lambda: [metric(n, "threadline_redis_up") for n in nodes] == [1.0, 1.0])
        finally:
            stop.set()
            loader.join()
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    for node in nodes:
        log = node.output(since_start=True)
        assert "degraded mode" in log and "full mode" in log
    ready = httpx.get(f"{cluster.b.base_url}/readyz", timeout=10)
    assert (ready.status_code, ready.json()["checks"]["redis"]) == (200, "ok")
    # full mode again: one window for both nodes
    member = cluster.new_key()
    passed = [me(node, member) for node in nodes * RATE_LIMIT].count(200)
    assert passed == RATE_LIMIT


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.05)
