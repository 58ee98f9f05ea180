"""`/docs` (Swagger UI) and `/redoc` that work offline.

FastAPI's own pages load their JavaScript, CSS, favicon and fonts from CDNs, so on a
machine without internet they are blank. Here the same pages load those files from the
`fastapi-offline` wheel (pinned), served under `/docs-assets/` by the server itself: the
HTML names no other host.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS = "/docs-assets"
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def _asset_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets. The app is built with docs_url=None and
    redoc_url=None (FastAPI's CDN pages)."""
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"
    folder = _asset_dir()

    async def swagger(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    async def redoc(_: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FILES:  # a fixed list: no path from the request reaches the disk
            return Response(status_code=404)
        headers = {"Cache-Control": "public, max-age=86400"}
        return FileResponse(folder / name, media_type=FILES[name], headers=headers)

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(ASSETS + "/{name}", asset, include_in_schema=False)
