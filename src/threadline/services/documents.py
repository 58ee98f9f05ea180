"""Document use cases shared by every dialect: upload, attach to conversations, look up.

An upload is checked completely (size, type, the conversation's limits) before anything is
stored; a refused file leaves no asset, document, blob or job behind. An accepted file
becomes an asset, a RUNNING document and an `ingest` job in that order; the job (see
`services/ingestion.py`) moves the document to COMPLETE or FAILED.

An uploaded image is an asset like any file, under `images/` (its OCR text is its document's,
which chat images read). A generated image (IMAGE_GENERATOR, IMAGE_VARIATOR) is stored as an
asset too (`store_image`), under `images/` with random digits for a name, and a document that
is COMPLETE at once (one image page, no text): it is not ingested, there is nothing to read.
`_asset_key` makes both kinds of key.

Visibility follows conversations: admins see every asset of their org, members their own;
anything else is "not found".
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from uuid import UUID, uuid4

from threadline.domain.clock import utcnow
from threadline.domain.documents import (
    Asset,
    BlobStore,
    ConversationDocument,
    Document,
    DocumentState,
    DocumentStore,
    JobQueue,
    LocalCopy,
    PageLayout,
)
from threadline.domain.entities import Page, Principal
from threadline.domain.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ThreadlineError,
    Unprocessable,
)
from threadline.domain.image_generation import EXTENSIONS, GeneratedImage
from threadline.services.conversations import ConversationService

INGEST_JOB = "ingest"
COPY_BLOCK = 1024 * 1024

# (path, client filename, declared MIME type) -> canonical MIME type, or None if unsupported
TypeDetector = Callable[[Path, str, str | None], str | None]


GENERATED_NOT_READ = "a generated image: its text is not read (OCR reads uploaded files)"


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_file_bytes: int
    max_documents_per_conversation: int
    supported: str  # human list of supported types, for error messages
    job_max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class Upload:
    """One file of a request: the client's name (data only), its declared type, its bytes."""

    name: str
    declared_type: str | None
    file: BinaryIO


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    name: str
    document: Document | None = None
    asset: Asset | None = None
    reason: str | None = None
    status: int = 201


class _Refused(Exception):
    def __init__(self, error: ThreadlineError) -> None:
        self.error = error


