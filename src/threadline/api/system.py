"""Endpoints that belong to no vendor: health, metrics, the model catalog, the caller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.native import NATIVE_ERRORS, render_native, team_user
from threadline.api.routing import route_class
from threadline.services.catalog import CatalogModel

if TYPE_CHECKING:
    from threadline.container import Container

router = APIRouter(route_class=route_class(render_native, NATIVE_ERRORS), tags=["system"])


@router.get("/healthz")
async def healthz(container: ContainerDep) -> dict[str, Any]:
    """Alive (a liveness check): the process answers. It does not ask the database, so a
    database outage does not get live processes restarted; `/readyz` does."""
    return {"status": "ok", "activeRuns": container.runs.active}


@router.get("/readyz", responses={503: {"description": "Not ready: see which check failed"}})
async def readyz(container: ContainerDep) -> JSONResponse:
    """Ready to serve (a load balancer's check): the database answers, its schema is
    current, Redis answers when configured. 503 with Retry-After, and each check, if not."""
    checks = await container.readiness()
    ready = all(value in ("ok", "not configured") for value in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics", response_class=Response)
async def metrics(container: ContainerDep) -> Response:
    return Response(container.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/api/models")
async def list_models(_: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    catalog = container.catalog
    models = [
        _model(m, m.name == catalog.default, catalog.aliases_of(m.name)) for m in catalog.list()
    ]
    return {"models": models, "aliases": dict(sorted(catalog.aliases.items()))}


def _model(m: CatalogModel, default: bool, aliases: list[str]) -> dict[str, Any]:
    credits: dict[str, float] = {
        "inputPer1k": m.config.credits.input_per_1k,
        "outputPer1k": m.config.credits.output_per_1k,
    }
    if m.is_images:
        credits = {"perImage": m.config.credits.per_image}
    return {
        "id": str(m.id),
        "name": m.name,
        "provider": m.provider,
        "capabilities": list(m.capabilities),
        "kind": m.config.kind,
        "vision": m.config.vision,
        "default": default,
        "aliases": aliases,
        "credits": credits,
    }


@router.get("/api/me")
async def me(principal: PrincipalDep, container: ContainerDep) -> dict[str, Any]:
    """The caller's own team user, with current credit figures (any role), its team, and
    which of the features a deployment may leave off are on (a client shows only those)."""
    team = {"teamId": str(principal.org_id), "name": principal.org.name}
    user = team_user(await container.accounts.user(principal))
    return {"user": user, "team": team, "features": _features(container)}


def _features(container: Container) -> dict[str, bool]:
    """Only what configuration can turn off: web search needs a `[search]` provider, YouTube
    transcripts `[youtube] enabled`. Memories, brand voices and documents are always on."""
    return {
        "webSearch": container.searcher is not None,
        "youtubeTranscripts": container.settings.youtube.enabled,
    }
