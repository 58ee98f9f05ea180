"""AI Hub Converse (004_*), in process on SQLite and PostgreSQL: create, information,
metadata, list, update, delete, documents and prompts (tests/test_converse_scope.py: auth, org
scope, size limits and the official SDK).

Documents are real files made here (a two-page PDF, a DOCX, a text file) and really
ingested; answers come from the scripted fake model, whose recorded request shows which
excerpts the reply was grounded in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.helpers import (
    CONVERSE_API,
    HERON,
    MODEL,
    PDF,
    WARRANTY,
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
from threadline.container import Container
from threadline.domain.errors import ModelError
from threadline.settings import Settings

API = CONVERSE_API
MANUAL, BOAT, NOTES = converse_files()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return converse_settings(tmp_path, db_url)


# ---- create, information, metadata, prompts ----


async def test_create_with_files_processes_them_and_grounds_prompts(client, bearer, fakes):
    r = await converse_create(client, bearer, files=(MANUAL, BOAT, NOTES))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "Sample Conversation Name" and len(body["id"]) == 36
    assert body["upload_status"] == {
        "success": [{"name": "manual.pdf"}, {"name": "boat.docx"}, {"name": "notes.txt"}],
        "failure": [],
    }
    info = await converse_wait(client, bearer, body["id"])
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
    r = await converse_ask(client, bearer, body["id"], ids["manual.pdf"], question)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["answer"] == "Eighteen months [1]."
    assert len(answer["prompt_id"]) == 32 and int(answer["prompt_id"], 16) >= 0
    system = system_prompt(fakes)
    assert f"manual.pdf, page 2:\n{WARRANTY}" in system
    assert HERON not in system  # only the document asked about
    assert fakes[MODEL].requests[-1].messages[-1].content == question

    fakes[MODEL].enqueue(["Teal."])
    r = await converse_ask(
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
    conversation = await converse_new(client, bearer, MANUAL, NOTES)
    ids = doc_ids(await converse_wait(client, bearer, conversation))
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
    r = await converse_create(client, bearer, "short root", (NOTES,), prefix="/v2/conversations")
    assert r.status_code == 201
    conversation = r.json()["id"]
    info = await converse_wait(client, bearer, conversation)
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
    r = await client.post(f"{base}/documents", headers=bearer, files=file_parts(MANUAL))
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
    async with running_app(settings, fakes) as (client, headers, container):
        conversation = await converse_new(client, headers, NOTES)
        info = (await client.get(f"{API}/{conversation}", headers=headers)).json()
        assert info["state"] == "RUNNING"
        assert info["documents"][0]["state"] == "PROCESSING"
        notes = doc_ids(info)["notes.txt"]
        meta = (await client.get(f"{API}/{conversation}/documents/{notes}", headers=headers)).json()
        assert meta["metadata"] == []
        r = await converse_ask(client, headers, conversation, notes, "Revenue?")
        assert r.status_code == 422 and "Still processing notes.txt" in r.json()["message"]
        assert fakes[MODEL].requests == []

        container.worker.start()
        broken = ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nthis is not a pdf", PDF)
        failing = await converse_new(client, headers, broken)
        info = await converse_wait(client, headers, failing)
        assert info["state"] == "FAILED"
        assert info["documents"][0]["state"] == "FAILED"
        r = await converse_ask(client, headers, failing, doc_ids(info)["broken.pdf"], "Anything?")
        assert r.status_code == 422 and "broken.pdf" in r.json()["message"]
        info = await converse_wait(client, headers, conversation)
        assert info["state"] == "COMPLETE"  # the worker caught up with the first one
        r = await client.post(
            f"{API}/{failing}/documents", headers=headers, files=file_parts(NOTES)
        )
        info = await converse_wait(client, headers, failing)
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
    conversation = await converse_new(client, bearer, NOTES, name="shared")
    notes = doc_ids(await converse_wait(client, bearer, conversation))["notes.txt"]
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
    r = await converse_create(client, bearer, files=(NOTES,), enable_object_detection="true")
    assert r.status_code == 422 and "enable_object_detection" in r.json()["message"]
    r = await converse_create(client, bearer, enable_object_detection="maybe")
    assert (
        r.status_code == 400 and "enable_object_detection must be a boolean" in r.json()["message"]
    )
    listed = (await client.get(API, headers=bearer)).json()["conversations"]
    assert listed == []
    r = await converse_create(client, bearer, "explicit false", enable_object_detection="False")
    assert r.status_code == 201


# ---- list, update, delete ----


async def test_list_sorts_searches_and_pages(client, bearer):
    alpha = await converse_new(client, bearer, name="alpha report")
    beta = await converse_new(client, bearer, name="beta")
    gamma = await converse_new(client, bearer, name="gamma report")
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
    mine = await converse_new(client, member, name="mia's")
    admins = await converse_new(client, bearer, name="admin's")
    listed = (await client.get(API, headers=member)).json()["conversations"]
    assert [c["id"] for c in listed] == [mine]
    listed = (await client.get(API, headers=bearer)).json()["conversations"]
    assert {c["id"] for c in listed} == {mine, admins}
    assert (await client.get(f"{API}/{admins}", headers=member)).status_code == 404
    assert (await client.get(f"{API}/{mine}", headers=bearer)).status_code == 200
    r = await converse_create(client, member, "in my workspace", workspace=user["userId"])
    assert r.status_code == 201
    r = await converse_create(client, member, "in the admin's", workspace=str(uuid4()))
    assert r.status_code == 404 and "workspace" in r.json()["message"]


async def test_update_then_delete(client, bearer, fakes, container, me):
    conversation = await converse_new(client, bearer, NOTES)
    info = await converse_wait(client, bearer, conversation)
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
    r = await converse_ask(client, bearer, conversation, notes, "still there?")
    assert r.status_code == 404
    assert (await client.get(API, headers=bearer)).json()["conversations"] == []
    assert await stored(container, me, notes) is None  # its documents went with it
    assert fakes[MODEL].requests == []


async def stored(container: Container, me: dict[str, Any], document_id: int) -> Any:
    return await container.document_store.get_document(UUID(me["teamId"]), document_id)


# ---- add and delete documents ----


async def test_add_documents_reports_each_file(client, bearer):
    conversation = await converse_new(client, bearer, NOTES)
    r = await client.post(
        f"{API}/{conversation}/documents", headers=bearer, files=file_parts(MANUAL, NOTES)
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
        f"{API}/{conversation}/documents", headers=bearer, files=file_parts(binary, empty, NOTES)
    )
    assert r.status_code == 400
    failures = {f["name"]: f["reason"] for f in r.json()["upload_status"]["failure"]}
    assert r.json()["upload_status"]["success"] == []
    assert "unsupported file type" in failures["tool.exe"]
    assert "empty" in failures["empty.txt"]
    assert failures["notes.txt"] == "File already exists."
    r = await client.post(
        f"{API}/{conversation}/documents?process_files=true", headers=bearer, files=file_parts(BOAT)
    )
    assert r.status_code == 201
    info = await converse_wait(client, bearer, conversation)
    assert sorted(doc_ids(info)) == ["boat.docx", "manual.pdf", "notes.txt"]


async def test_add_documents_refusals(client, bearer):
    conversation = await converse_new(client, bearer)
    url = f"{API}/{conversation}/documents"
    r = await client.post(
        url, headers=bearer, data={"process_files": "false"}, files=file_parts(NOTES)
    )
    assert r.status_code == 422 and "process_files=false is not supported" in r.json()["message"]
    r = await client.post(url, headers=bearer, data={"process_files": "true"})
    assert r.status_code == 400 and "files is required" in r.json()["message"]
    r = await client.post(url, headers=bearer, json={"files": ["notes.txt"]})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["message"]
    r = await client.post(url, headers=bearer, data={"files": "notes.txt"})
    assert r.status_code == 400
    info = (await client.get(f"{API}/{conversation}", headers=bearer)).json()
    assert info["documents"] == []
    r = await client.post(f"{API}/{uuid4()}/documents", headers=bearer, files=file_parts(NOTES))
    assert r.status_code == 404


async def test_delete_documents_by_body_or_query(client, bearer, fakes, container, me):
    conversation = await converse_new(client, bearer, MANUAL, BOAT, NOTES)
    ids = doc_ids(await converse_wait(client, bearer, conversation))
    url = f"{API}/{conversation}/documents"

    r = await client.request(
        "DELETE", url, headers=bearer, json={"ids": [ids["boat.docx"], 999999]}
    )
    assert r.status_code == 404 and "999999" in r.json()["message"]
    assert (
        len((await converse_wait(client, bearer, conversation))["documents"]) == 3
    )  # none deleted
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
    info = await converse_wait(client, bearer, conversation)
    assert doc_ids(info) == {"manual.pdf": ids["manual.pdf"]}
    for gone in (ids["boat.docx"], ids["notes.txt"]):
        assert await stored(container, me, gone) is None  # deleted, not just unlinked
        assert (await client.get(f"{url}/{gone}", headers=bearer)).status_code == 404
        assert (await converse_ask(client, bearer, conversation, gone, "Teal?")).status_code == 404
    r = await client.delete(f"{url}?ids={ids['notes.txt']}", headers=bearer)
    assert r.status_code == 404
    # a deleted document's name can be uploaded again
    r = await client.post(url, headers=bearer, files=file_parts(NOTES))
    assert r.status_code == 201 and r.json()["upload_status"]["failure"] == []
    assert fakes[MODEL].requests == []


# ---- prompts: bad input and failures ----


async def test_prompt_refusals(client, bearer, fakes):
    conversation = await converse_new(client, bearer, NOTES, BOAT)
    ids = doc_ids(await converse_wait(client, bearer, conversation))
    other = await converse_new(client, bearer, MANUAL)
    elsewhere = doc_ids(await converse_wait(client, bearer, other))["manual.pdf"]
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
        r = await converse_ask(client, bearer, conversation, missing, "q")
        assert r.status_code == 404 and str(missing) in r.json()["message"]
    assert fakes[MODEL].requests == []


async def test_a_model_failure_is_an_error_with_its_status(client, bearer, fakes):
    conversation = await converse_new(client, bearer, NOTES)
    notes = doc_ids(await converse_wait(client, bearer, conversation))["notes.txt"]
    fakes[MODEL].enqueue(["Half an ans", ModelError("upstream said 500")])
    r = await converse_ask(client, bearer, conversation, notes, "Revenue?")
    assert r.status_code == 502
    assert set(r.json()) == {"message"} and "upstream said 500" in r.json()["message"]


async def test_the_conversation_model_history_and_record(client, bearer, fakes, container):
    """Follow-up prompts carry the earlier exchange; each prompt is a CONVERSE record."""
    conversation = await converse_new(client, bearer, NOTES)
    notes = doc_ids(await converse_wait(client, bearer, conversation))["notes.txt"]
    fakes[MODEL].enqueue(["42 million euros."])
    first = (
        await converse_ask(client, bearer, conversation, notes, "What was the revenue?")
    ).json()
    fakes[MODEL].enqueue(["The Osprey division."])
    await converse_ask(client, bearer, conversation, notes, "Of which division?")
    sent = [(m.role, m.content) for m in fakes[MODEL].requests[-1].messages[1:]]
    assert sent == [
        ("user", "What was the revenue?"),
        ("assistant", "42 million euros."),
        ("user", "Of which division?"),
    ]
    me = (await client.get("/api/me", headers=bearer)).json()["user"]
    assert me["usedCredit"] > 0  # prompts are charged like any reply
    assert len(first["prompt_id"]) == 32
