"""The Asset API (1min.ai): upload a file, look it up, download it, delete it.

1min.ai's pages use the ids this API returns (`fileList`, `attachments.files`, asset keys in
`attachments.images`) without documenting the API itself; Threadline's design is in the
README ("Asset API"). An upload is a multipart form with the file in the `asset` field.
Documents are ingested in the background: `status` goes RUNNING → COMPLETE or FAILED
(with `reason`), and a chat that uses a RUNNING document waits for it.

`GET /api/assets/{id or key}/pages/{n}.png` is page n of a PDF as an image (a citation's
page, in the console). `GET /api/assets/{id or key}/content` sends the file's bytes (an
image a feature made, an upload). Both are declared before the `{asset_id:path}` routes,
which would otherwise take them as part of a key; no generated key ends in `/content`.
Pictures are sent `inline`, anything else as an `attachment`, always with
`X-Content-Type-Options: nosniff`, so an uploaded HTML page is never rendered on the API's
origin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, UploadFile
from fastapi import Path as FastPath
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from threadline.api.bounds import JSON_INT_MAX, Offset, page_limit
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.dialects.oneminai import encode
from threadline.api.dialects.oneminai.routes import render
from threadline.api.idempotency import IDEMPOTENT
from threadline.api.native import NATIVE_ERRORS
from threadline.api.routing import route_class
from threadline.domain.errors import InvalidRequest
from threadline.services.documents import Upload

router = APIRouter(route_class=route_class(render, NATIVE_ERRORS), tags=["1min.ai assets"])
UPLOAD_FIELDS = ("asset", "file")
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["asset"],
                "properties": {"asset": {"type": "string", "format": "binary"}},
                "description": "the file, in the field 'asset' (or 'file')",
            }
        }
    },
}


@router.post("/api/assets", dependencies=[IDEMPOTENT], openapi_extra={"requestBody": UPLOAD_BODY})
async def upload_asset(
    request: Request, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=10)
    try:
        files = [v for k, v in form.multi_items() if k in UPLOAD_FIELDS and not isinstance(v, str)]
        if not files:
            raise InvalidRequest(
                "send the file as multipart/form-data in the field 'asset' "
                "(curl -F asset=@report.pdf)"
            )
        upload: UploadFile = files[0]  # type: ignore[assignment]
        asset, document = await container.documents.upload(
            principal,
            Upload(upload.filename or "file", upload.content_type, upload.file),
        )
    finally:
        await form.close()
    return {"asset": encode.asset(asset, document), "fileContent": encode.file_content(asset)}


@router.get("/api/assets")
async def list_assets(
    principal: PrincipalDep,
    container: ContainerDep,
    limit: Annotated[int, page_limit("assets per page")] = 20,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Your own assets, newest first, each with its ingestion `status` and `pageCount`:
    the `uuid` or `key` goes into `fileList` and `attachments.files`."""
    page = await container.documents.list_assets(
        principal, limit=limit, offset=offset, page_max=container.settings.page_size_max
    )
    return {
        "assets": [encode.asset(asset, document) for asset, document in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get(
    "/api/assets/{asset_id:path}/pages/{page}.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
async def page_image(
    asset_id: str,
    page: Annotated[int, FastPath(ge=1, le=JSON_INT_MAX, description="the page, from 1")],
    principal: PrincipalDep,
    container: ContainerDep,
) -> FileResponse:
    """Page `page` of an uploaded PDF (COMPLETE) as a PNG, 1000 pixels wide: rendered once
    by pypdfium2 in a limited child process, then served from a cache."""
    path = await container.page_images.page_png(principal, asset_id, page)
    return FileResponse(
        path,
        media_type="image/png",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
    )


@router.get("/api/assets/{asset_id:path}/content", response_class=FileResponse)
async def download_asset(
    asset_id: str, principal: PrincipalDep, container: ContainerDep
) -> FileResponse:
    asset, copy = await container.documents.asset_file(principal, asset_id)
    return FileResponse(
        copy.path,
        background=BackgroundTask(copy.release),  # a temporary copy goes once it is sent
        media_type=asset.mime_type,
        filename=asset.name,
        content_disposition_type="inline" if asset.mime_type in INLINE_TYPES else "attachment",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=0"},
    )


@router.get("/api/assets/{asset_id:path}")
async def get_asset(
    asset_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    asset, document = await container.documents.get_asset(principal, asset_id)
    return {"asset": encode.asset(asset, document), "fileContent": encode.file_content(asset)}


@router.delete("/api/assets/{asset_id:path}")
async def delete_asset(
    asset_id: str, principal: PrincipalDep, container: ContainerDep
) -> dict[str, Any]:
    asset = await container.documents.delete_asset(principal, asset_id)
    await container.page_images.forget(asset.org_id, asset.id)
    return {"success": True, "uuid": str(asset.id)}
