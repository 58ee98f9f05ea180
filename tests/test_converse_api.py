"""AI Hub Converse (004_*), in process on SQLite and PostgreSQL, and through the official
`aihub` SDK against a real uvicorn server.

Documents are real files made here (a two-page PDF, a DOCX, a text file) and really
ingested; answers come from the scripted fake model, whose recorded request shows which
excerpts the reply was grounded in.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from tests.helpers import Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import Container, create_app
from threadline.domain.errors import ModelError
from threadline.settings import DocumentSettings, EmbeddingConfig, Settings

API = "/api/v2/conversations"
MODEL = "gpt-4o-mini"
WARRANTY = "The Falcon X2 drone carries a warranty of eighteen months from delivery."
HERON = "The Heron sailing boat is painted teal; its warranty is two years."
REVENUE = "Quarterly revenue of the Osprey division was 42 million euros."
PDF = "application/pdf"
INGEST_SECONDS = 90.0
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


# ---- files ----


def pdf_bytes(pages: list[str]) -> bytes:
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=letter)
    for text in pages:
        pdf.drawString(72, 700, text)
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def docx_bytes(paragraphs: list[str]) -> bytes:
    from docx import Document

    document = Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


MANUAL = ("manual.pdf", pdf_bytes(["Falcon X2 user manual: introduction.", WARRANTY]), PDF)
BOAT = ("boat.docx", docx_bytes(["Heron brochure", HERON]), DOCX)
NOTES = ("notes.txt", REVENUE.encode(), "text/plain")


# ---- fixtures and helpers ----


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return converse_settings(tmp_path, db_url)


def converse_settings(
    tmp_path: Path, db_url: str, documents: dict[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Full-text retrieval only: fast and exact (the local embedder passes too, slower)."""
    return make_settings(
        tmp_path,
        db_url,
        embeddings=EmbeddingConfig(provider="none"),
        documents=DocumentSettings(**(documents or {})),
        **overrides,
    )


