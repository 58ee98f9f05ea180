"""The `threadline` command: serve, keys, models, chat, ingest, worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from threadline import startup
from threadline.settings import Settings

if TYPE_CHECKING:
    from threadline.container import Container

app = typer.Typer(help="Threadline: a self-hosted conversation API server.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
T = TypeVar("T")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the database and files live")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML config file")]
_debug = False


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of config errors")
    ] = False,
) -> None:
    """Threadline: a self-hosted conversation API server."""
    global _debug
    _debug = debug


def _settings(
    data_dir: Path | None = None, config: Path | None = None, **overrides: object
) -> Settings:
    if config is not None:
        if not config.is_file():
            raise typer.BadParameter(f"config file {config} does not exist", param_hint="--config")
        os.environ["THREADLINE_CONFIG"] = str(config)
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except (ValueError, OSError) as error:  # pydantic's and tomllib's errors are ValueErrors
        from threadline.config_errors import explain

        if _debug:
            console.print_exception()
        typer.echo(f"threadline: {explain(error)}", err=True)
        raise typer.Exit(2) from None


def _with_container(
    settings: Settings, work: Callable[..., Awaitable[T]], *, worker: bool = False
) -> T:
    from threadline.container import Container

    async def main() -> T:
        container = Container(settings)
        # A command may run beside a live server: its replies' reservations are not ours.
        await container.start(worker=worker, release_credits=False)
        try:
            return await work(container)
        finally:
            await container.stop()

    return asyncio.run(main())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="API processes serving the port")
    ] = 1,
) -> None:
    """Start the API server (creates an admin key on the first start)."""
    import uvicorn

    from threadline.container import create_app
    from threadline.logs import configure_logging

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port}.items() if v is not None
    }
    settings = _settings(data_dir, config, **overrides)
    configure_logging(settings.log_level, settings.log_json)
    issued = _with_container(settings, lambda c: c.bootstrap())
    for line in startup.summary(settings):
        typer.echo(line)
    if issued is not None:
        for line in startup.first_key(issued.secret, settings):
            typer.echo(line)
    if workers > 1:
        from threadline.cli_serve import run_workers

        if data_dir is not None:
            overrides["data_dir"] = data_dir
        run_workers(settings, overrides, workers)
        typer.echo("Stopped.")
        return
    app = create_app(settings)
    # What is loaded by now (modules, the app) lives as long as the process: keep it out of
    # the cyclic collector's full passes, which otherwise stall the event loop ~100 ms each.
    gc.freeze()
    # The database's worker threads (aiosqlite) need the GIL for a moment per statement; on a
    # busy event loop they would wait up to the default 5 ms switch interval each time.
    sys.setswitchinterval(0.0005)
    server_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=35,
        loop="auto",  # uvloop when installed (the `fast` extra), else asyncio
        http="auto",
    )
    server = _announcing_server(server_config, f"Listening on {startup.base_url(settings)}")
    # uvicorn handles Ctrl-C and SIGTERM (a graceful stop), then raises the signal again
    # for the handler it found: make that handler a quiet end, not KeyboardInterrupt's
    # traceback and exit 130, nor SIGTERM's default death.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stopped)
    with contextlib.suppress(_Stopped):
        server.run()
    typer.echo("Stopped.")


class _Stopped(Exception):
    """Raised by the stop signals' handler once uvicorn has shut down."""


def _stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def _announcing_server(config: Any, announcement: str) -> Any:
    """uvicorn's server, saying where it listens once it does (uvicorn's own line is at
    INFO, which `log_level="warning"` keeps quiet). Ctrl-C and SIGTERM end it cleanly:
    uvicorn stops accepting, lets running replies finish (up to the graceful timeout),
    and returns."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                typer.echo(announcement)

    return Server(config)


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="Org name (must exist, but for 'default')")] = "default",
    create_org: Annotated[
        bool, typer.Option("--create-org", help="Create the org if it does not exist")
    ] = False,
    role: Annotated[str, typer.Option(help="ADMIN or MEMBER")] = "MEMBER",
    name: Annotated[str, typer.Option(help="The new user's name")] = "user",
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a user with a key in an org; prints only the key."""
    from threadline.domain.entities import Role
    from threadline.domain.errors import NotFound

    try:
        role_value = Role(role.upper())
    except ValueError:
        raise typer.BadParameter("role must be ADMIN or MEMBER", param_hint="--role") from None

    async def work(container: Container) -> str | None:
        try:
            issued = await container.accounts.issue_key_in(
                org, role=role_value, user_name=name, create=create_org
            )
        except NotFound as missing:
            typer.echo(f"threadline: {missing.message} (--create-org creates it)", err=True)
            return None
        return issued.secret

    secret = _with_container(_settings(data_dir, config), work)
    if secret is None:
        raise typer.Exit(1)
    typer.echo(secret)


@app.command()
def models(
    config: ConfigFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the configured models (whole ids: plain columns when piped, or --json)."""
    from threadline.cli_tables import print_table
    from threadline.providers.registry import REGISTRY
    from threadline.services.catalog import ModelCatalog

    settings = _settings(None, config)
    catalog = ModelCatalog(
        settings.models, settings.default_model, REGISTRY, aliases=settings.model_aliases()
    )
    if as_json:
        listed = [
            {
                "id": str(m.id),
                "name": m.name,
                "provider": m.provider,
                "capabilities": list(m.capabilities),
                "default": m.name == catalog.default,
                "aliases": catalog.aliases_of(m.name),
            }
            for m in catalog.list()
        ]
        typer.echo(json.dumps(listed, indent=2))
        return
    columns = ("id", "name", "provider", "capabilities", "default", "aliases")
    rows = [
        (
            str(m.id),
            m.name,
            m.provider,
            ", ".join(m.capabilities),
            "yes" if m.name == catalog.default else "",
            ", ".join(catalog.aliases_of(m.name)),
        )
        for m in catalog.list()
    ]
    print_table(console, columns, rows)


@app.command()
def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask")],
    model: Annotated[
        str | None, typer.Option(help="Model name (default: the configured default)")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Ask a model once and stream the answer to the terminal (as the first admin)."""
    from threadline.cli_chat import run_chat

    settings = _settings(data_dir, config)
    code = _with_container(settings, lambda c: run_chat(c, prompt, model or settings.default_model))
    raise typer.Exit(code)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest")],
    conversation: Annotated[
        str | None, typer.Option(help="Attach the documents to this conversation id")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Upload and ingest documents now, with a progress bar (as the first admin)."""
    from threadline.cli_ingest import run_ingest

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise typer.BadParameter(f"no such file: {', '.join(missing)}", param_hint="PATHS")
    settings = _settings(data_dir, config)
    raise typer.Exit(_with_container(settings, lambda c: run_ingest(c, paths, conversation)))


@app.command()
def worker(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Run the background job worker (document ingestion, memories) until stopped."""
    from threadline.cli_ingest import run_worker
    from threadline.logs import configure_logging

    settings = _settings(data_dir, config)
    configure_logging(settings.log_level, settings.log_json)
    raise typer.Exit(_with_container(settings, run_worker))
