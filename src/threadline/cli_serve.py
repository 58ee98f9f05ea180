"""`threadline serve --workers N`: N API processes on one port.

The parent does what must run once before any process serves (migrations and the first
admin key, in `cli.serve`), binds the port, and hands the socket to uvicorn's process
supervisor, which starts N children that accept on it, restarts one that dies, and stops
them gracefully on SIGTERM/Ctrl-C. Each child builds its own app from the same settings
(`worker_app`, the factory uvicorn imports in the child). What runs in every child is safe
to run N times at once: each process joins the database's process table and fails only the
replies of processes that are gone, never a sibling's (services/nodes.py); job claims are
leased, so the children's embedded workers share the queue.

A supervisor killed outright (SIGKILL, the OOM killer) runs no shutdown: its children would
live on as orphans holding the port, and a restart would find it taken. So each child ties
its life to the supervisor's (`follow_supervisor`): on Linux the kernel sends it SIGTERM when
the supervisor dies (`PR_SET_PDEATHSIG`); elsewhere a thread notices the new parent. SIGTERM
is uvicorn's graceful stop: the child stops listening at once, then lets its streams end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from threadline.settings import Settings

# The parent's command-line overrides (host, port, data dir), for the children to rebuild
# the same settings; the config file reaches them as THREADLINE_CONFIG. Not THREADLINE_*:
# it is no setting.
OVERRIDES_ENV = "TL_SERVE_OVERRIDES"
# The supervisor's pid, for a child to know whether it already lost it.
SUPERVISOR_ENV = "TL_SERVE_SUPERVISOR"
_PR_SET_PDEATHSIG = 1


def follow_supervisor() -> None:
    """In a child: SIGTERM this process when the supervisor dies (at once if it is gone)."""
    supervisor = int(os.environ.get(SUPERVISOR_ENV, "0"))
    if not supervisor:
        return
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    else:
        threading.Thread(target=_watch_parent, args=(supervisor,), daemon=True).start()
    if os.getppid() != supervisor:  # it died before the kernel was told: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> Any:
    """The app of one child process (uvicorn calls this factory in the child)."""
    follow_supervisor()
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
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
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
