"""AI Hub Converse (004_*): auth, org scope and IB-Context, size limits, in process on SQLite
and PostgreSQL; and the official `aihub` SDK against a real uvicorn server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.helpers import (
    CONVERSE_API,
    HERON,
    INGEST_SECONDS,
    MODEL,
    REVENUE,
    WARRANTY,
    Fakes,
    converse_ask,
    converse_create,
    converse_files,
    converse_new,
    converse_settings,
    converse_wait,
    doc_ids,
    file_parts,
    running_app,
    system_prompt,
)
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.settings import Settings

API = CONVERSE_API
MANUAL, BOAT, NOTES = converse_files()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return converse_settings(tmp_path, db_url)


# ---- auth, org scope, IB-Context ----


def endpoints(conversation: str, document: int) -> list[tuple[str, str, dict[str, Any]]]:
    base = f"{API}/{conversation}"
    return [
        ("GET", base, {}),
        ("PUT", f"{base}?name=stolen", {}),
        ("DELETE", base, {}),
        ("POST", f"{base}/prompts", {"json": {"question": "q", "document_ids": [document]}}),
        ("POST", f"{base}/documents", {"files": file_parts(NOTES)}),
        ("DELETE", f"{base}/documents", {"json": {"ids": [document]}}),
        ("DELETE", f"{base}/documents?ids={document}", {}),
        ("GET", f"{base}/documents/{document}", {}),
    ]


async def test_another_orgs_conversations_and_documents_are_404(client, bearer, acme, fakes):
    conversation = await converse_new(client, bearer, NOTES, name="secret plans")
    notes = doc_ids(await converse_wait(client, bearer, conversation))["notes.txt"]
    for method, url, extra in endpoints(conversation, notes):
        r = await client.request(method, url, headers=acme["headers"], **extra)
        assert r.status_code == 404, (method, url, r.text)
        assert set(r.json()) == {"message"} and "secret" not in r.text and REVENUE not in r.text
    assert (await client.get(API, headers=acme["headers"])).json()["conversations"] == []
    # their own conversation does not reach our document either
    theirs = await converse_new(client, acme["headers"], BOAT)
    await converse_wait(client, acme["headers"], theirs)
    for method, url, extra in endpoints(theirs, notes)[3:]:
        if method == "POST" and url.endswith("/documents"):
            continue
        r = await client.request(method, url, headers=acme["headers"], **extra)
        assert r.status_code == 404, (method, url, r.text)
    info = await converse_wait(client, bearer, conversation)
    assert (info["name"], doc_ids(info)) == ("secret plans", {"notes.txt": notes})
    assert fakes[MODEL].requests == []


async def test_unknown_or_malformed_ids_are_404(client, bearer):
    conversation = await converse_new(client, bearer)
    for url in (
        f"{API}/{uuid4()}",
        f"{API}/not-a-uuid",
        f"{API}/{conversation}/documents/abc",
        f"{API}/{conversation}/documents/424242",
    ):
        r = await client.get(url, headers=bearer)
        assert r.status_code == 404 and r.json()["message"], url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer tl_000000000000_nope"}])
async def test_no_or_bad_key_is_401_everywhere(client, admin_key, headers):
    conversation = str(uuid4())
    for method, url, extra in [
        ("GET", API, {}),
        ("POST", API, {"data": {"name": "x"}}),
        *endpoints(conversation, 1),
    ]:
        r = await client.request(method, url, headers=headers, **extra)
        assert r.status_code == 401, (method, url)
        assert r.json() == {"message": "Invalid or missing API key"}


async def test_ib_context_must_be_the_callers_org_or_account(client, bearer, me, acme):
    orgs = (await client.get("/api/admin/orgs", headers=bearer)).json()["orgs"]
    org_name = next(o["name"] for o in orgs if o["id"] == me["teamId"])
    for context in (me["teamId"], me["teamId"].upper(), org_name, me["userId"], me["userName"]):
        r = await client.get(API, headers={**bearer, "IB-Context": context})
        assert r.status_code == 200, context
    for context in (acme["id"], "acme", "someone-else"):
        r = await client.get(API, headers={**bearer, "IB-Context": context})
        assert r.status_code == 404 and "IB-Context" in r.json()["message"], context
    conversation = await converse_new(client, bearer)
    r = await client.get(f"{API}/{conversation}", headers={**bearer, "IB-Context": acme["id"]})
    assert r.status_code == 404
    # acme's own key naming acme is fine, but our conversation stays out of reach
    r = await client.get(
        f"{API}/{conversation}", headers={**acme["headers"], "IB-Context": acme["id"]}
    )
    assert r.status_code == 404 and "conversation" in r.json()["message"]


async def test_org_field_and_ib_context_must_match(client, bearer, me, acme):
    ours = {**bearer, "IB-Context": me["teamId"]}
    r = await converse_create(client, ours, "org by id", org=me["teamId"], workspace=me["userId"])
    assert r.status_code == 201
    r = await converse_create(client, ours, "org by name", org="default", workspace=me["userName"])
    assert r.status_code == 201
    r = await converse_create(client, bearer, "org only", org=me["teamId"])
    assert r.status_code == 201
    r = await converse_create(client, ours, "mismatch", org=acme["id"])
    assert r.status_code == 400 and r.json()["message"] == (
        f"org ({acme['id']}) and IB-Context ({me['teamId']}) must match"
    )
    r = await converse_create(client, bearer, "their org", org=acme["id"])
    assert r.status_code == 404 and "organization" in r.json()["message"]
    r = await converse_create(
        client, {**bearer, "IB-Context": acme["id"]}, "theirs both", org=acme["id"]
    )
    assert r.status_code == 404
    r = await converse_create(client, ours, "their workspace", workspace="acme-admin")
    assert r.status_code == 404 and "workspace" in r.json()["message"]
    names = {c["name"] for c in (await client.get(API, headers=bearer)).json()["conversations"]}
    assert names == {"org by id", "org by name", "org only"}


# ---- size limits ----


async def test_upload_limits(tmp_path, db_url, fakes):
    """Per file: a failure entry. Per request: 413. Per conversation: failure entries.
    Upload paths take `max_request_bytes`; every other body keeps `max_body_bytes`."""
    limits = {
        "max_file_bytes": 20_000,
        "max_request_bytes": 100_000,  # plus 1 MB of multipart framing
        "max_documents_per_conversation": 2,
    }
    settings = converse_settings(tmp_path, db_url, limits, max_body_bytes=4096)
    async with running_app(settings, fakes) as (client, headers, _container):
        big_but_fine = ("fine.txt", b"plain words " * 1000, "text/plain")  # 12 kB > max_body_bytes
        too_big = ("huge.txt", b"many words " * 2500, "text/plain")  # 27.5 kB > max_file_bytes
        r = await converse_create(client, headers, files=(big_but_fine, too_big))
        assert r.status_code == 201, r.text
        status = r.json()["upload_status"]
        assert status["success"] == [{"name": "fine.txt"}]
        assert status["failure"][0]["name"] == "huge.txt"
        assert "larger than" in status["failure"][0]["reason"]
        conversation = r.json()["id"]
        url = f"{API}/{conversation}/documents"

        third = ("third.txt", b"three", "text/plain")
        fourth = ("fourth.txt", b"four", "text/plain")
        r = await client.post(url, headers=headers, files=file_parts(third, fourth))
        assert r.status_code == 201
        assert r.json()["upload_status"]["success"] == [{"name": "third.txt"}]
        [limit] = r.json()["upload_status"]["failure"]
        assert limit["name"] == "fourth.txt" and "limit is 2" in limit["reason"]

        chunks = [("files", (f"part{i}.txt", b"x" * 250_000, "text/plain")) for i in range(5)]
        r = await client.post(url, headers=headers, files=chunks)
        assert r.status_code == 413
        assert set(r.json()) == {"message"} and "larger than" in r.json()["message"]

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            boundary = b"--b0undary"
            yield (
                boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="s.txt"\r\n'
            )
            yield b"Content-Type: text/plain\r\n\r\n"
            for _ in range(12):
                yield b"y" * 100_000
            yield b"\r\n" + boundary + b"--\r\n"

        r = await client.post(
            url,
            headers={**headers, "Content-Type": "multipart/form-data; boundary=b0undary"},
            content=streamed(),
        )
        assert r.status_code == 413 and set(r.json()) == {"message"}

        document = doc_ids(await converse_wait(client, headers, conversation))["fine.txt"]
        r = await converse_ask(client, headers, conversation, document, "word " * 1000)  # 5 kB JSON
        assert r.status_code == 413 and set(r.json()) == {"message"}
        info = await converse_wait(client, headers, conversation)
        assert sorted(doc_ids(info)) == ["fine.txt", "third.txt"]


# ---- the official AI Hub SDK against a real server ----


@pytest.fixture
def live(settings: Settings, fakes: Fakes) -> Iterator[tuple[str, str, str]]:
    """(API_ROOT, API key, IB-Context) of a real uvicorn server."""
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        issued = server.call(app.state.container.bootstrap())
        yield f"{server.base_url}/api", issued.secret, str(issued.user.org_id)
    finally:
        server.stop()


def wait_sdk(client: Any, conversation_id: str) -> Any:
    deadline = time.monotonic() + INGEST_SECONDS
    while True:
        status = client.conversations.status(conversation_id)
        if status.state != "RUNNING" or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_the_official_sdk_end_to_end(live, fakes, tmp_path):
    from aihub import AIHub
    from aihub.exceptions import BadRequestException, NotFoundException

    api_root, key, org = live
    files = {}
    for name, data, _type in (MANUAL, BOAT, NOTES):
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    client = AIHub(api_root=api_root, api_key=key, ib_context=org)

    created = client.conversations.create(
        name="Sample Conversation Name",
        description="Sample Conversation Description",
        org=org,
        files=[str(files["manual.pdf"]), str(files["notes.txt"])],
    )
    assert created.name == "Sample Conversation Name"
    assert [s.name for s in created.upload_status.success] == ["manual.pdf", "notes.txt"]
    assert created.upload_status.failure == []

    listed = client.conversations.list()
    assert [(c.id, c.description) for c in listed.conversations] == [
        (created.id, "Sample Conversation Description")
    ]

    status = wait_sdk(client, created.id)
    assert status.state == "COMPLETE"
    ids = {d.name: d.id for d in status.documents}
    assert set(ids) == {"manual.pdf", "notes.txt"}

    fakes[MODEL].enqueue(["Eighteen months."])
    answer = client.conversations.converse(
        conversation_id=created.id,
        question="What is the warranty?",
        document_ids=[ids["manual.pdf"]],
        mode="default",
    )
    assert answer.answer == "Eighteen months." and len(answer.prompt_id) == 32
    assert WARRANTY in system_prompt(fakes)

    added = client.conversations.add_documents(created.id, files=[str(files["boat.docx"])])
    assert [s.name for s in added.upload_status.success] == ["boat.docx"]
    with pytest.raises(BadRequestException) as caught:
        client.conversations.add_documents(created.id, files=[str(files["notes.txt"])])
    assert "File already exists." in caught.value.body
    status = wait_sdk(client, created.id)
    ids = {d.name: d.id for d in status.documents}
    fakes[MODEL].enqueue(["Teal."])
    answer = client.conversations.converse(
        created.id, "How is the Heron boat painted?", [ids["boat.docx"]], "advanced"
    )
    assert answer.answer == "Teal." and HERON in system_prompt(fakes)

    meta = client.conversations.get_document_metadata(created.id, document_id=ids["manual.pdf"])
    assert (meta.id, meta.name, len(meta.metadata)) == (ids["manual.pdf"], "manual.pdf", 2)
    assert meta.metadata[1]["layout"]["original_page_number"] == 1

    client.conversations.delete_documents(created.id, ids=[ids["notes.txt"], ids["boat.docx"]])
    status = client.conversations.status(created.id)
    assert [d.name for d in status.documents] == ["manual.pdf"]

    client.conversations.update(created.id, name="Renamed", description="Described")
    status = client.conversations.status(created.id)
    assert (status.name, status.description) == ("Renamed", "Described")

    client.conversations.delete(created.id)
    with pytest.raises(NotFoundException):
        client.conversations.status(created.id)
    assert client.conversations.list().conversations == []

    stranger = AIHub(api_root=api_root, api_key=key, ib_context=str(uuid4()))
    with pytest.raises(NotFoundException) as caught:
        stranger.conversations.list()
    assert "IB-Context" in caught.value.body
