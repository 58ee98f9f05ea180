"""Documents through the 1min.ai dialect (000_*, 001_*, 002_*): the Asset API, CHAT_WITH_PDF
conversations with fileList, `attachments.files` in chat-with-ai, CHAT_WITH_PDF in
/api/features; citations in the aiRecord and the streamed `result` event; org isolation.
Real files, the real sandboxed parser, the real job worker; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json

from reportlab.pdfgen import canvas

from tests.helpers import key_only, until_done
from threadline.domain.events import Usage

CHAT = "/api/chat-with-ai"
PAGES = [
    "Threadline onboarding guide. Welcome to the team.",
    "The office parrot is named Captain Nibbles and he speaks Portuguese.",
    "Expense reports are due on the fifth working day of each month.",
]


def make_pdf(pages: list[str]) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer)
    for text in pages:
        pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


async def upload(client, headers, name="guide.pdf", data=None, content_type="application/pdf"):
    files = {"asset": (name, data if data is not None else make_pdf(PAGES), content_type)}
    return await client.post("/api/assets", headers=key_only(headers), files=files)


async def pdf_conversation(client, admin) -> tuple[str, str]:
    r = await upload(client, admin)
    assert r.status_code == 200, r.text
    asset_id = r.json()["asset"]["uuid"]
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={
            "title": "Guide",
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "fileList": [asset_id],
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["conversation"]["uuid"], asset_id


async def test_asset_upload_is_ingested_and_can_be_fetched_and_deleted(client, admin):
    r = await upload(client, admin)
    assert r.status_code == 200, r.text
    body = r.json()
    asset = body["asset"]
    assert asset["name"] == "guide.pdf"
    assert asset["mimeType"] == "application/pdf"
    assert asset["status"] in ("RUNNING", "COMPLETE")
    assert body["fileContent"]["uuid"] == asset["uuid"]
    assert body["fileContent"]["key"].startswith("files/")
    done = await until_done(client, admin, asset["uuid"])
    assert done["status"] == "COMPLETE", done
    assert done["pageCount"] == 3
    assert done["fileCharacter"] >= sum(len(p) for p in PAGES) - 10
    # by key as well as by id
    r = await client.get(f"/api/assets/{asset['key']}", headers=key_only(admin))
    assert r.json()["asset"]["uuid"] == asset["uuid"]
    r = await client.delete(f"/api/assets/{asset['uuid']}", headers=key_only(admin))
    assert r.json() == {"success": True, "uuid": asset["uuid"]}
    r = await client.get(f"/api/assets/{asset['uuid']}", headers=key_only(admin))
    assert r.status_code == 404


async def test_refused_uploads_say_why_and_leave_nothing(client, admin, settings):
    r = await upload(client, admin, name="run.exe", data=b"MZ\x90\x00binary", content_type="x")
    assert r.status_code == 422
    assert "unsupported file type" in r.json()["error"]["message"]
    r = await upload(client, admin, name="empty.txt", data=b"", content_type="text/plain")
    assert r.status_code == 422
    r = await client.post("/api/assets", headers=key_only(admin), data={"x": "y"})
    assert r.status_code == 400
    assert "asset" in r.json()["error"]["message"]
    blobs = settings.data_dir / "blobs"
    stored = [p for p in blobs.rglob("*") if p.is_file()] if blobs.exists() else []
    assert stored == []


async def test_a_file_over_the_size_limit_is_413(client, admin, container):
    container.documents.limits = type(container.documents.limits)(
        max_file_bytes=1000, max_documents_per_conversation=100, supported="text"
    )
    r = await upload(client, admin, name="big.txt", data=b"a " * 1000, content_type="text/plain")
    assert r.status_code == 413
    assert "larger than" in r.json()["error"]["message"]


async def test_a_path_traversal_filename_never_becomes_a_path(client, admin, settings):
    r = await upload(
        client, admin, name="../../etc/evil.txt", data=b"harmless words", content_type="text/plain"
    )
    assert r.status_code == 200, r.text
    asset = r.json()["asset"]
    assert asset["name"] == "evil.txt"
    assert ".." not in asset["key"]
    assert not (settings.data_dir.parent / "etc").exists()
    stored = [p for p in (settings.data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(stored) == 1 and "evil" not in stored[0].name


async def test_chat_with_pdf_conversation_answers_from_the_document_with_citations(
    client, admin, fakes
):
    conversation_id, asset_id = await pdf_conversation(client, admin)
    await until_done(client, admin, asset_id)
    r = await client.get(f"/api/conversations/{conversation_id}", headers=admin)
    conversation = r.json()["conversation"]
    assert conversation["conversationFile"][0]["fileId"] == asset_id
    assert conversation["conversationFile"][0]["conversationId"] == conversation_id
    assert conversation["metadata"]["fileCharacter"] > 100
    assert conversation["metadata"]["fileToken"] > 20

    fakes["gpt-4o-mini"].enqueue(["His name is Captain Nibbles [1].", Usage(50, 8)])
    r = await client.post(
        CHAT,
        headers=admin,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {
                "prompt": "What is the parrot called?",
                "conversationId": conversation_id,
            },
        },
    )
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    citations = record["aiRecordDetail"]["citations"]
    assert any(c["page"] == 2 and "Captain Nibbles" in c["excerpt"] for c in citations)
    assert citations[0]["title"] == "guide.pdf"
    system = fakes["gpt-4o-mini"].requests[-1].messages[0]
    assert system.role == "system" and "Captain Nibbles" in system.content


async def test_attachments_files_ground_a_streamed_reply_and_the_result_event_cites(
    client, admin, fakes
):
    r = await upload(client, admin)
    asset = r.json()["asset"]
    fakes["gpt-4o-mini"].enqueue(["By the fifth working day.", Usage(40, 6)])
    r = await client.post(
        f"{CHAT}?isStreaming=true",
        headers=admin,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {
                "prompt": "When are expense reports due?",
                "attachments": {"files": [asset["key"]]},
            },
        },
    )
    assert r.status_code == 200, r.text
    events = []
    for block in r.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    assert [e for e, _ in events] == ["content", "result", "done"]
    citations = events[1][1]["aiRecord"]["aiRecordDetail"]["citations"]
    assert any(c["page"] == 3 and "fifth working day" in c["excerpt"] for c in citations)


async def test_features_chat_with_pdf_uses_the_conversation_documents(client, admin, fakes):
    conversation_id, _ = await pdf_conversation(client, admin)
    fakes["gpt-4o-mini"].enqueue(["Portuguese.", Usage(30, 2)])
    r = await client.post(
        "/api/features",
        headers=admin,
        json={
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "conversationId": conversation_id,
            "promptObject": {"prompt": "Which language does the parrot speak?"},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["aiRecord"]["aiRecordDetail"]["resultObject"] == ["Portuguese."]
    assert "Portuguese" in fakes["gpt-4o-mini"].requests[-1].messages[0].content
    r = await client.post(
        "/api/features",
        headers=admin,
        json={
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "Which language?"},
        },
    )
    assert r.status_code == 400
    assert "conversationId" in r.json()["error"]["message"]


async def test_a_failed_document_is_an_error_that_says_why(client, admin):
    r = await upload(client, admin, name="broken.pdf", data=b"%PDF-1.7\n garbage \n%%EOF")
    asset = r.json()["asset"]
    done = await until_done(client, admin, asset["uuid"])
    assert done["status"] == "FAILED" and done["reason"]
    r = await client.post(
        CHAT,
        headers=admin,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "Summarise", "attachments": {"files": [asset["uuid"]]}},
        },
    )
    assert r.status_code == 422
    assert "broken.pdf" in r.json()["error"]["message"]


async def test_unknown_file_ids_are_422_and_create_nothing(client, admin):
    r = await client.post(
        "/api/conversations",
        headers=admin,
        json={
            "title": "x",
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "fileList": ["20ad0277-74df-4629-8c50-56a2549acbd7"],
        },
    )
    assert r.status_code == 422
    assert "20ad0277-74df-4629-8c50-56a2549acbd7" in r.json()["error"]["message"]
    r = await client.get("/api/conversations", headers=admin)
    assert r.json()["total"] == 0


async def test_another_orgs_assets_are_not_found_anywhere(client, admin, fakes):
    conversation_id, asset_id = await pdf_conversation(client, admin)
    await until_done(client, admin, asset_id)
    r = await client.post("/api/admin/orgs", headers=admin, json={"name": "rival"})
    eve = {"API-KEY": r.json()["apiKey"]["key"], "Content-Type": "application/json"}
    assert (await client.get(f"/api/assets/{asset_id}", headers=key_only(eve))).status_code == 404
    r = await client.delete(f"/api/assets/{asset_id}", headers=key_only(eve))
    assert r.status_code == 404
    r = await client.post(
        "/api/conversations",
        headers=eve,
        json={
            "title": "steal",
            "type": "CHAT_WITH_PDF",
            "model": "gpt-4o-mini",
            "fileList": [asset_id],
        },
    )
    assert r.status_code == 422
    r = await client.post(
        CHAT,
        headers=eve,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "parrot?", "attachments": {"files": [asset_id]}},
        },
    )
    assert r.status_code == 422
    r = await client.post(
        CHAT,
        headers=eve,
        json={
            "type": "UNIFY_CHAT_WITH_AI",
            "model": "gpt-4o-mini",
            "promptObject": {"prompt": "parrot?", "conversationId": conversation_id},
        },
    )
    assert r.status_code == 404


async def test_the_conversation_list_shows_each_ones_files_in_one_query(client, admin, container):
    from sqlalchemy import event

    async def text_asset(headers, name: str, text: str) -> str:
        r = await upload(client, headers, name=name, data=text.encode(), content_type="text/plain")
        assert r.status_code == 200, r.text
        asset_id = str(r.json()["asset"]["uuid"])
        assert (await until_done(client, headers, asset_id))["status"] == "COMPLETE"
        return asset_id

    async def conversation(headers, title: str, files: list[str]) -> str:
        kind = "CHAT_WITH_PDF" if files else "CHAT_WITH_AI"
        body = {"title": title, "type": kind, "model": "gpt-4o-mini", "fileList": files}
        r = await client.post("/api/conversations", headers=headers, json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["conversation"]["uuid"])

    parrot = await text_asset(admin, "parrot.txt", "The office parrot speaks Portuguese.")
    expenses = await text_asset(admin, "expenses.txt", "Expense reports are due on day five.")
    r = await client.post("/api/admin/orgs", headers=admin, json={"name": "rival"})
    eve = {"API-KEY": r.json()["apiKey"]["key"], "Content-Type": "application/json"}
    secret = await text_asset(eve, "secret.txt", "The rival's secret plan.")
    both = await conversation(admin, "both", [parrot, expenses])
    one = await conversation(admin, "one", [expenses])
    none = await conversation(admin, "none", [])
    theirs = await conversation(eve, "theirs", [secret])

    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    engine = container.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        listed = (await client.get("/api/conversations", headers=admin)).json()
        short = (await client.get("/api/conversations?limit=1", headers=admin)).json()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    link_queries = [s for s in statements if "conversation_documents" in s]
    assert len(link_queries) == 2  # one per listing, whatever its length (3, then 1)

    by_id = {c["uuid"]: c for c in listed["conversations"]}
    assert list(by_id) == [none, one, both]  # newest first; never the rival's
    assert [f["fileName"] for f in by_id[both]["conversationFile"]] == [
        "parrot.txt",
        "expenses.txt",
    ]
    assert by_id[none]["conversationFile"] == []
    assert by_id[none]["metadata"] == {"fileToken": 0, "fileCharacter": 0}
    assert by_id[both]["metadata"]["fileCharacter"] == len(
        "The office parrot speaks Portuguese.Expense reports are due on day five."
    )
    for cid, listed_one in by_id.items():
        alone = (await client.get(f"/api/conversations/{cid}", headers=admin)).json()
        for field in ("conversationFile", "metadata", "title", "updatedAt"):
            assert listed_one[field] == alone["conversation"][field]
    assert [c["uuid"] for c in short["conversations"]] == [none]

    [rival] = (await client.get("/api/conversations", headers=eve)).json()["conversations"]
    assert rival["uuid"] == theirs
    assert [f["fileName"] for f in rival["conversationFile"]] == ["secret.txt"]
    assert secret not in {
        f["fileId"] for c in listed["conversations"] for f in c["conversationFile"]
    }