@pytest.fixture
def bearer(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
async def me(client: httpx.AsyncClient, bearer: dict[str, str]) -> dict[str, Any]:
    return dict((await client.get("/api/me", headers=bearer)).json()["user"])


@pytest.fixture
async def acme(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Another org, with its admin's Bearer headers."""
    r = await client.post("/api/admin/orgs", headers=admin, json={"name": "acme"})
    body = r.json()
    return {
        "id": body["org"]["id"],
        "headers": {"Authorization": f"Bearer {body['apiKey']['key']}"},
    }


def parts(*files: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", f) for f in files]


async def create(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str = "Sample Conversation Name",
    files: tuple[tuple[str, bytes, str], ...] = (),
    prefix: str = API,
    **fields: str,
) -> httpx.Response:
    data = {"name": name, "description": "Sample Conversation Description", **fields}
    return await client.post(prefix, headers=headers, data=data, files=parts(*files) or None)


async def new_conversation(client, headers, *files, name="Sample Conversation Name") -> str:
    r = await create(client, headers, name, files)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def wait_state(client, headers, conversation) -> dict[str, Any]:
    """Poll the conversation information until no document is processing."""
    deadline = time.monotonic() + INGEST_SECONDS
    while True:
        r = await client.get(f"{API}/{conversation}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["state"] != "RUNNING" or time.monotonic() > deadline:
            return dict(r.json())
        await asyncio.sleep(0.1)


def doc_ids(info: dict[str, Any]) -> dict[str, int]:
    return {d["name"]: d["id"] for d in info["documents"]}


async def ask(client, headers, conversation, document_id, question, mode="default"):
    body = {"question": question, "document_ids": [document_id], "mode": mode}
    return await client.post(f"{API}/{conversation}/prompts", headers=headers, json=body)


def system_prompt(fakes: Fakes) -> str:
    messages = fakes[MODEL].requests[-1].messages
    assert messages[0].role == "system"
    return messages[0].content


# ---- create, information, metadata, prompts ----


async def test_create_with_files_processes_them_and_grounds_prompts(client, bearer, fakes):
    r = await create(client, bearer, files=(MANUAL, BOAT, NOTES))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "Sample Conversation Name" and len(body["id"]) == 36
    assert body["upload_status"] == {
        "success": [{"name": "manual.pdf"}, {"name": "boat.docx"}, {"name": "notes.txt"}],
        "failure": [],
    }
    info = await wait_state(client, bearer, body["id"])
    assert info["state"] == "COMPLETE"
    assert (info["name"], info["description"]) == (
        "Sample Conversation Name",
        "Sample Conversation Description",
    )
    ids = doc_ids(info)
    assert set(ids) == {"manual.pdf", "boat.docx", "notes.txt"}
    assert all(isinstance(i, int) for i in ids.values())
    assert {d["state"] for d in info["documents"]} == {"PROCESSED"}

    fakes[MODEL].enqueue(["Eighteen months [1]."])
    question = "What is the warranty?"  # both the manual and the boat brochure say
    r = await ask(client, bearer, body["id"], ids["manual.pdf"], question)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["answer"] == "Eighteen months [1]."
    assert len(answer["prompt_id"]) == 32 and int(answer["prompt_id"], 16) >= 0
    system = system_prompt(fakes)
    assert f"manual.pdf, page 2:\n{WARRANTY}" in system
    assert HERON not in system  # only the document asked about
    assert fakes[MODEL].requests[-1].messages[-1].content == question

    fakes[MODEL].enqueue(["Teal."])
    r = await ask(
        client,
        bearer,
        body["id"],
        ids["boat.docx"],
        "How is the Heron sailing boat painted?",
        "advanced",
    )
    assert r.status_code == 200 and r.json()["answer"] == "Teal."
    system = system_prompt(fakes)
    assert HERON in system and WARRANTY not in system


async def test_document_metadata_has_one_entry_per_page(client, bearer, tmp_path):
    conversation = await new_conversation(client, bearer, MANUAL, NOTES)
    ids = doc_ids(await wait_state(client, bearer, conversation))
    r = await client.get(f"{API}/{conversation}/documents/{ids['manual.pdf']}", headers=bearer)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert (meta["id"], meta["name"]) == (ids["manual.pdf"], "manual.pdf")
    assert (
        meta["ibdoc_path"]
        and str(tmp_path) not in r.text
        and not meta["ibdoc_path"].startswith("/")
    )
    assert [m["layout"]["original_page_number"] for m in meta["metadata"]] == [0, 1]
    first = meta["metadata"][0]
    assert (first["metadata_list"], first["annotation_data"], first["pdf_doc_metadata"]) == (
        None,
        None,
        None,
    )
    layout = first["layout"]
    assert layout["width"] > 0 and layout["height"] > layout["width"]  # US letter, portrait
    assert layout["origin_pos"] == [0, 0] and layout["is_blurry"] is False
    assert layout["blur_factor"] == 0 and layout["corrected_rotation"] == 0
    assert layout["is_image_page"] is False
    assert layout["processed_image_path"] == "" and layout["thumbnail_image_path"] == ""
    txt = (
        await client.get(f"{API}/{conversation}/documents/{ids['notes.txt']}", headers=bearer)
    ).json()
    assert txt["name"] == "notes.txt" and len(txt["metadata"]) == 1


async def test_every_endpoint_is_also_under_v2_without_api(client, bearer, fakes):
    r = await create(client, bearer, "short root", (NOTES,), prefix="/v2/conversations")
    assert r.status_code == 201
    conversation = r.json()["id"]
    info = await wait_state(client, bearer, conversation)
    base = f"/v2/conversations/{conversation}"
    assert (await client.get(base, headers=bearer)).json()["name"] == "short root"
    assert conversation in [
        c["id"]
        for c in (await client.get("/v2/conversations", headers=bearer)).json()["conversations"]
    ]
    fakes[MODEL].enqueue(["42 million."])
    body = {"question": "Revenue?", "document_ids": [doc_ids(info)["notes.txt"]]}
    assert (await client.post(f"{base}/prompts", headers=bearer, json=body)).status_code == 200
    assert (
        await client.get(f"{base}/documents/{doc_ids(info)['notes.txt']}", headers=bearer)
    ).status_code == 200
    r = await client.post(f"{base}/documents", headers=bearer, files=parts(MANUAL))
    assert r.status_code == 201
    assert (await client.put(f"{base}?name=renamed", headers=bearer)).status_code == 204
    r = await client.delete(f"{base}/documents?ids={doc_ids(info)['notes.txt']}", headers=bearer)
    assert r.status_code == 204
    assert (await client.delete(base, headers=bearer)).status_code == 204
    assert (await client.get(f"{API}/{conversation}", headers=bearer)).status_code == 404


async def test_states_running_then_failed_and_prompts_say_why(tmp_path, db_url, fakes):
    """With no ingestion worker, documents stay RUNNING; a broken file FAILS with a reason."""
    documents = {"embedded_worker": False, "ready_wait_seconds": 0.2}
    settings = converse_settings(tmp_path, db_url, documents)
    async with running(settings, fakes) as (client, headers, container):
        conversation = await new_conversation(client, headers, NOTES)
        info = (await client.get(f"{API}/{conversation}", headers=headers)).json()
        assert info["state"] == "RUNNING"
        assert info["documents"][0]["state"] == "PROCESSING"
        notes = doc_ids(info)["notes.txt"]
        meta = (await client.get(f"{API}/{conversation}/documents/{notes}", headers=headers)).json()
        assert meta["metadata"] == []
        r = await ask(client, headers, conversation, notes, "Revenue?")
        assert r.status_code == 422 and "Still processing notes.txt" in r.json()["message"]
        assert fakes[MODEL].requests == []

        container.worker.start()
        broken = ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nthis is not a pdf", PDF)
        failing = await new_conversation(client, headers, broken)
        info = await wait_state(client, headers, failing)
        assert info["state"] == "FAILED"
        assert info["documents"][0]["state"] == "FAILED"
        r = await ask(client, headers, failing, doc_ids(info)["broken.pdf"], "Anything?")
        assert r.status_code == 422 and "broken.pdf" in r.json()["message"]
        info = await wait_state(client, headers, conversation)
        assert info["state"] == "COMPLETE"  # the worker caught up with the first one
        r = await client.post(f"{API}/{failing}/documents", headers=headers, files=parts(NOTES))
        info = await wait_state(client, headers, failing)
        assert info["state"] == "COMPLETE"  # not every document failed any more
        assert fakes[MODEL].requests == []


async def test_conversation_with_no_documents_is_complete(client, bearer):
    r = await client.post(API, headers=bearer, data={"name": "empty"})
    assert r.status_code == 201
    assert r.json()["upload_status"] == {"success": [], "failure": []}
    info = (await client.get(f"{API}/{r.json()['id']}", headers=bearer)).json()
    assert (info["state"], info["documents"], info["description"]) == ("COMPLETE", [], "")


async def test_one_store_with_the_1min_ai_api(client, bearer):
    """A Converse conversation is a CHAT_WITH_PDF conversation there; its documents, assets."""
    conversation = await new_conversation(client, bearer, NOTES, name="shared")
    notes = doc_ids(await wait_state(client, bearer, conversation))["notes.txt"]
    c = (await client.get(f"/api/conversations/{conversation}", headers=bearer)).json()
    c = c["conversation"]
    assert (c["type"], c["title"]) == ("CHAT_WITH_PDF", "shared")
    assert [(f["fileName"], f["status"]) for f in c["conversationFile"]] == [
        ("notes.txt", "COMPLETE")
    ]
    asset = await client.get(f"/api/assets/{c['conversationFile'][0]['fileId']}", headers=bearer)
    assert asset.json()["asset"]["documentId"] == notes


# ---- create: bad input ----


async def test_create_refusals_leave_nothing_behind(client, bearer):
    r = await client.post(API, headers=bearer, data={"description": "no name"})
    assert r.status_code == 400 and r.json() == {"message": "name is required"}
    r = await client.post(API, headers=bearer, data={"name": "  "})
    assert r.status_code == 400 and "name must not be empty" in r.json()["message"]
    r = await client.post(API, headers=bearer, data={"name": "x", "colour": "red"})
    assert r.status_code == 400 and "colour is not a known field" in r.json()["message"]
    r = await client.post(API, headers=bearer, data={"name": "x"}, files=[("file", NOTES)])
    assert r.status_code == 400 and "file is not a known field" in r.json()["message"]
    r = await client.post(API, headers=bearer, json={"name": "x"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["message"]
    r = await create(client, bearer, files=(NOTES,), enable_object_detection="true")
    assert r.status_code == 422 and "enable_object_detection" in r.json()["message"]
    r = await create(client, bearer, enable_object_detection="maybe")
    assert (
        r.status_code == 400 and "enable_object_detection must be a boolean" in r.json()["message"]
    )
    listed = (await client.get(API, headers=bearer)).json()["conversations"]
    assert listed == []
    r = await create(client, bearer, "explicit false", enable_object_detection="False")
    assert r.status_code == 201


# ---- list, update, delete ----


async def test_list_sorts_searches_and_pages(client, bearer):
    alpha = await new_conversation(client, bearer, name="alpha report")
    beta = await new_conversation(client, bearer, name="beta")
    gamma = await new_conversation(client, bearer, name="gamma report")
    r = await client.get(API, headers=bearer)
    assert r.status_code == 200 and r.headers["x-total-count"] == "3"
    listed = r.json()["conversations"]
    assert [c["id"] for c in listed] == [gamma, beta, alpha]  # newest first
    assert listed[0] == {
        "id": gamma,
        "name": "gamma report",
        "description": "Sample Conversation Description",
    }

    async def ids(query: str) -> list[str]:
        r = await client.get(f"{API}?{query}", headers=bearer)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["conversations"]]

    assert await ids("sort_is_ascending=true") == [alpha, beta, gamma]
    assert await ids("search_string=REPORT") == [gamma, alpha]
    assert await ids("limit=1&offset=1") == [beta]
    assert await ids("offset=5") == []
    await asyncio.sleep(0.01)
    assert (
        await client.put(f"{API}/{alpha}?description=touched", headers=bearer)
    ).status_code == 204
    assert (await ids("sort_key=updated_at"))[0] == alpha
    assert (await ids("sort_key=created_at"))[0] == gamma
    for bad, word in (
        ("sort_key=name", "sort_key"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
        ("sort_is_ascending=perhaps", "sort_is_ascending"),
    ):
        r = await client.get(f"{API}?{bad}", headers=bearer)
        assert r.status_code == 400 and word in r.json()["message"], bad


async def test_members_list_their_own_admins_the_orgs(client, admin, bearer):
    user = (await client.post("/api/admin/users", headers=admin, json={"name": "mia"})).json()[
        "user"
    ]
    key = (
        await client.post("/api/admin/keys", headers=admin, json={"userId": user["userId"]})
    ).json()
    member = {"Authorization": f"Bearer {key['apiKey']['key']}"}
    mine = await new_conversation(client, member, name="mia's")
    admins = await new_conversation(client, bearer, name="admin's")
    listed = (await client.get(API, headers=member)).json()["conversations"]
    assert [c["id"] for c in listed] == [mine]
    listed = (await client.get(API, headers=bearer)).json()["conversations"]
    assert {c["id"] for c in listed} == {mine, admins}
    assert (await client.get(f"{API}/{admins}", headers=member)).status_code == 404
    assert (await client.get(f"{API}/{mine}", headers=bearer)).status_code == 200
    r = await create(client, member, "in my workspace", workspace=user["userId"])
    assert r.status_code == 201
    r = await create(client, member, "in the admin's", workspace=str(uuid4()))
    assert r.status_code == 404 and "workspace" in r.json()["message"]


async def test_update_then_delete(client, bearer, fakes, container, me):
    conversation = await new_conversation(client, bearer, NOTES)
    info = await wait_state(client, bearer, conversation)
    r = await client.put(
        f"{API}/{conversation}?name=Renamed&description=New%20words", headers=bearer
    )
    assert r.status_code == 204 and r.content == b""
    info = (await client.get(f"{API}/{conversation}", headers=bearer)).json()
    assert (info["name"], info["description"]) == ("Renamed", "New words")
    r = await client.put(f"{API}/{conversation}?description=", headers=bearer)
    assert r.status_code == 204
    assert (await client.get(f"{API}/{conversation}", headers=bearer)).json()["description"] == ""
    r = await client.put(f"{API}/{conversation}", headers=bearer)
    assert r.status_code == 400 and "nothing to update" in r.json()["message"]
    r = await client.put(f"{API}/{conversation}?name=", headers=bearer)
    assert r.status_code == 400 and "name" in r.json()["message"]

    notes = doc_ids(info)["notes.txt"]
    r = await client.delete(f"{API}/{conversation}", headers=bearer)
    assert r.status_code == 204 and r.content == b""
    for method, path in (
        ("GET", ""),
        ("PUT", "?name=again"),
        ("DELETE", ""),
        ("GET", f"/documents/{notes}"),
    ):
        r = await client.request(method, f"{API}/{conversation}{path}", headers=bearer)
        assert r.status_code == 404, (method, path)
    r = await ask(client, bearer, conversation, notes, "still there?")
    assert r.status_code == 404
    assert (await client.get(API, headers=bearer)).json()["conversations"] == []
    assert await stored(container, me, notes) is None  # its documents went with it
    assert fakes[MODEL].requests == []


async def stored(container: Container, me: dict[str, Any], document_id: int) -> Any:
    return await container.document_store.get_document(UUID(me["teamId"]), document_id)


# ---- add and delete documents ----


async def test_add_documents_reports_each_file(client, bearer):
    conversation = await new_conversation(client, bearer, NOTES)
    r = await client.post(
        f"{API}/{conversation}/documents", headers=bearer, files=parts(MANUAL, NOTES)
    )
    assert r.status_code == 201, r.text
    assert r.json() == {
        "upload_status": {
            "success": [{"name": "manual.pdf"}],
            "failure": [{"name": "notes.txt", "reason": "File already exists."}],
        }
    }
    binary = ("tool.exe", b"MZ\x90\x00" + bytes(range(256)) * 4, "application/octet-stream")
    empty = ("empty.txt", b"", "text/plain")
    r = await client.post(
        f"{API}/{conversation}/documents", headers=bearer, files=parts(binary, empty, NOTES)
    )
    assert r.status_code == 400
    failures = {f["name"]: f["reason"] for f in r.json()["upload_status"]["failure"]}
    assert r.json()["upload_status"]["success"] == []
    assert "unsupported file type" in failures["tool.exe"]
    assert "empty" in failures["empty.txt"]
    assert failures["notes.txt"] == "File already exists."
    r = await client.post(
        f"{API}/{conversation}/documents?process_files=true", headers=bearer, files=parts(BOAT)
    )
    assert r.status_code == 201
    info = await wait_state(client, bearer, conversation)
    assert sorted(doc_ids(info)) == ["boat.docx", "manual.pdf", "notes.txt"]


async def test_add_documents_refusals(client, bearer):
    conversation = await new_conversation(client, bearer)
    url = f"{API}/{conversation}/documents"
    r = await client.post(url, headers=bearer, data={"process_files": "false"}, files=parts(NOTES))
    assert r.status_code == 422 and "process_files=false is not supported" in r.json()["message"]
    r = await client.post(url, headers=bearer, data={"process_files": "true"})
    assert r.status_code == 400 and "files is required" in r.json()["message"]
    r = await client.post(url, headers=bearer, json={"files": ["notes.txt"]})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["message"]
    r = await client.post(url, headers=bearer, data={"files": "notes.txt"})
    assert r.status_code == 400
    info = (await client.get(f"{API}/{conversation}", headers=bearer)).json()
    assert info["documents"] == []
    r = await client.post(f"{API}/{uuid4()}/documents", headers=bearer, files=parts(NOTES))
    assert r.status_code == 404


async def test_delete_documents_by_body_or_query(client, bearer, fakes, container, me):
    conversation = await new_conversation(client, bearer, MANUAL, BOAT, NOTES)
    ids = doc_ids(await wait_state(client, bearer, conversation))
    url = f"{API}/{conversation}/documents"

    r = await client.request(
        "DELETE", url, headers=bearer, json={"ids": [ids["boat.docx"], 999999]}
    )
    assert r.status_code == 404 and "999999" in r.json()["message"]
    assert len((await wait_state(client, bearer, conversation))["documents"]) == 3  # none deleted
    for bad, message in (
        ({"json": {"ids": []}}, "at least one"),
        ({"json": {"ids": ["one"]}}, "ids"),
        ({"json": {"documents": [1]}}, "documents is not a known field"),
        ({}, "ids is required"),
        ({"params": {"ids": "1,x"}}, "ids must be integers"),
        ({"params": {"ids": "1"}, "json": {"ids": [1]}}, "not both"),
    ):
        r = await client.request("DELETE", url, headers=bearer, **bad)
        assert r.status_code == 400 and message in r.json()["message"], (bad, r.text)

    r = await client.request("DELETE", url, headers=bearer, json={"ids": [ids["boat.docx"]]})
    assert r.status_code == 204 and r.content == b""
    r = await client.delete(f"{url}?ids={ids['notes.txt']}", headers=bearer)
    assert r.status_code == 204
    info = await wait_state(client, bearer, conversation)
    assert doc_ids(info) == {"manual.pdf": ids["manual.pdf"]}
    for gone in (ids["boat.docx"], ids["notes.txt"]):
        assert await stored(container, me, gone) is None  # deleted, not just unlinked
        assert (await client.get(f"{url}/{gone}", headers=bearer)).status_code == 404
        assert (await ask(client, bearer, conversation, gone, "Teal?")).status_code == 404
    r = await client.delete(f"{url}?ids={ids['notes.txt']}", headers=bearer)
    assert r.status_code == 404
    # a deleted document's name can be uploaded again
    r = await client.post(url, headers=bearer, files=parts(NOTES))
    assert r.status_code == 201 and r.json()["upload_status"]["failure"] == []
    assert fakes[MODEL].requests == []


# ---- prompts: bad input and failures ----


async def test_prompt_refusals(client, bearer, fakes):
    conversation = await new_conversation(client, bearer, NOTES, BOAT)
    ids = doc_ids(await wait_state(client, bearer, conversation))
    other = await new_conversation(client, bearer, MANUAL)
    elsewhere = doc_ids(await wait_state(client, bearer, other))["manual.pdf"]
    url = f"{API}/{conversation}/prompts"
    for body, message in (
        ({"question": "q", "document_ids": []}, "exactly one document id"),
        ({"question": "q", "document_ids": [ids["notes.txt"], ids["boat.docx"]]}, "exactly one"),
        ({"question": "q"}, "document_ids is required"),
        ({"document_ids": [ids["notes.txt"]]}, "question is required"),
        ({"question": "", "document_ids": [ids["notes.txt"]]}, "question"),
        ({"question": "q", "document_ids": [ids["notes.txt"]], "mode": "multistep"}, "mode"),
        (
            {"question": "q", "document_ids": [ids["notes.txt"]], "model": "x"},
            "model is not a known field",
        ),
        ({"question": "q", "document_ids": ["abc"]}, "document_ids"),
    ):
        r = await client.post(url, headers=bearer, json=body)
        assert r.status_code == 400 and message in r.json()["message"], (body, r.text)
    for missing in (elsewhere, 987654):
        r = await ask(client, bearer, conversation, missing, "q")
        assert r.status_code == 404 and str(missing) in r.json()["message"]
    assert fakes[MODEL].requests == []


async def test_a_model_failure_is_an_error_with_its_status(client, bearer, fakes):
    conversation = await new_conversation(client, bearer, NOTES)
    notes = doc_ids(await wait_state(client, bearer, conversation))["notes.txt"]
    fakes[MODEL].enqueue(["Half an ans", ModelError("upstream said 500")])
    r = await ask(client, bearer, conversation, notes, "Revenue?")
    assert r.status_code == 502
    assert set(r.json()) == {"message"} and "upstream said 500" in r.json()["message"]


async def test_the_conversation_model_history_and_record(client, bearer, fakes, container):
    """Follow-up prompts carry the earlier exchange; each prompt is a CONVERSE record."""
    conversation = await new_conversation(client, bearer, NOTES)
    notes = doc_ids(await wait_state(client, bearer, conversation))["notes.txt"]
    fakes[MODEL].enqueue(["42 million euros."])
    first = (await ask(client, bearer, conversation, notes, "What was the revenue?")).json()
    fakes[MODEL].enqueue(["The Osprey division."])
    await ask(client, bearer, conversation, notes, "Of which division?")
    sent = [(m.role, m.content) for m in fakes[MODEL].requests[-1].messages[1:]]
    assert sent == [
        ("user", "What was the revenue?"),
        ("assistant", "42 million euros."),
        ("user", "Of which division?"),
    ]
    me = (await client.get("/api/me", headers=bearer)).json()["user"]
    assert me["usedCredit"] > 0  # prompts are charged like any reply
    assert len(first["prompt_id"]) == 32


# ---- auth, org scope, IB-Context ----


def endpoints(conversation: str, document: int) -> list[tuple[str, str, dict[str, Any]]]:
    base = f"{API}/{conversation}"
    return [
        ("GET", base, {}),
        ("PUT", f"{base}?name=stolen", {}),
        ("DELETE", base, {}),
        ("POST", f"{base}/prompts", {"json": {"question": "q", "document_ids": [document]}}),
        ("POST", f"{base}/documents", {"files": parts(NOTES)}),
        ("DELETE", f"{base}/documents", {"json": {"ids": [document]}}),
        ("DELETE", f"{base}/documents?ids={document}", {}),
        ("GET", f"{base}/documents/{document}", {}),
    ]


async def test_another_orgs_conversations_and_documents_are_404(client, bearer, acme, fakes):
    conversation = await new_conversation(client, bearer, NOTES, name="secret plans")
    notes = doc_ids(await wait_state(client, bearer, conversation))["notes.txt"]
    for method, url, extra in endpoints(conversation, notes):
        r = await client.request(method, url, headers=acme["headers"], **extra)
        assert r.status_code == 404, (method, url, r.text)
        assert set(r.json()) == {"message"} and "secret" not in r.text and REVENUE not in r.text
    assert (await client.get(API, headers=acme["headers"])).json()["conversations"] == []
    # their own conversation does not reach our document either
    theirs = await new_conversation(client, acme["headers"], BOAT)
    await wait_state(client, acme["headers"], theirs)
    for method, url, extra in endpoints(theirs, notes)[3:]:
        if method == "POST" and url.endswith("/documents"):
            continue
        r = await client.request(method, url, headers=acme["headers"], **extra)
        assert r.status_code == 404, (method, url, r.text)
    info = await wait_state(client, bearer, conversation)
    assert (info["name"], doc_ids(info)) == ("secret plans", {"notes.txt": notes})
    assert fakes[MODEL].requests == []


async def test_unknown_or_malformed_ids_are_404(client, bearer):
    conversation = await new_conversation(client, bearer)
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
    conversation = await new_conversation(client, bearer)
    r = await client.get(f"{API}/{conversation}", headers={**bearer, "IB-Context": acme["id"]})
    assert r.status_code == 404
    # acme's own key naming acme is fine, but our conversation stays out of reach
    r = await client.get(
        f"{API}/{conversation}", headers={**acme["headers"], "IB-Context": acme["id"]}
    )
    assert r.status_code == 404 and "conversation" in r.json()["message"]


async def test_org_field_and_ib_context_must_match(client, bearer, me, acme):
    ours = {**bearer, "IB-Context": me["teamId"]}
    r = await create(client, ours, "org by id", org=me["teamId"], workspace=me["userId"])
    assert r.status_code == 201
    r = await create(client, ours, "org by name", org="default", workspace=me["userName"])
    assert r.status_code == 201
    r = await create(client, bearer, "org only", org=me["teamId"])
    assert r.status_code == 201
    r = await create(client, ours, "mismatch", org=acme["id"])
    assert r.status_code == 400 and r.json()["message"] == (
        f"org ({acme['id']}) and IB-Context ({me['teamId']}) must match"
    )
    r = await create(client, bearer, "their org", org=acme["id"])
    assert r.status_code == 404 and "organization" in r.json()["message"]
    r = await create(client, {**bearer, "IB-Context": acme["id"]}, "theirs both", org=acme["id"])
    assert r.status_code == 404
    r = await create(client, ours, "their workspace", workspace="acme-admin")
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
    async with running(settings, fakes) as (client, headers, _container):
        big_but_fine = ("fine.txt", b"plain words " * 1000, "text/plain")  # 12 kB > max_body_bytes
        too_big = ("huge.txt", b"many words " * 2500, "text/plain")  # 27.5 kB > max_file_bytes
        r = await create(client, headers, files=(big_but_fine, too_big))
        assert r.status_code == 201, r.text
        status = r.json()["upload_status"]
        assert status["success"] == [{"name": "fine.txt"}]
        assert status["failure"][0]["name"] == "huge.txt"
        assert "larger than" in status["failure"][0]["reason"]
        conversation = r.json()["id"]
        url = f"{API}/{conversation}/documents"

        third = ("third.txt", b"three", "text/plain")
        fourth = ("fourth.txt", b"four", "text/plain")
        r = await client.post(url, headers=headers, files=parts(third, fourth))
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

        document = doc_ids(await wait_state(client, headers, conversation))["fine.txt"]
        r = await ask(client, headers, conversation, document, "word " * 1000)  # 5 kB JSON
        assert r.status_code == 413 and set(r.json()) == {"message"}
        info = await wait_state(client, headers, conversation)
        assert sorted(doc_ids(info)) == ["fine.txt", "third.txt"]


# ---- an app of our own (settings the shared fixtures do not have) ----


@asynccontextmanager
async def running(
    settings: Settings, fakes: Fakes
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Container]]:
    """The app with its lifespan, an in-process client and the bootstrap admin's headers."""
    app = create_app(settings, model_factory=fakes.factory)
    async with app.router.lifespan_context(app):
        container = app.state.container
        key = (await container.bootstrap()).secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
            yield c, {"Authorization": f"Bearer {key}"}, container


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
