"""A page of an uploaded PDF as a PNG image (`GET /api/assets/{id}/pages/{n}.png`): what a
citation chip opens to show the page a reply cited.

The asset is looked up as every asset route does (the caller's org; a member's own uploads,
an admin's org's), so another org's document is "not found". A page is rendered once, by
the renderer (a limited child process: the PDF is untrusted), and kept under
`<data_dir>/page-images/<org>/<asset>/<n>-<width>.png`; later requests read the file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

from threadline.domain.documents import DocumentState
from threadline.domain.entities import Principal
from threadline.domain.errors import NotFound, Unprocessable
from threadline.services.documents import DocumentService

PageRenderer = Callable[[Path, int, int], Awaitable[bytes]]
PAGE_WIDTH = 1000  # pixels: readable on a laptop, a few hundred KB a page
RENDERS_AT_ONCE = 2


class PageImages:
    def __init__(self, documents: DocumentService, renderer: PageRenderer, cache: Path) -> None:
        self._documents = documents
        self._render = renderer
        self._cache = cache
        self._slots = asyncio.Semaphore(RENDERS_AT_ONCE)

    async def page_png(self, caller: Principal, id_or_key: str, page: int) -> Path:
        """The path of the PNG of page `page` (from 1) of a PDF asset the caller may see."""
        asset, document = await self._documents.get_asset(caller, id_or_key)
        if document.mime_type != "application/pdf" and asset.mime_type != "application/pdf":
            raise Unprocessable(f"asset {id_or_key} is not a PDF: only PDF pages are images")
        if document.state is not DocumentState.COMPLETE:
            raise Unprocessable(
                f"asset {id_or_key} is {document.state.value}: its pages are images once "
                "it is COMPLETE"
            )
        if not 1 <= page <= document.page_count:
            raise NotFound(f"page {page} not found: the document has {document.page_count}")
        target = self._cache / str(asset.org_id) / str(asset.id) / f"{page}-{PAGE_WIDTH}.png"
        if await asyncio.to_thread(target.is_file):
            return target
        async with self._slots:
            if not await asyncio.to_thread(target.is_file):  # rendered while this waited
                _, source = await self._documents.asset_file(caller, id_or_key)
                try:  # a local copy of the blob (a temporary file for the database store)
                    png = await self._render(source.path, page, PAGE_WIDTH)
                finally:
                    await asyncio.to_thread(source.release)
                await asyncio.to_thread(_write_atomically, target, png)
        return target

    async def forget(self, org_id: UUID, asset_id: UUID) -> None:
        """Remove the cached pages of a deleted asset."""
        folder = self._cache / str(org_id) / str(asset_id)
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{uuid4().hex}.tmp")
    staged.write_bytes(data)
    os.replace(staged, target)
