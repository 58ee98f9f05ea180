"""The routes with exact paths are tried first (api/app.py `_exact_paths_first`): no request
changes hands by it. For every exact path and method, the route that answers (or, for a
method it lacks, the route whose 405 is rendered) is the one the dialects' own order gave."""

from __future__ import annotations

from typing import Any

from starlette.routing import Match

from threadline.api import app as app_module
from threadline.container import create_app
from threadline.settings import Settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _first(routes: list[Any], path: str, method: str) -> tuple[Any, Any]:
    """(the route that fully matches, the first route whose path matches) for a request."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    full = partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL and full is None:
            full = route
        if match is not Match.NONE and partial is None:
            partial = route
    return full, partial


def test_exact_paths_first_changes_no_request_s_route(tmp_path, monkeypatch):
    ordered = create_app(Settings(data_dir=tmp_path / "a")).router.routes
    monkeypatch.setattr(app_module, "_exact_paths_first", lambda app: None)
    declared = create_app(Settings(data_dir=tmp_path / "b")).router.routes
    assert len(ordered) == len(declared)

    def name(route: Any) -> Any:
        return None if route is None else (route.path, sorted(getattr(route, "methods", ())))

    exact = [r.path for r in declared if "{" not in getattr(r, "path", "{")]
    assert "/v1/chat/completions" in exact and "/api/chat-with-ai" in exact
    for path in exact:
        for method in METHODS:
            now = tuple(map(name, _first(ordered, path, method)))
            before = tuple(map(name, _first(declared, path, method)))
            assert now == before, (path, method)


def test_hot_paths_are_tried_before_any_route_with_parameters(tmp_path):
    routes = create_app(Settings(data_dir=tmp_path)).router.routes
    first_with_parameters = next(n for n, r in enumerate(routes) if "{" in getattr(r, "path", ""))
    for path in ("/api/chat-with-ai", "/v1/chat/completions", "/v1/messages", "/v1/responses"):
        position = next(n for n, r in enumerate(routes) if getattr(r, "path", None) == path)
        assert position < first_with_parameters, path
