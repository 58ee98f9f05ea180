"""A real `threadline serve` process for tests that kill it: SIGKILL, restart, same data dir.

Why it exists: what survives a crash (a reply's checkpointed text, a job's lease, a record
left PENDING) can only be tested against a process that really dies, with no `finally`, no
shutdown hook and no graceful drain. `LiveServer` (tests/live_server.py) runs the app in the
test's own process, so it cannot be killed; this module starts the server as a deployment
does, `python -m threadline serve --config <file>`, on 127.0.0.1 and a free port, with the
test's own sources (the subprocess inherits PYTHONPATH).

    server = ServerProcess(tmp_path, models={"gpt-4o-mini": upstream_model(up.url)},
                           settings={"stream_checkpoint_seconds": 0.5})
    server.start()                # waits for /healthz; the first start's admin key: server.key
    httpx.get(f"{server.base_url}/api/me", headers={"API-KEY": server.key})
    server.kill()                 # SIGKILL, reaped
    server.start()                # the same data dir and database, a new port
    server.stop()                 # SIGTERM (graceful), then SIGKILL if it lingers

The config file holds everything (`database_url` defaults to SQLite in the data dir; pass a
PostgreSQL URL from the `postgres` fixture to run on it). The server's output goes to
`<data dir>/server.log` (read on failure, and for the admin key printed on the first start).
`command` runs another program in place of `python -m threadline` that takes the same
arguments (tests/poison_server.py: the command with a poisoned ingestion handler).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.live_server import free_port

KEY_LINE = re.compile(r"^\s*(tl_\S+)\s*$", re.MULTILINE)
THREADLINE = (sys.executable, "-m", "threadline")
_PR_SET_PDEATHSIG = 1
_LIBC = None
if sys.platform == "linux":
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the test process dies, so a test run
    killed outright leaves no server behind (the child is in its own session). Linux ties
    this to the thread that started the child: call `start()` from the test's own thread."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _listening(port: int | None) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` (a server started)."""
    try:
        socket.create_connection(("127.0.0.1", port or 0), timeout=2).close()
    except OSError:
        return False
    return True


def upstream_model(base_url: str, **config: Any) -> dict[str, Any]:
    """A model entry served by an OpenAI-compatible upstream (tests/fake_upstream.py)."""
    return {
        "provider": "openai-compatible",
        "base_url": base_url,
        "upstream_model": "fake-upstream-model",
        **config,
    }


PORT_TAKEN = re.compile(r"address already in use", re.IGNORECASE)  # uvicorn's bind error


class _PortTaken(Exception):
    """The start could not bind its port: another process took it first."""


