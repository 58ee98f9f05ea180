"""Helpers the test modules share: settings, the scripted fake models, stream parsers, polling
and the CLI. Test modules import from here (and from the fake servers' modules), never from
each other or from conftest.py."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from sqlalchemy import Table, func, select

from threadline.container import Container, create_app
from threadline.domain.documents import Asset, Chunk, DocumentState
from threadline.domain.entities import AiRecord, Conversation, RecordStatus, Role
from threadline.providers.fake import FakeModel
from threadline.services.memories import REMEMBER_JOB
from threadline.settings import Credits, DocumentSettings, EmbeddingConfig, ModelConfig, Settings
from threadline.storage.accounts import SqlAccountStore
from threadline.storage.conversations import SqlConversationStore
from threadline.storage.database import Database, utcnow
from threadline.storage.documents import SqlDocumentStore

PRICED = Credits(input_per_1k=1000, output_per_1k=2000)  # 1 credit per input token, 2 per output


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    models = {
        "fake": ModelConfig(provider="fake"),
        "gpt-4o-mini": ModelConfig(provider="fake", credits=PRICED),
        "other-model": ModelConfig(provider="fake"),
    }
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "models": models,
        "default_model": "gpt-4o-mini",
        "rate_limit_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(**values)


class Fakes(dict[str, FakeModel]):
    """One FakeModel per model name, made on first use."""

    def factory(self, name: str, config: ModelConfig) -> FakeModel:
        return self.setdefault(name, FakeModel(name, config))

    def __missing__(self, name: str) -> FakeModel:
        return self.setdefault(name, FakeModel(name))


# ---- requests and streams -------------------------------------------------------------

CHAT = "/api/chat-with-ai"
HELLO = {"model": "gpt-4o-mini", "promptObject": {"prompt": "Hello"}}
MEMORIES = "/api/memories"


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """A whole SSE body as (event, JSON data) pairs; comments (heartbeats) skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            events.append((fields["event"], json.loads(fields["data"])))
    return events


Frame = dict[str, Any]


def frames_of(lines: Iterator[str]) -> Iterator[Frame]:
    """A plain SSE parser over lines as they arrive: `id`, `event`, `data` fields."""
    frame: Frame = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value[1:] if value.startswith(" ") else value
    if frame:
        yield frame


def content(frames: list[Frame]) -> str:
    """The text of a 1min.ai stream's `content` frames."""
    return "".join(json.loads(f["data"])["content"] for f in frames if f["event"] == "content")


def names(frames: list[Frame]) -> list[str]:
    return [f["event"] for f in frames]


def key_only(headers: dict[str, str]) -> dict[str, str]:
    return {"API-KEY": headers["API-KEY"]}


