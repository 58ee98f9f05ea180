"""`threadline serve --workers N`: N API processes on one port.

The parent does what must run once before any process serves (migrations and the first
admin key, in `cli.serve`), binds the port, and hands the socket to uvicorn's process
supervisor, which starts N children that accept on it, restarts one that dies, and stops
them gracefully on SIGTERM/Ctrl-C. Each child builds its own app from the same settings
(`worker_app`, the factory uvicorn imports in the child). What runs in every child is safe
to run N times at once: each process joins the database's process table and fails only the
replies of processes that are gone, never a sibling's (services/nodes.py); job claims are
leased, so the children's embedded workers share the queue.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any

from threadline.settings import Settings

# The parent's command-line overrides (host, port, data dir), for the children to rebuild
# the same settings; the config file reaches them as THREADLINE_CONFIG. Not THREADLINE_*:
# it is no setting.
OVERRIDES_ENV = "TL_SERVE_OVERRIDES"


def worker_app() -> Any:
    """The app of one child process (uvicorn calls this factory in the child)."""
    from threadline.container import create_app
    from threadline.logs import configure_logging

    settings = Settings(**json.loads(os.environ.get(OVERRIDES_ENV, "{}")))
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    gc.freeze()  # as `cli.serve` does for one process
    sys.setswitchinterval(0.0005)
    return app


def run_workers(settings: Settings, overrides: dict[str, Any], workers: int) -> None:
    """Serve with `workers` processes until stopped; prints the Listening line once bound."""
    import typer
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from threadline import startup

    os.environ[OVERRIDES_ENV] = json.dumps({k: str(v) for k, v in overrides.items()})
    config = uvicorn.Config(
        "threadline.cli_serve:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=35,
        loop="auto",
        http="auto",
    )
    sock = config.bind_socket()
    typer.echo(f"Listening on {startup.base_url(settings)} ({workers} processes)")
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