class DocumentService:
    def __init__(
        self,
        store: DocumentStore,
        blobs: BlobStore,
        jobs: JobQueue,
        conversations: ConversationService,
        detect: TypeDetector,
        limits: DocumentLimits,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._jobs = jobs
        self._conversations = conversations
        self._detect = detect
        self.limits = limits
        self._on_enqueued = on_enqueued

    # ---- uploads ------------------------------------------------------------------

    async def upload(self, caller: Principal, upload: Upload) -> tuple[Asset, Document]:
        """One file, outside any conversation (the Asset API). Errors are raised."""
        outcome = (await self.add(caller, [upload]))[0]
        if outcome.reason is not None:
            raise _error_for(outcome)
        assert outcome.asset is not None and outcome.document is not None
        return outcome.asset, outcome.document

    async def add(
        self,
        caller: Principal,
        uploads: Sequence[Upload],
        *,
        conversation_id: UUID | None = None,
    ) -> list[UploadOutcome]:
        """Store each file that passes the checks (and attach it to the conversation);
        report the others with a reason. Files are independent of each other."""
        existing: list[ConversationDocument] = []
        if conversation_id is not None:
            existing = await self.conversation_documents(caller, conversation_id)
        names = {link.document.name for link in existing}
        count = len(existing)
        outcomes = []
        for upload in uploads:
            outcome = await self._add_one(caller, upload, names, count, conversation_id)
            if outcome.document is not None:
                names.add(upload.name)
                count += 1
            outcomes.append(outcome)
        return outcomes

    async def _add_one(
        self,
        caller: Principal,
        upload: Upload,
        names: set[str],
        count: int,
        conversation_id: UUID | None,
    ) -> UploadOutcome:
        name = _display_name(upload.name)
        if conversation_id is not None:
            if name in names:
                return UploadOutcome(name, reason="File already exists.", status=409)
            if count >= self.limits.max_documents_per_conversation:
                return UploadOutcome(
                    name,
                    reason=f"The conversation already has {count} documents; the limit is "
                    f"{self.limits.max_documents_per_conversation}.",
                    status=422,
                )
        staged = self._blobs.staging_path()
        try:
            asset = await self._stage(caller, upload, name, staged)
        except _Refused as refused:
            return UploadOutcome(name, reason=refused.error.message, status=refused.error.status)
        finally:
            staged.unlink(missing_ok=True)
        document = await self._register(caller, asset, conversation_id)
        return UploadOutcome(name, document=document, asset=asset)

    async def _stage(self, caller: Principal, upload: Upload, name: str, staged: Path) -> Asset:
        size, digest = await asyncio.to_thread(
            _copy_capped, upload.file, staged, self.limits.max_file_bytes
        )
        if size > self.limits.max_file_bytes:
            raise _Refused(
                PayloadTooLarge(
                    f"{name} is larger than the limit of {_size(self.limits.max_file_bytes)}"
                )
            )
        if size == 0:
            raise _Refused(Unprocessable(f"{name} is empty"))
        mime = await asyncio.to_thread(self._detect, staged, name, upload.declared_type)
        if mime is None:
            raise _Refused(
                Unprocessable(f"{name}: unsupported file type; supported: {self.limits.supported}")
            )
        now = utcnow()
        blob_path = await self._blobs.keep(caller.org_id, staged)
        return Asset(
            id=uuid4(),
            org_id=caller.org_id,
            user_id=caller.user.id,
            key=_asset_key(now, mime, name),
            name=name,
            mime_type=mime,
            size=size,
            sha256=digest,
            blob_path=blob_path,
            created_at=now,
        )

    async def _register(
        self, caller: Principal, asset: Asset, conversation_id: UUID | None
    ) -> Document:
        try:
            asset = await self._store.add_asset(asset)
            document = await self._store.create_document(asset)
            if conversation_id is not None:
                await self._store.link(
                    caller.org_id, conversation_id, [document.id], caller.user.name
                )
            await self._jobs.enqueue(
                INGEST_JOB,
                {"document_id": document.id},
                org_id=caller.org_id,
                max_attempts=self.limits.job_max_attempts,
            )
        except BaseException:
            await self.discard(caller, asset)
            raise
        if self._on_enqueued is not None:
            self._on_enqueued()
        return document

    # ---- assets -------------------------------------------------------------------

    async def get_asset(self, caller: Principal, id_or_key: str) -> tuple[Asset, Document]:
        asset = await self._store.find_asset(caller.org_id, id_or_key)
        if asset is None or not _visible(caller, asset.user_id):
            raise NotFound(f"asset {id_or_key} not found")
        document = await self._store.document_for_asset(caller.org_id, asset.id)
        if document is None:  # created together; absent only mid-deletion
            raise NotFound(f"asset {id_or_key} not found")
        return asset, document

    async def list_assets(
        self, caller: Principal, *, limit: int, offset: int, page_max: int
    ) -> Page:
        """The caller's own assets (admins too: theirs, not the team's), newest first; each
        item an (asset, document) pair."""
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1 (got {limit})")
        if offset < 0:
            raise InvalidRequest(f"offset must not be negative (got {offset})")
        limit = min(limit, page_max)
        items, total = await self._store.list_assets(
            caller.org_id, caller.user.id, limit=limit, offset=offset
        )
        return Page(items=list(items), total=total, limit=limit, offset=offset)

    async def asset_bytes(self, asset: Asset) -> bytes:
        """The stored bytes of an asset the caller may see (one `get_asset` answered); an
        asset deleted meanwhile is not found."""
        try:
            copy = await self._blobs.fetch(asset.blob_path)
        except FileNotFoundError:
            raise NotFound(f"asset {asset.key} not found") from None
        try:
            return await asyncio.to_thread(copy.path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"asset {asset.key} not found") from None
        finally:
            copy.release()

    async def asset_file(self, caller: Principal, id_or_key: str) -> tuple[Asset, LocalCopy]:
        """An asset and a local copy of its bytes (to download it; release it after)."""
        asset, _ = await self.get_asset(caller, id_or_key)
        try:
            return asset, await self._blobs.fetch(asset.blob_path)
        except FileNotFoundError:  # deleted meanwhile
            raise NotFound(f"asset {id_or_key} not found") from None

    async def store_image(self, caller: Principal, image: GeneratedImage) -> Asset:
        """A generated image as a new asset of the caller, with a COMPLETE document."""
        now = utcnow()
        staged = self._blobs.staging_path()
        try:
            await asyncio.to_thread(staged.write_bytes, image.data)
            blob_path = await self._blobs.keep(caller.org_id, staged)
        finally:
            staged.unlink(missing_ok=True)
        key = _asset_key(now, image.mime_type)
        asset = Asset(
            id=uuid4(),
            org_id=caller.org_id,
            user_id=caller.user.id,
            key=key,
            name=key.rsplit("/", 1)[-1],
            mime_type=image.mime_type,
            size=len(image.data),
            sha256=hashlib.sha256(image.data).hexdigest(),
            blob_path=blob_path,
            created_at=now,
        )
        try:
            await self._store.add_asset(asset)
            document = await self._store.create_document(asset)
            page = PageLayout(0, image.width, image.height, is_image_page=True)
            await self._store.finish_document(
                caller.org_id,
                document.id,
                state=DocumentState.COMPLETE,
                reason=GENERATED_NOT_READ,
                pages=[page],
            )
        except BaseException:
            await self.discard(caller, asset)
            raise
        return asset

    async def discard(self, caller: Principal, asset: Asset) -> None:
        """Remove an asset and its blob (its document goes with it)."""
        await self._store.delete_asset(caller.org_id, asset.id)
        await self._blobs.delete(asset.blob_path)

    async def delete_asset(self, caller: Principal, id_or_key: str) -> Asset:
        asset, _ = await self.get_asset(caller, id_or_key)
        await self.discard(caller, asset)
        return asset

    async def documents_for_files(
        self, caller: Principal, file_ids: Sequence[str]
    ) -> list[Document]:
        """Asset ids or keys (1min.ai's fileList / attachments.files) to documents; unknown
        ones are named in one 422."""
        found, missing = [], []
        for file_id in dict.fromkeys(file_ids):
            try:
                found.append((await self.get_asset(caller, file_id))[1])
            except NotFound:
                missing.append(file_id)
        if missing:
            raise Unprocessable(
                f"Invalid file IDs: {', '.join(missing)} (no such asset in your team; "
                "upload files with POST /api/assets)"
            )
        return found

    # ---- documents and conversations ------------------------------------------------

    async def get_document(self, caller: Principal, document_id: int) -> Document:
        document = await self._store.get_document(caller.org_id, document_id)
        if document is None or not _visible(caller, document.user_id):
            raise NotFound(f"document {document_id} not found")
        return document

    async def attach(
        self, caller: Principal, conversation_id: UUID, documents: Sequence[Document]
    ) -> None:
        existing = await self.conversation_documents(caller, conversation_id)
        have = {link.document.id for link in existing}
        new = [d.id for d in documents if d.id not in have]
        total = len(have) + len(new)
        if total > self.limits.max_documents_per_conversation:
            raise Unprocessable(
                f"A conversation holds at most {self.limits.max_documents_per_conversation} "
                f"documents ({total} requested)"
            )
        if new:
            await self._store.link(caller.org_id, conversation_id, new, caller.user.name)

    async def detach(
        self, caller: Principal, conversation_id: UUID, document_ids: Sequence[int]
    ) -> None:
        existing = await self.conversation_documents(caller, conversation_id)
        have = {link.document.id for link in existing}
        unknown = [str(i) for i in document_ids if i not in have]
        if unknown:
            raise NotFound(f"document(s) {', '.join(unknown)} not in this conversation")
        await self._store.unlink(caller.org_id, conversation_id, document_ids)

    async def delete_documents(
        self,
        caller: Principal,
        conversation_id: UUID,
        document_ids: Sequence[int] | None = None,
    ) -> list[Document]:
        """Delete documents of a conversation outright (asset, bytes, chunks and links), as
        AI Hub Converse does; all of them when `document_ids` is None (the conversation is
        being deleted). An id not in the conversation is 404 and nothing is deleted."""
        existing = {
            link.document.id: link.document
            for link in await self.conversation_documents(caller, conversation_id)
        }
        ids = list(existing) if document_ids is None else list(dict.fromkeys(document_ids))
        unknown = [str(i) for i in ids if i not in existing]
        if unknown:
            raise NotFound(f"document(s) {', '.join(unknown)} not in this conversation")
        for document_id in ids:
            document = existing[document_id]
            asset = await self._store.get_asset(caller.org_id, document.asset_id)
            await self._store.delete_asset(caller.org_id, document.asset_id)
            if asset is not None:
                await self._blobs.delete(asset.blob_path)
        return [existing[i] for i in ids]

    async def delete_conversation(self, caller: Principal, conversation_id: UUID) -> None:
        """Delete the conversation with its documents outright (asset, chunks, links), its
        messages and itself in one transaction; the files' bytes after it commits."""
        links = await self.conversation_documents(caller, conversation_id)
        asset_ids = [link.document.asset_id for link in links]
        stored = [await self._store.get_asset(caller.org_id, i) for i in asset_ids]
        await self._store.delete_conversation(caller.org_id, conversation_id, asset_ids)
        for asset in stored:
            if asset is not None:
                await self._blobs.delete(asset.blob_path)

    async def conversation_documents(
        self, caller: Principal, conversation_id: UUID
    ) -> list[ConversationDocument]:
        owner = None if caller.is_admin else caller.user.id  # the visibility rule of get()
        links = await self._store.conversation_documents(
            caller.org_id, conversation_id, user_id=owner
        )
        if links is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return links

    async def documents_of_conversations(
        self, caller: Principal, conversation_ids: Sequence[UUID]
    ) -> dict[UUID, list[ConversationDocument]]:
        """The documents of each of a page of conversations, in one query (a listing costs
        the same whatever its length), with the visibility rule of `conversation_documents`:
        a conversation the caller may not see is not in the answer."""
        owner = None if caller.is_admin else caller.user.id
        return await self._store.documents_of_conversations(
            caller.org_id, conversation_ids, user_id=owner
        )

    async def wait_ready(
        self, caller: Principal, documents: Sequence[Document], wait_seconds: float
    ) -> list[Document]:
        """The documents once none is RUNNING any more (or as they are after `wait_seconds`)."""
        deadline = asyncio.get_running_loop().time() + wait_seconds
        current = list(documents)
        delay = 0.05
        while any(d.state is DocumentState.RUNNING for d in current):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            current = [await self.get_document(caller, d.id) for d in current]
        return current


def _copy_capped(source: BinaryIO, target: Path, cap: int) -> tuple[int, str]:
    """Copy at most cap + 1 bytes; returns (bytes copied, sha256)."""
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    with target.open("wb") as out:
        while size <= cap:
            block = source.read(min(COPY_BLOCK, cap + 1 - size))
            if not block:
                break
            out.write(block)
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _size(n: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}" if n % scale else f"{n // scale} {unit}"
    return f"{n} bytes"


def _display_name(name: str) -> str:
    """The client's filename as shown back to it: last path component, printable, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:200] or "file"


def _asset_key(now: datetime, mime_type: str, name: str | None = None) -> str:
    """A new asset's public key in 1min.ai's style: the folder (`images/` for an image,
    uploaded or generated; `files/` otherwise), the time to the millisecond, then an upload's
    name after 8 random hex digits (`files/2026_11_22_10_30_00_123_1a2b3c4d_notes.pdf`), or,
    for a generated image (no name), 9 random digits and its extension
    (`images/2026_12_01_09_30_00_123_123456789.webp`; the spec's example has 6 digits, 9 make
    a clash within a millisecond unlikely)."""
    stamp = now.strftime("%Y_%m_%d_%H_%M_%S_") + f"{now.microsecond // 1000:03d}"
    folder = "images" if mime_type.startswith("image/") else "files"
    if name is None:
        return f"{folder}/{stamp}_{secrets.randbelow(10**9):09d}.{EXTENSIONS[mime_type]}"
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:120]
    return f"{folder}/{stamp}_{uuid4().hex[:8]}_{safe}"


def _visible(caller: Principal, owner: UUID) -> bool:
    return caller.is_admin or owner == caller.user.id


def _error_for(outcome: UploadOutcome) -> ThreadlineError:
    message = outcome.reason or "upload refused"
    if outcome.status == 413:
        return PayloadTooLarge(message)
    return Unprocessable(message)
