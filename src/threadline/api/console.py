"""The web console at `/console`: a single page of plain HTML, CSS and JavaScript modules
shipped inside the package (`threadline/console/static`), so nothing is built or fetched
from elsewhere. It is a client like any other: it calls the public APIs with the API key
the user signs in with (kept in the browser's sessionStorage), and the server gives it no
other door. The pages carry a strict Content-Security-Policy: scripts and styles from this
origin only, no inline script, so text from a model or a document can never run as code.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

PREFIX = "/console"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_dir() -> Path:
    return Path(str(files("threadline.console") / "static"))


def _assets(folder: Path) -> dict[str, Path]:
    """The fixed list of files served: no path from a request reaches the disk."""
    return {p.name: p for p in folder.iterdir() if p.suffix in TYPES and p.is_file()}


def install(app: FastAPI) -> None:
    folder = static_dir()
    assets = _assets(folder)

    async def page(_: Request) -> Response:
        return FileResponse(folder / "index.html", media_type=TYPES[".html"], headers=HEADERS)

    async def slash(_: Request) -> Response:
        return RedirectResponse(PREFIX, status_code=308)

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return Response(status_code=404)
        return FileResponse(found, media_type=TYPES[found.suffix], headers=HEADERS)

    app.add_route(PREFIX, page, include_in_schema=False)
    app.add_route(PREFIX + "/", slash, include_in_schema=False)
    app.add_route(PREFIX + "/static/{name}", asset, include_in_schema=False)