def memory_chat(
    prompt: str, conversation_id: str | None = None, *, memories: bool = True
) -> dict[str, Any]:
    """The spec's "Chat with Conversation History" request, with `withMemories`."""
    prompt_object: dict[str, Any] = {
        "prompt": prompt,
        "settings": {
            "historySettings": {"isMixed": False, "historyMessageLimit": 10},
            "withMemories": memories,
        },
    }
    if conversation_id is not None:
        prompt_object["conversationId"] = conversation_id
    return {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini", "promptObject": prompt_object}


async def listed(client: httpx.AsyncClient, headers: dict[str, str], query: str = "") -> Any:
    r = await client.get(MEMORIES + query, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def contents(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    return [m["content"] for m in (await listed(client, headers, "?limit=100"))["memories"]]


# ---- waiting for the app's background work, and what it stored ---------------------------


async def until_done(client: httpx.AsyncClient, headers: dict[str, str], asset_id: str) -> Any:
    """Poll a 1min.ai asset until its ingestion is no longer RUNNING."""
    for _ in range(600):
        r = await client.get(f"/api/assets/{asset_id}", headers=key_only(headers))
        assert r.status_code == 200, r.text
        asset = r.json()["asset"]
        if asset["status"] != "RUNNING":
            return asset
        await asyncio.sleep(0.05)
    raise AssertionError("ingestion did not finish in 30 s")


async def wait_state(
    container: Container, caller: Any, document_id: Any, seconds: float = 30.0
) -> Any:
    """Poll a document until it is no longer RUNNING."""
    for _ in range(int(seconds / 0.05)):
        document = await container.documents.get_document(caller, document_id)
        if document.state is not DocumentState.RUNNING:
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"document {document_id} still RUNNING after {seconds} s")


async def settle(container: Container) -> None:
    """Wait until every reply is stored and every `remember` job has run."""
    await container.runs.drain(10)
    for _ in range(500):
        if not await container.job_queue.active(REMEMBER_JOB):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("remember jobs did not finish in 10 s")


async def first_admin(container: Container) -> Any:
    """Whom the CLI acts as (the system org's first admin)."""
    return await container.accounts.operator()


async def count(source: Container | Database, table: Table, *where: Any) -> int:
    """Rows of `table` (matching `where`) as stored, through a container or a database."""
    db = source.db if isinstance(source, Container) else source
    async with db.read() as conn:
        query = select(func.count()).select_from(table)
        if where:
            query = query.where(*where)
        return int((await conn.execute(query)).scalar_one())


# ---- processes ----------------------------------------------------------------------------

FAULT_CHILD = [sys.executable, str(Path(__file__).with_name("parse_fault_child.py"))]


def gone(pid: int) -> bool:
    """Dead and reaped, or a zombie waiting for init to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def threadline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the `threadline` CLI (this checkout's) with no THREADLINE_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "threadline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- AI Hub Converse (004_*) ------------------------------------------------------------

CONVERSE_API = "/api/v2/conversations"
MODEL = "gpt-4o-mini"
WARRANTY = "The Falcon X2 drone carries a warranty of eighteen months from delivery."
HERON = "The Heron sailing boat is painted teal; its warranty is two years."
REVENUE = "Quarterly revenue of the Osprey division was 42 million euros."
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
INGEST_SECONDS = 90.0
UploadFile = tuple[str, bytes, str]  # (name, bytes, content type)


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


@functools.cache
def converse_files() -> tuple[UploadFile, UploadFile, UploadFile]:
    """MANUAL (a two-page PDF, WARRANTY on page 2), BOAT (a DOCX saying HERON), NOTES (a text
    file saying REVENUE): made once per process, on first use."""
    manual = ("manual.pdf", pdf_bytes(["Falcon X2 user manual: introduction.", WARRANTY]), PDF)
    boat = ("boat.docx", docx_bytes(["Heron brochure", HERON]), DOCX)
    notes = ("notes.txt", REVENUE.encode(), "text/plain")
    return manual, boat, notes


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


def file_parts(*files: UploadFile) -> list[tuple[str, UploadFile]]:
    return [("files", f) for f in files]


async def converse_create(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str = "Sample Conversation Name",
    files: tuple[UploadFile, ...] = (),
    prefix: str = CONVERSE_API,
    **fields: str,
) -> httpx.Response:
    data = {"name": name, "description": "Sample Conversation Description", **fields}
    return await client.post(prefix, headers=headers, data=data, files=file_parts(*files) or None)


async def converse_new(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *files: UploadFile,
    name: str = "Sample Conversation Name",
) -> str:
    r = await converse_create(client, headers, name, files)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def converse_wait(
    client: httpx.AsyncClient, headers: dict[str, str], conversation: str
) -> dict[str, Any]:
    """Poll the conversation information until no document is processing."""
    deadline = time.monotonic() + INGEST_SECONDS
    while True:
        r = await client.get(f"{CONVERSE_API}/{conversation}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["state"] != "RUNNING" or time.monotonic() > deadline:
            return dict(r.json())
        await asyncio.sleep(0.05)


def doc_ids(info: dict[str, Any]) -> dict[str, int]:
    return {d["name"]: d["id"] for d in info["documents"]}


async def converse_ask(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    conversation: str,
    document_id: int,
    question: str,
    mode: str = "default",
) -> httpx.Response:
    body = {"question": question, "document_ids": [document_id], "mode": mode}
    return await client.post(f"{CONVERSE_API}/{conversation}/prompts", headers=headers, json=body)


def system_prompt(fakes: Fakes) -> str:
    """The system prompt of the last request MODEL received."""
    messages = fakes[MODEL].requests[-1].messages
    assert messages[0].role == "system"
    return messages[0].content


@asynccontextmanager
async def running_app(
    settings: Settings, fakes: Fakes | None
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Container]]:
    """An app of the test's own settings, with its lifespan: an in-process client, the
    bootstrap admin's Bearer headers and the container. `fakes` None: the providers'
    own models (e.g. openai-compatible ones on fake upstreams)."""
    app = create_app(settings, model_factory=fakes.factory if fakes is not None else None)
    async with app.router.lifespan_context(app):
        container = app.state.container
        issued = await container.bootstrap()
        assert issued is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
            yield c, {"Authorization": f"Bearer {issued.secret}"}, container


# ---- storage: tenants on a bare database ------------------------------------------------


class Tenant:
    """An org with an admin user on a bare `Database`, and its document store."""

    def __init__(self, db: Database, org_id: UUID, user_id: UUID) -> None:
        self.db = db
        self.org = org_id
        self.user = user_id
        self.store = SqlDocumentStore(db)

    async def asset(self, key: str | None = None, name: str = "report.pdf") -> Asset:
        asset = Asset(
            id=uuid4(),
            org_id=self.org,
            user_id=self.user,
            key=key or f"files/{uuid4().hex}_{name}",
            name=name,
            mime_type="application/pdf",
            size=1234,
            sha256="0" * 64,
            blob_path=f"blobs/{uuid4().hex}",
            created_at=utcnow(),
        )
        return await self.store.add_asset(asset)

    async def document(self, name: str = "report.pdf") -> int:
        return (await self.store.create_document(await self.asset(name=name))).id

    async def conversation(self) -> UUID:
        now = utcnow()
        conversation = Conversation(
            id=uuid4(),
            org_id=self.org,
            user_id=self.user,
            title="t",
            type="CHAT",
            model=None,
            status="ACTIVE",
            is_archived=False,
            created_at=now,
            updated_at=now,
        )
        await SqlConversationStore(self.db).create(conversation)
        return conversation.id


async def make_tenant(db: Database, name: str) -> Tenant:
    accounts = SqlAccountStore(db)
    org = await accounts.create_org(name)
    user = await accounts.create_user(org.id, "u", Role.ADMIN, 0, "test")
    return Tenant(db, org.id, user.id)


def texts_as_chunks(document_id: int, texts: list[str]) -> list[Chunk]:
    return [Chunk(document_id, i, i, i, t) for i, t in enumerate(texts)]


def pending_record(org_id: UUID, user_id: UUID, prompt: str = "Go") -> AiRecord:
    """A PENDING 1min.ai chat record of `user_id`, as a run's start stores it (not stored)."""
    now = utcnow()
    return AiRecord(
        id=uuid4(),
        org_id=org_id,
        user_id=user_id,
        conversation_id=None,
        model="gpt-4o-mini",
        type="UNIFY_CHAT_WITH_AI",
        status=RecordStatus.PENDING,
        prompt_object={"prompt": prompt},
        result_text="",
        created_at=now,
        updated_at=now,
    )
