"""Images out: IMAGE_GENERATOR and IMAGE_VARIATOR (1min.ai's AI Feature API), for every dialect.
(Images *in* a chat request are `services/images.py`'s.)

One request, in order; a refusal at any step leaves nothing behind:

    1. the model is an image model          422 naming the image-capable models
    2. the options fit it                   422 naming the field (n, aspect ratio)
    3. the source image (variator)          an asset of the caller's org (404 otherwise) or
                                            an http(s) URL read by the SSRF-safe image fetcher;
                                            its type read from the bytes (PNG, JPEG or WebP)
    4. `per_image` x n credits are reserved  403 before any model runs (services/credits.py)
    5. the aiRecord is written PENDING, the model runs, each image becomes an asset of the
       caller (`DocumentService.store_image`), and the record is finished SUCCESS with the
       asset keys as its result and the charge (the images made, at most the n reserved),
       its reservation settled, in one transaction (`RecordStore.finish`). A failure finishes
       it FAILED with the error, removes the images stored so far, charges nothing, releases
       the reservation, and is raised (ModelError 502, ModelTimeout 504).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

import structlog

from threadline.domain.clock import utcnow
from threadline.domain.documents import Asset
from threadline.domain.entities import AiRecord, Principal, RecordStatus, User
from threadline.domain.errors import (
    FetchFailed,
    FetchRefused,
    NotFound,
    ThreadlineError,
    Unprocessable,
)
from threadline.domain.fetching import PageFetcher
from threadline.domain.image_generation import (
    IMAGE_GENERATOR,
    IMAGE_VARIATOR,
    SOURCE_KINDS,
    SOURCE_TYPES,
    GeneratedImage,
    GenerationRequest,
    ImageFormat,
    VariationRequest,
)
from threadline.domain.images import ImageInspector
from threadline.domain.ports import RecordStore
from threadline.services.accounts import AccountService
from threadline.services.catalog import CatalogModel, ModelCatalog
from threadline.services.credits import CreditService
from threadline.services.documents import DocumentService

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ImageGenerationCommand:
    """One image request, dialect-free. `source` (variator only) is an asset id or key of the
    caller's org, or an http(s) URL. `prompt_object` is recorded as given."""

    principal: Principal
    feature: str  # IMAGE_GENERATOR | IMAGE_VARIATOR
    model: str
    n: int
    aspect_ratio: str  # "W:H"
    output_format: ImageFormat = "png"
    prompt: str = ""
    source: str = ""
    prompt_object: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    count_field: str = "n"  # how the request names n and the aspect ratio, for errors
    ratio_field: str = "aspect_ratio"
    size: str | None = None  # an upstream size asked for directly (OpenAI's `size`): wins


@dataclass(frozen=True, slots=True)
class ImageGenerationOutcome:
    record: AiRecord
    user: User  # as stored after the charge
    assets: list[Asset]
    images: list[GeneratedImage]
    provider: str  # the catalog's provider label


