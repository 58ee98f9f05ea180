"""The processes a gateway benchmark measures, and their CPU time (split from gateway.py).

The fake upstream (tests/fake_upstream.py) and `threadline serve` (one process or
`--workers N`, waited for until every API process has started), each in its own process
group and stopped on exit; the CPU each has used (from /proc, children included); py-spy
around one measurement. gateway.py keeps the measuring client, the statistics and the
report; soak.py, stall.py and failover.py reach these through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_MODULE = "tests.fake_upstream"  # run with -m from the repository root
TOKENS = 32  # the fake upstream's default reply: 32 tokens, 20 ms apart
DELAY = 0.02
MODEL = "bench-upstream"
UPSTREAM_MODEL = "fake-upstream-model"


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; this process's for None."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU time of a process and its live children (`serve --workers N`: the supervisor and
    its N API processes)."""
    if pid is None:
        return cpu_seconds(None)
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # its parent is the server
                total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def server_processes(supervisor: int) -> list[int]:
    """The API processes of `serve --workers N` (uvicorn's spawned children)."""
    found = []
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return sorted(found)


def wait_all_started(supervisor: int, workers: int, timeout: float = 120.0) -> list[int]:
    """Wait until every API process has finished starting. `/healthz` answers as soon as one
    has; a client opening its keep-alive connections then would give them all to that one
    (they stay where they were accepted). Started = it used CPU to start (imports, the app)
    and is now idle."""
    deadline = time.monotonic() + timeout
    before: dict[int, float] = {}
    while time.monotonic() < deadline:
        pids = server_processes(supervisor)
        now = {pid: cpu_seconds(pid) for pid in pids}
        if len(pids) == workers and all(
            pid in before and now[pid] > 0.5 and now[pid] - before[pid] < 0.05 for pid in pids
        ):
            return pids
        before = now
        time.sleep(0.5)
    raise RuntimeError(f"the {workers} API processes did not all start within {timeout:g} s")


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """The upstream and the Threadline server, each in its own process; stopped on exit."""

    def __init__(
        self, workdir: Path, server_env: dict[str, str], cprofile: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.cprofile = cprofile
        self.server_env = server_env
        self.upstream: subprocess.Popen[str] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.upstream_url = ""
        self.server_url = ""
        self.key = ""
        self.server_log = workdir / "server.log"

    def start_upstream(self, tokens: int = TOKENS, delay: float = DELAY) -> None:
        self.upstream = subprocess.Popen(
            [sys.executable, "-m", UPSTREAM_MODULE, "--tokens", str(tokens), "--delay", str(delay)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a Ctrl-C reaches only this process, which stops them
        )
        assert self.upstream.stdout is not None
        line = self.upstream.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"fake upstream did not start (said {line!r})")
        self.upstream_url = line  # http://127.0.0.1:PORT/v1

    @property
    def upstream_pid(self) -> int | None:
        return None if self.upstream is None else self.upstream.pid

    def _env(self, config: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
        if path := env.get("PYTHONPATH"):  # the server runs in workdir: `src` must stay ours
            env["PYTHONPATH"] = os.pathsep.join(
                str(Path(entry).resolve()) for entry in path.split(os.pathsep) if entry
            )
        env.update(
            THREADLINE_CONFIG=str(config),
            THREADLINE_RATE_LIMIT_PER_MINUTE="0",  # off: the benchmark measures streaming
            THREADLINE_BOOTSTRAP_ADMIN="false",
        )
        env.update(self.server_env)
        return env

    def start_server(self, config_text: str | None = None, workers: int = 1) -> None:
        """`config_text`: the server's TOML (default: one model on the upstream); `workers`:
        API processes (`serve --workers N`)."""
        config = self.workdir / "threadline.toml"
        config.write_text(
            config_text
            or f'default_model = "{MODEL}"\n\n'
            f'[models."{MODEL}"]\n'
            'provider = "openai-compatible"\n'
            f'base_url = "{self.upstream_url}"\n'
            f'upstream_model = "{UPSTREAM_MODEL}"\n'
            "credits = { input_per_1k = 150, output_per_1k = 600 }\n"
        )
        data_dir = self.workdir / "data"
        env = self._env(config)
        cli = [sys.executable, "-m", "threadline"]
        made = subprocess.run(
            [*cli, "keys", "create", "--org", "bench", "--create-org", "--data-dir", str(data_dir)],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if made.returncode != 0:
            raise RuntimeError(f"threadline keys create failed:\n{made.stderr}")
        self.key = made.stdout.strip().splitlines()[-1]
        port = _free_port()
        data_arg = ["--data-dir", str(data_dir)]
        self.server_url = f"http://127.0.0.1:{port}"
        if self.cprofile is not None:
            cli = [sys.executable, "-c", _CPROFILE_MAIN, str(self.cprofile)]
        with self.server_log.open("wb") as log:
            self.server = subprocess.Popen(
                [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), *data_arg]
                + (["--workers", str(workers)] if workers > 1 else []),
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"threadline serve exited:\n{self.server_log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.server_url + "/healthz", timeout=1).status_code == 200:
                    if workers > 1:  # else the client's connections would all go to the first
                        wait_all_started(self.server.pid, workers)
                    return
            time.sleep(0.1)
        raise RuntimeError("threadline serve did not become healthy within 60 s")

    def stop(self) -> None:
        # uvicorn re-raises the signal after its graceful shutdown; SIGINT becomes a
        # KeyboardInterrupt, which lets cProfile write its stats on the way out.
        server_signal = signal.SIGINT if self.cprofile else signal.SIGTERM
        for proc, sig in ((self.server, server_signal), (self.upstream, signal.SIGTERM)):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(60 if self.cprofile else 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.upstream is not None and self.upstream.stdout is not None:
            self.upstream.stdout.close()


_CPROFILE_MAIN = """
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], ["threadline", *sys.argv[2:]]
# CPU time of the event-loop thread: a loaded machine's preemptions are not blamed on
# whatever call happened to be running (a wall-clock profile blames syscalls).
profile = cProfile.Profile(time.thread_time)
try:
    profile.runcall(runpy.run_module, "threadline", run_name="__main__", alter_sys=True)
except (SystemExit, KeyboardInterrupt):
    pass
finally:
    profile.dump_stats(out)
"""


class Profiler:
    """py-spy recording the server process for the duration of one measurement."""

    def __init__(self, output: Path, pid: int, extra: str) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        suffix = output.suffix.lower()
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(suffix, "raw")
        self.cmd = [exe, "record", "--pid", str(pid), *extra.split()]
        self.cmd += ["--format", fmt, "-o", str(output)]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode not in (0, -signal.SIGINT):
            print(f"py-spy exited {self.proc.returncode}: {err.decode()[-500:]}", file=sys.stderr)