class ServerProcess:
    """One server process at a time on `data_dir`; `start()` again after `kill()`/`stop()`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        models: Mapping[str, Mapping[str, Any]],
        default_model: str | None = None,
        database_url: str | None = None,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = THREADLINE,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir / "threadline.toml"
        self.log_path = self.data_dir / "server.log"
        self.values: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "host": "127.0.0.1",
            "default_model": default_model or next(iter(models)),
            "rate_limit_per_minute": 0,
            "log_level": "WARNING",
            # light and quick to start: no parser child, no embedding model
            "documents": {"embedded_worker": False},
            "embeddings": {"provider": "none"},
            **(settings or {}),
            "models": {name: dict(config) for name, config in models.items()},
        }
        if database_url is not None:
            self.values["database_url"] = database_url
        self.env = dict(env or {})
        self.command = list(command)
        self.key: str | None = None  # the admin key printed on the first start
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        assert self.port is not None, "start() the server first"
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def headers(self, key: str | None = None) -> dict[str, str]:
        secret = key or self.key
        assert secret is not None, "no key: the first start prints one"
        return {"API-KEY": secret}

    def start(self, timeout: float = 90.0) -> str:
        """Start the server and wait until `/healthz` answers 200; returns the base URL."""
        self.launch()
        return self.wait_started(timeout)

    def launch(self, args: tuple[str, ...] = ()) -> None:
        """Start the process without waiting (several at once: then `wait_started` each).
        `args`: more `serve` options (e.g. `("--workers", "2")`)."""
        assert self.pid is None, "the server is running"
        self._args = args
        self.port = free_port()
        self.config_path.write_text(toml({**self.values, "port": self.port}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
        env["PYTHONUNBUFFERED"] = "1"  # the first start's key reaches the log at once
        env.update(self.env)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = [*self.command, "serve", "--config", str(self.config_path)]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*command, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl-C of the test run does not reach it first
                preexec_fn=_die_with_parent,
            )

    def wait_started(self, timeout: float = 90.0, *, first_key: bool = True) -> str:
        """Wait until this start listens and answers `/healthz`; `first_key`: this start must
        have printed the admin key unless one is known (False: a sibling on a shared database,
        which prints none). A port taken by another process between `free_port()` and the
        bind (other tests start servers too) means a new port and a new start."""
        for attempt in range(3):
            try:
                self._wait_healthy(timeout)
                break
            except _PortTaken:
                if attempt == 2:
                    raise RuntimeError(f"no free port after 3 tries:\n{self.output()}") from None
                self.launch(self._args)
            except BaseException:
                self.kill()
                raise
        if self.key is None:
            found = KEY_LINE.search(self.output())
            if found is not None:
                self.key = found.group(1)
            elif first_key:
                raise RuntimeError(f"the first start printed no admin key:\n{self.output()}")
        return self.base_url

    def _wait_healthy(self, timeout: float) -> None:
        """Until `/healthz` answers on this start's port and the log says this process
        listens there: another test's server that took the port answers `/healthz` too."""
        deadline = time.monotonic() + timeout
        announced = f"Listening on {self.base_url}"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                if PORT_TAKEN.search(self.output(since_start=True)):
                    raise _PortTaken()
                raise RuntimeError(
                    f"the server exited with {self._proc.returncode}:\n{self.output()}"
                )
            # An HTTP client costs ~4 ms of CPU a try; a refused connect next to nothing.
            if _listening(self.port) and announced in self.output(since_start=True):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /healthz:\n{self.output()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to end by itself; its exit status (-9: SIGKILL)."""
        assert self._proc is not None, "start() the server first"
        return self._proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind; the process is reaped before this returns.
        Its whole process group goes (the children of `serve --workers N` too)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is its own
        proc.wait(30)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after `timeout` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def output(self, since_start: bool = False) -> str:
        """What the server printed (all its runs; `since_start`: the last start only)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:  # a start's wait reads only its own part
            log.seek(self._log_offset if since_start else 0)
            return log.read().decode(errors="replace")

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class WorkerProcess:
    """A real `threadline worker` process (another machine's, as it were): the settings of a
    server (`ServerProcess.values`, so the same database) but a data dir of its own.

        worker = WorkerProcess(tmp_path / "w1", server.values)
        worker.start()    # waits until it says it runs
        worker.kill()     # SIGKILL, reaped
    """

    def __init__(self, data_dir: Path, values: Mapping[str, Any]) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir / "threadline.toml"
        self.log_path = self.data_dir / "worker.log"
        self.values = {**values, "data_dir": str(self.data_dir)}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 90.0) -> None:
        self.config_path.write_text(toml(self.values))
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "threadline", "worker", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while "running" not in self.log_path.read_text(errors="replace"):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def toml(values: Mapping[str, Any]) -> str:
    """The TOML text of a config: scalars and lists first, then tables (nested by path)."""
    return "\n".join(_table(values, ())) + "\n"


def _table(values: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[str]:
    tables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
    if path:
        yield "[" + ".".join(_key(p) for p in path) + "]"
    for key, value in values.items():
        if key not in tables:
            yield f"{_key(key)} = {_value(value)}"
    for key, value in tables.items():
        yield from _table(value, (*path, key))


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")