class ImageGenerationService:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        records: RecordStore,
        accounts: AccountService,
        credits: CreditService,
        documents: DocumentService,
        fetcher: PageFetcher,
        inspect: ImageInspector,
        max_source_bytes: int,
        observer: Callable[[AiRecord], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._records = records
        self._accounts = accounts
        self._credits = credits
        self._documents = documents
        self._fetcher = fetcher
        self._inspect = inspect
        self._max_source_bytes = max_source_bytes
        self._observer = observer

    async def make(self, command: ImageGenerationCommand) -> ImageGenerationOutcome:
        """Run one request to its end (see the module docstring). Errors are raised."""
        entry = self._catalog.image_entry(command.model, command.feature)
        variation = command.feature == IMAGE_VARIATOR
        sizes = entry.config.variation_sizes if variation else entry.config.image_sizes
        size = _size(sizes, command.aspect_ratio, command.ratio_field, command.size)
        if command.n > entry.config.max_images:
            raise Unprocessable(
                f"{command.count_field} is {command.n}; {entry.name!r} makes at most "
                f"{entry.config.max_images} images per request"
            )
        source = await self._source(command) if variation else None
        model = self._catalog.image_model(entry.name, command.feature)

        def call() -> Awaitable[list[GeneratedImage]]:
            if source is None:
                return model.generate(
                    GenerationRequest(command.prompt, command.n, size, command.output_format)
                )
            data, mime = source
            return model.vary(VariationRequest(data, mime, command.n, size, command.output_format))

        return await self._run(command, entry, call)

    async def _run(
        self,
        command: ImageGenerationCommand,
        entry: CatalogModel,
        call: Callable[[], Awaitable[list[GeneratedImage]]],
    ) -> ImageGenerationOutcome:
        record = await self._reserve(command, entry, _new_record(command))
        stored: list[Asset] = []
        try:
            await self._records.start(record, None)
            images = await call()
            for image in images:
                stored.append(await self._documents.store_image(command.principal, image))
        except BaseException as exc:
            reason = exc.message if isinstance(exc, ThreadlineError) else "the request was cut off"
            await asyncio.shield(self._fail(command.principal, record, stored, reason))
            raise
        charge = min(entry.image_price(len(stored)), record.reserved_credits)
        done = replace(
            record,
            status=RecordStatus.SUCCESS,
            result_text="\n".join(a.key for a in stored),
            credits=charge,
            updated_at=utcnow(),
        )
        try:
            # Shielded: a request cancelled now still ends SUCCESS and charged, not half done.
            user = await asyncio.shield(self._records.finish(done, None, None, charge))
        except Exception:
            # The transaction rolled back: nothing is charged, so no image may stay either.
            log.exception("could not store the images' record", record=str(record.id))
            reason = "the images could not be stored"
            await asyncio.shield(self._fail(command.principal, record, stored, reason))
            raise ThreadlineError(f"{reason}; nothing was charged, try again") from None
        self._observe(done)
        if user is None:
            user = await self._accounts.user(command.principal)
        return ImageGenerationOutcome(done, user, stored, images, entry.provider_label)

    async def _fail(
        self, principal: Principal, record: AiRecord, stored: list[Asset], reason: str
    ) -> None:
        for asset in stored:
            await self._documents.discard(principal, asset)
        failed = replace(record, status=RecordStatus.FAILED, error=reason, updated_at=utcnow())
        await self._records.finish(failed, None, None, 0)
        self._observe(failed)

    def _observe(self, record: AiRecord) -> None:
        if self._observer is not None:
            self._observer(record)

    async def _reserve(
        self, command: ImageGenerationCommand, entry: CatalogModel, record: AiRecord
    ) -> AiRecord:
        """Hold what the images asked for cost, or refuse (403) before any model runs."""
        price = entry.image_price(command.n)
        what = f"{command.n} image(s) of {entry.name!r}"
        await self._credits.reserve(command.principal, record.id, price, what)
        return replace(record, reserved_credits=price)

    # ---- the variator's source image ------------------------------------------------

    async def _source(self, command: ImageGenerationCommand) -> tuple[bytes, str]:
        """The image to vary: (bytes, MIME type), from the caller's assets or a URL."""
        raw = command.source.strip()
        web = raw.lower().startswith(("http://", "https://"))
        if not web and ("://" in raw or raw[:5].lower() == "data:"):  # nor an asset key
            raise Unprocessable(
                "imageUrl must be an asset id or key from POST /api/assets, or an http(s) "
                f"URL (got {raw[:40]!r}...)"
            )
        if web:
            data = await self._fetch(raw)
            what = "the image at imageUrl"
        else:
            data = await self._asset_bytes(command.principal, raw)
            what = f"asset {raw}"
        facts = self._inspect(data)
        if facts is None or facts.mime_type not in SOURCE_TYPES:
            raise Unprocessable(f"imageUrl: {what} is not {SOURCE_KINDS}")
        return data, facts.mime_type

    async def _fetch(self, url: str) -> bytes:
        try:
            page = await self._fetcher.fetch(url)
        except FetchRefused as exc:
            raise FetchRefused(f"imageUrl: {exc.reason}") from None
        except FetchFailed as exc:
            raise FetchFailed(f"imageUrl: {exc.reason}") from None
        return page.body

    async def _asset_bytes(self, principal: Principal, id_or_key: str) -> bytes:
        not_found = NotFound(
            f"imageUrl: asset {id_or_key} not found in your team (upload the image with "
            "POST /api/assets, or give an http(s) URL)"
        )
        try:
            asset, _ = await self._documents.get_asset(principal, id_or_key)
        except NotFound:
            raise not_found from None
        if asset.mime_type not in SOURCE_TYPES:
            raise Unprocessable(
                f"imageUrl: asset {id_or_key} is {asset.mime_type}, not {SOURCE_KINDS}"
            )
        if asset.size > self._max_source_bytes:
            raise Unprocessable(
                f"imageUrl: asset {id_or_key} is larger than {self._max_source_bytes} bytes"
            )
        try:
            return await self._documents.asset_bytes(asset)
        except NotFound:  # deleted since it was looked up
            raise not_found from None


def _size(sizes: dict[str, str], ratio: str, field: str, asked: str | None = None) -> str:
    """The upstream size for an aspect ratio ("16:9", also as "32:18"), or a 422. A size
    asked for directly must be one of the model's."""
    if asked is not None:
        if asked not in sizes.values():
            known = ", ".join(dict.fromkeys(sizes.values())) or "(none)"
            raise Unprocessable(f"size {asked} is not supported by this model; supported: {known}")
        return asked
    size = sizes.get(ratio) or sizes.get(_reduced(ratio))
    if size is None:
        known = ", ".join(sizes) or "(none)"
        raise Unprocessable(f"{field} {ratio} is not supported by this model; supported: {known}")
    return size


def _reduced(ratio: str) -> str:
    width, _, height = ratio.partition(":")
    if not (width.isdigit() and height.isdigit()) or int(width) == 0 or int(height) == 0:
        return ratio
    divisor = math.gcd(int(width), int(height))
    return f"{int(width) // divisor}:{int(height) // divisor}"


def _new_record(command: ImageGenerationCommand) -> AiRecord:
    now = utcnow()
    return AiRecord(
        id=uuid4(),
        org_id=command.principal.org_id,
        user_id=command.principal.user.id,
        conversation_id=None,
        model=command.model,
        type=command.feature,
        status=RecordStatus.PENDING,
        prompt_object=command.prompt_object or {},
        result_text="",
        metadata=command.metadata,
        created_at=now,
        updated_at=now,
    )


__all__ = [
    "IMAGE_GENERATOR",
    "IMAGE_VARIATOR",
    "ImageGenerationCommand",
    "ImageGenerationOutcome",
    "ImageGenerationService",
]
