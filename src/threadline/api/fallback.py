"""Errors the router raises before any dialect's route runs: no route for the path (404), a
path whose routes take other methods (405). Each is answered in the shape of the dialect
that owns the path, as its own routes would answer it, never Starlette's
`{"detail": "Not Found"}`; a 405 names in `Allow` every method of every route of the path
(Starlette names only the first route's).

Which dialect owns a path: for a 405, the route class of a route of that path (each
`route_class` carries its renderer); for a 404, the longest route prefix the path starts
with among the dialects' routers, else Threadline's own shape."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from threadline.api.native import render_native
from threadline.api.routing import ErrorRenderer, MethodNotAllowed
from threadline.domain.errors import NotFound

Prefixes = Sequence[tuple[str, ErrorRenderer]]


def install(app: FastAPI, prefixes: Prefixes) -> None:
    """Render the router's 404 and 405 in the owning dialect's shape. `prefixes`: path
    prefix -> renderer, for paths no route matches."""
    ordered = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            routes = _routes_of(app.router.routes, request)  # flat: see routing.merged
            allow = sorted({method for route in routes for method in _methods(route)})
            render = getattr(routes[0], "renderer", render_native) if routes else render_native
            message = f"{request.method} is not allowed here; allowed: {', '.join(allow)}"
            response = render(request, MethodNotAllowed(message))
            response.headers["Allow"] = ", ".join(allow)
            return response
        if exc.status_code == 404:
            path = request.url.path
            owner = (r for prefix, r in ordered if path == prefix or path.startswith(prefix + "/"))
            render = next(owner, render_native)
            return render(request, NotFound(f"No such endpoint: {request.method} {path}"))
        return await http_exception_handler(request, exc)

    app.add_exception_handler(HTTPException, handler)


def _routes_of(routes: Iterable[BaseRoute], request: Request) -> list[BaseRoute]:
    return [route for route in routes if route.matches(request.scope)[0] != Match.NONE]


def _methods(route: BaseRoute) -> set[str]:
    methods = getattr(route, "methods", None)
    return set(methods) if methods else set()
