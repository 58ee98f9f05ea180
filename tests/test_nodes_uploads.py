"""Uploads over two nodes, one killed halfway (issue 13, test 3), on the shared cluster
(tests/cluster.py: two `threadline serve` processes on one PostgreSQL, `blob_store =
"database"`, data dirs of their own, and the cluster's `threadline worker`): 200 uploads
sent at once, spread over both nodes, node A killed with SIGKILL when half of them are
answered and the others are in flight (their bodies held before their last bytes until
then), then started again. Every upload that got a 2xx is present, ingested and readable
on either node; no upload is stored twice.

The cluster counts 10 requests a minute per key (tests/cluster.py), so the uploads and the
reads go through a pool of keys of one user (`KeyPool`): the assets are the user's, whichever
key asked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.cluster import RATE_LIMIT, Cluster, Member

UPLOADS = 200
KEYS = 40  # enough rate-limit windows for the uploads and the polls that follow


class KeyPool:
    """Keys of one user, each handed out fewer times than the cluster's rate limit."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = keys
        self._used = 0

    def headers(self) -> dict[str, str]:
        assert self._used < len(self._keys) * (RATE_LIMIT - 1), "the pool is spent: add keys"
        key = self._keys[self._used % len(self._keys)]
        self._used += 1
        return {"API-KEY": key}


def _content(number: int) -> bytes:
    return f"upload {number} says hello {number}".encode()


async def _upload_all(cluster: Cluster, keys: KeyPool) -> dict[str, str]:
    """Send every upload at once, the even ones to node A. The second half's bodies stop
    before their last bytes; when the first half is answered, A is killed (SIGKILL), then the
    second half is let go: A's are cut mid-request, B's end. The acknowledged ones (a 2xx):
    name -> uuid."""
    answered = 0
    first_half = asyncio.Event()
    gate = asyncio.Event()
    urls = [cluster.a.base_url, cluster.b.base_url]
    limits = httpx.Limits(max_connections=UPLOADS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def upload(number: int) -> tuple[str, str | None]:
            nonlocal answered
            name = f"upload-{number}.txt"
            held = gate if number >= UPLOADS // 2 else None
            try:
                r = await client.post(
                    f"{urls[number % 2]}/api/assets",
                    headers={**keys.headers(), "Content-Type": f"{FORM}; boundary={BOUNDARY}"},
                    content=_form(name, _content(number), held),
                )
            except httpx.HTTPError:
                return name, None  # the node died under it: not acknowledged
            finally:
                answered += 1
                if answered == UPLOADS // 2:
                    first_half.set()
            return name, r.json()["asset"]["uuid"] if r.is_success else None

        uploads = [asyncio.create_task(upload(number)) for number in range(UPLOADS)]
        await asyncio.wait_for(first_half.wait(), 120)
        await asyncio.to_thread(cluster.a.kill)  # halfway, the other half in flight
        gate.set()
        results = await asyncio.gather(*uploads)
    return {name: uuid for name, uuid in results if uuid is not None}


FORM = "multipart/form-data"
BOUNDARY = "threadline-test-boundary"


async def _form(name: str, data: bytes, gate: asyncio.Event | None) -> AsyncIterator[bytes]:
    """The multipart body of one file; its closing bytes wait for `gate` when there is one."""
    yield (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="asset"; filename="{name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode() + data
    if gate is not None:
        await gate.wait()
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _assets(url: str, keys: KeyPool) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/assets", headers=keys.headers(), params={"limit": 500}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["total"] <= 500
    return list(r.json()["assets"])


def test_uploads_acknowledged_by_a_node_killed_halfway_are_all_kept_once(
    cluster: Cluster,
) -> None:
    member: Member = cluster.new_key()
    keys = KeyPool(cluster.more_keys(member, KEYS))
    cluster.worker()
    try:
        acknowledged = asyncio.run(_upload_all(cluster, keys))
        cluster.a.launch()  # started again while the worker ingests
        # all of B's; of A's, those of the first half (the others were cut mid-request)
        expected = [f"upload-{n}.txt" for n in range(UPLOADS) if n % 2 or n < UPLOADS // 2]
        assert sorted(acknowledged) == sorted(expected)
        deadline = time.monotonic() + 120
        while True:  # ingested: read on node B meanwhile
            stored = _assets(cluster.b.base_url, keys)
            states = {asset["uuid"]: asset["status"] for asset in stored}
            if all(states.get(uuid) == "COMPLETE" for uuid in acknowledged.values()):
                break
            assert time.monotonic() < deadline, (states, acknowledged)
            time.sleep(0.2)
        cluster.a.wait_started(first_key=False)
        assert len(_assets(cluster.a.base_url, keys)) == len(stored)  # A restarted sees them
        for name, uuid in sorted(acknowledged.items())[:6]:  # the bytes, from either node
            number = int(name.removeprefix("upload-").removesuffix(".txt"))
            for node in (cluster.a, cluster.b):
                r = httpx.get(
                    f"{node.base_url}/api/assets/{uuid}/content", headers=keys.headers(), timeout=30
                )
                assert r.content == _content(number), (node.base_url, name)
    finally:  # node A serving again for the next test
        if cluster.a.pid is None:
            cluster.a.start()
        else:
            cluster.a.wait_started(first_key=False)
    names = Counter(asset["name"] for asset in stored)
    assert max(names.values()) == 1, names  # none stored twice
    assert {asset["uuid"] for asset in stored} >= set(acknowledged.values())
