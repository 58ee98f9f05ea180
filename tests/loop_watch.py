"""The loop-lag guard: a test during which the app's event loop was blocked fails, naming
what blocked it.

Why it exists: the event loop is every tenant's (docs/architecture.md). A step whose cost
grows with one request's input, run on the loop (or holding the GIL in a thread for long),
stalls every other request; this guard catches the next one in the suite, not in production.

How: `LoopWatch` runs a heartbeat task on the watched loop (a 10 ms sleep, its lateness
measured) and a watchdog thread. When the heartbeat is late by more than half the limit, the
watchdog samples the stacks of the loop's thread and of every busy thread (every 10 ms, while
the stall lasts). When the heartbeat comes back later than the limit (`LIMIT_SECONDS`, 250 ms;
`THREADLINE_TEST_LOOP_LAG_MS` changes it, 0 turns the guard off), the stall is recorded with
those samples. After each test's call (and teardown) the stalls of every watch are judged:

    the loop's thread ran app code (src/threadline)
    and used >= 80 % of the limit in CPU time, or
    sat asleep in app code (blocking I/O, a sleep)     the test fails, with that stack
    ... but was runnable with little CPU time (the
    OS ran others: a loaded machine)                   not failed; listed in the summary
    the stall was >= 1/3 garbage collection        not failed; listed in the summary
    no app code on the loop's thread (the test's own
    code, a first-time import, a fixture, the OS)      not failed; listed in the summary

A thread running app code meanwhile is named in the report as a suspect (it may have held
the GIL in a long C call) but does not fail the test: on a shared 2-core machine a thread
doing pure-Python work in a pool is as often just the one the OS ran instead.

Time the loop is not running (pytest-asyncio between fixtures, a sync fixture starting
PostgreSQL) is not lag. Watches start after the app's startup (lifespan: migrations, the
local model's load) and stop before its shutdown. A test that blocks the loop on purpose
says why: `@pytest.mark.loop_blocking("why")`; its stalls are listed, not failed.

Hooked from tests/conftest.py (`pytest_plugins`, the `app` fixture) and tests/live_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import os
import re
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import threadline

LIMIT_SECONDS = float(os.environ.get("THREADLINE_TEST_LOOP_LAG_MS", "250")) / 1000
BEAT_SECONDS = 0.01
MAX_SAMPLES = 50
APP_DIR = str(Path(threadline.__file__).resolve().parent) + os.sep
IDLE_FUNCTIONS = {
    ("selectors.py", "select"),
    ("threading.py", "wait"),
    ("queue.py", "get"),
    ("thread.py", "_worker"),
}

Stack = list[traceback.FrameSummary]


@dataclass
class Sample:
    """The stacks of the loop's thread and of the busy threads, at one moment."""

    loop_stack: Stack
    busy: dict[str, Stack]  # other threads running app code: name -> stack
    loop_state: str = "?"  # the loop thread's state in /proc: R running or runnable, S asleep


@dataclass
class Stall:
    watch: str
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    gc_seconds: float = 0.0  # garbage collection during the stall, in any thread
    own_gc_seconds: float = 0.0  # ... in the loop's thread (part of its CPU time)
    cpu_seconds: float | None = None  # CPU time the loop's thread used during the stall
    cpu_start: float | None = None  # the loop thread's CPU clock when the stall began

    def closed(self, cpu_seconds: float | None = None, thread: int | None = None) -> Stall:
        """Count the garbage collection the stall's span saw (it ends now), all of it and
        the part run by the loop's `thread`."""
        end = time.monotonic()
        self.gc_seconds = _gc_seconds(end - self.seconds, end)
        self.own_gc_seconds = _gc_seconds(end - self.seconds, end, thread)
        self.cpu_seconds = cpu_seconds
        return self

    def blocking(self) -> bool:
        """Did the loop's thread block the loop, rather than wait for a CPU? Either it
        computed for most of the limit (CPU time, less garbage collection), or it sat asleep
        in app code at one place (blocking I/O, a sleep, or the GIL held by one long C call
        elsewhere). Asleep at ever-changing places is waiting for the GIL while the loop's
        thread makes progress (other threads of the process, e.g. a live server's test
        client, take turns with it): not failed. Runnable with little CPU time is the OS
        giving the CPU to others: not the app either."""
        if self.cpu_seconds is None:
            return True
        if self.cpu_seconds - self.own_gc_seconds >= 0.8 * LIMIT_SECONDS:
            return True
        asleep = [s for s in self.samples if s.loop_state == "S" and not _idle(s.loop_stack)]
        if not len(asleep) * 2 > len(self.samples) > 0:
            return False
        places = {_place(s.loop_stack) for s in asleep}
        return len(places) == 1

    def culprit(self) -> Stack | None:
        """The app's code the loop's thread ran during the stall (of several samples, the
        stack whose innermost line was seen most often); None if no sample shows any, or
        the stall was a third or more garbage collection."""
        if self.gc_seconds > self.seconds / 3 or not self.blocking():
            return None
        mine = [
            s.loop_stack
            for s in self.samples
            if _in_app(s.loop_stack) and not _importing(s.loop_stack)
        ]
        return _most_common(mine) if mine else None

    def suspects(self) -> dict[str, Stack]:
        """Other threads seen running app code during the stall (the GIL's holders?)."""
        return {name: stack for s in self.samples for name, stack in s.busy.items()}

    def report(self) -> str:
        head = f"event loop {self.watch!r} blocked for {self.seconds * 1000:.0f} ms"
        head += f" (limit {LIMIT_SECONDS * 1000:.0f} ms"
        if self.gc_seconds:
            head += f"; {self.gc_seconds * 1000:.0f} ms of it garbage collection"
        if self.cpu_seconds is not None:
            head += f"; the loop's thread used {self.cpu_seconds * 1000:.0f} ms of CPU"
        head += ")"
        stack = self.culprit()
        if stack is not None:
            text = f"{head} by app code on the loop's thread:\n{_short(stack)}"
        else:
            where = _short(self.samples[0].loop_stack) if self.samples else "no sample taken"
            text = f"{head}, not by app code on its thread, which was in:\n{where}"
        for name, other in list(self.suspects().items())[:2]:
            text += f"\nmeanwhile thread {name!r} ran:\n{_short(other, 6)}"
        return text


# (start, end, thread) of the latest collections
_GC_SPANS: deque[tuple[float, float, int]] = deque(maxlen=256)
_gc_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.monotonic()
    elif _gc_started:
        _GC_SPANS.append((_gc_started, time.monotonic(), threading.get_ident()))


def _gc_seconds(start: float, end: float, thread: int | None = None) -> float:
    """Collection time within [start, end]: in any thread, or in `thread` only."""
    return sum(
        max(0.0, min(b, end) - max(a, start))
        for a, b, ident in list(_GC_SPANS)
        if thread is None or ident == thread
    )


def _most_common(stacks: list[Stack]) -> Stack:
    counts = Counter((stack[-1].filename, stack[-1].lineno) for stack in stacks)
    top = max(counts.values())
    return next(s for s in reversed(stacks) if counts[(s[-1].filename, s[-1].lineno)] == top)


def _place(stack: Stack) -> tuple[str, int | None]:
    """Where a thread is: its innermost frame."""
    return (stack[-1].filename, stack[-1].lineno) if stack else ("", None)


def _in_app(stack: Stack) -> bool:
    return any(frame.filename.startswith(APP_DIR) for frame in stack)


def _importing(stack: Stack) -> bool:
    """A first-time import, or FastAPI building a route's handling on its first request:
    once per process, not per request."""
    return any(
        "importlib._bootstrap" in frame.filename or frame.name == "_build_effective_context"
        for frame in stack
    )


def _idle(stack: Stack) -> bool:
    return not stack or (Path(stack[-1].filename).name, stack[-1].name) in IDLE_FUNCTIONS


def _short(stack: Stack, frames: int = 14) -> str:
    """The innermost frames, from the outermost app frame among them."""
    tail = stack[-frames:]
    return "".join(traceback.format_list(tail)).rstrip()


class LoopWatch:
    """A heartbeat on `loop` and a watchdog thread sampling stacks when it is late. Start it
    on the loop's own thread (`start()`), or from another with `start_threadsafe()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stalls: list[Stall] = []
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._stride, self._seen = 1, 0  # samples kept: every `_stride`-th of those seen
        self._beat = time.monotonic()
        self._open: Stall | None = None  # a stall the watchdog sees now
        self._recorded_beat = 0.0  # the beat whose lateness the watchdog recorded
        self._paused_beat = 0.0  # a beat during which the loop stopped running
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._native_id = 0
        self._beat_cpu = 0.0  # the loop thread's CPU time at the last beat
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._native_id = threading.get_native_id()
        self._beat = time.monotonic()
        self._beat_cpu = time.thread_time()
        self._task = self._loop.create_task(self._heartbeat(), name=f"loop-watch-{self.name}")
        self._watchdog = threading.Thread(
            target=self._watch, name=f"loop-watch-{self.name}", daemon=True
        )
        self._watchdog.start()
        _WATCHES.add(self)

    def start_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.run_coroutine_threadsafe(_call(self.start), loop).result(10)

    def stop(self) -> None:
        """Stop watching (from any thread); the stalls stay until `judge` takes them."""
        self._stop.set()
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(1)
        with self._lock:
            if self._open is not None:
                self._close_open()

    def take(self) -> list[Stall]:
        """The stalls recorded so far (a stall still open is closed if the loop stopped)."""
        loop = self._loop
        if self._open is not None and loop is not None and not loop.is_running():
            time.sleep(3 * BEAT_SECONDS)  # the watchdog closes it
        with self._lock:
            stalls, self.stalls = self.stalls, []
        return stalls

    async def _heartbeat(self) -> None:
        """Beats; and records a late beat the watchdog missed (it too waits for the GIL)."""
        while not self._stop.is_set():
            self._beat_cpu = time.thread_time()
            beat = self._beat = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)
            lag = time.monotonic() - beat - BEAT_SECONDS
            with self._lock:
                seen = beat in (self._recorded_beat, self._paused_beat)
                if lag > LIMIT_SECONDS and not seen and self._open is None:
                    used = time.thread_time() - self._beat_cpu
                    stall = Stall(self.name, lag, self._samples)
                    self.stalls.append(stall.closed(used, self._thread_id))
                    self._samples = []

    def _watch(self) -> None:
        """Every beat: is the loop running, and is its heartbeat late? Open a stall past the
        limit, sample stacks past half of it, close the stall when the beat comes back or
        the loop stops (time the loop is not running is not lag)."""
        loop = self._loop
        assert loop is not None
        running_since: float | None = None
        while not self._stop.wait(BEAT_SECONDS):
            now = time.monotonic()
            beat_cpu = self._beat_cpu  # read before the beat (the heartbeat writes it first)
            beat = self._beat
            with self._lock:
                beat_back = beat != self._recorded_beat
                if self._open is not None and (beat_back or running_since is None):
                    self._close_open()
                if not loop.is_running():
                    running_since = None
                    self._paused_beat = beat
                    self._samples = []
                    continue
                running_since = running_since or now
                late = now - max(beat + BEAT_SECONDS, running_since)
                if late <= LIMIT_SECONDS / 2:
                    self._samples = []
                    continue
            sample = self._sample()
            with self._lock:
                self._keep(sample)
                if self._open is not None:
                    self._open.seconds = late
                elif late > LIMIT_SECONDS:
                    # The CPU clock at the last beat, kept before the beat comes back and
                    # the heartbeat moves it on: the stall's CPU time counts from there.
                    self._open = Stall(self.name, late, self._samples, cpu_start=beat_cpu)
                    self._recorded_beat = beat

    def _close_open(self) -> None:
        """Record the open stall (under the lock): it ends now."""
        assert self._open is not None
        cpu = self._loop_cpu(self._open.cpu_start)
        self.stalls.append(self._open.closed(cpu, self._thread_id))
        self._open = None

    def _loop_cpu(self, since: float | None) -> float | None:
        """CPU time the loop's thread used since its clock read `since` (None where unknown)."""
        if since is None:
            return None
        try:
            clock = time.pthread_getcpuclockid(self._thread_id)
            return time.clock_gettime(clock) - since
        except (AttributeError, OSError):
            return None

    def _keep(self, sample: Sample) -> None:
        """Keep samples spread over the whole stall: at MAX_SAMPLES, every other one is
        dropped and from then on every other one is kept (a long stall's last part, e.g. the
        handler after FastAPI's first-request set-up, is sampled as well as its start)."""
        if not self._samples:
            self._stride, self._seen = 1, 0
        self._seen += 1
        if self._seen % self._stride:
            return
        self._samples.append(sample)
        if len(self._samples) >= MAX_SAMPLES:
            del self._samples[1::2]  # in place: an open stall holds this list
            self._stride *= 2

    def _state(self) -> str:
        try:
            stat = Path(f"/proc/self/task/{self._native_id}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "?"

    def _sample(self) -> Sample:
        names = {t.ident: t.name for t in threading.enumerate()}
        loop_stack: Stack = []
        busy: dict[str, Stack] = {}
        for ident, stack in _all_stacks().items():
            if ident == threading.get_ident():
                continue
            if ident == self._thread_id:
                loop_stack = stack
            elif _in_app(stack) and not _idle(stack):
                busy[names.get(ident, str(ident))] = stack
        return Sample(loop_stack, busy, self._state())


_FRAME_LINE = re.compile(r'^  File "(.*)", line (\d+|\?\?\?) in (.*)$')
_THREAD_LINE = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-f]+)")


def _all_stacks() -> dict[int, Stack]:
    """Every thread's stack (outermost frame first), by thread ident.

    Read by faulthandler, in C, while this thread holds the GIL throughout: walking another
    thread's frames from Python (`sys._current_frames()`, `f_back`) lets that thread run
    between steps and pop the frames being read, which crashed the test process on this
    Python (a segmentation fault seen once in a whole-suite run)."""
    with tempfile.TemporaryFile() as dump:
        faulthandler.dump_traceback(dump.fileno(), all_threads=True)
        dump.seek(0)
        text = dump.read().decode("utf-8", "replace")
    stacks: dict[int, Stack] = {}
    frames: Stack | None = None
    for line in text.splitlines():
        if (thread := _THREAD_LINE.match(line)) is not None:
            frames = stacks.setdefault(int(thread.group(1), 16), [])
        elif frames is not None and (frame := _FRAME_LINE.match(line)) is not None:
            lineno = int(frame.group(2)) if frame.group(2).isdigit() else None
            summary = traceback.FrameSummary(
                frame.group(1), lineno, frame.group(3), lookup_line=False
            )
            frames.insert(0, summary)  # faulthandler lists the innermost first
    return stacks


async def _call(function: Any) -> None:
    function()


_WATCHES: set[LoopWatch] = set()


@contextlib.asynccontextmanager
async def watching(name: str) -> AsyncIterator[LoopWatch]:
    """Watch the running loop while the block runs (the `app` fixture's)."""
    watch = LoopWatch(name)
    if LIMIT_SECONDS <= 0:
        yield watch
        return
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


# ---- the pytest plugin (`pytest_plugins = ["tests.loop_watch"]` in conftest.py)

_OUTSIDE_APP: dict[str, None] = {}  # "<test>: <stall>", in order, each once
_NOT_BLAMED = "loop_stalls_not_blamed"


def pytest_configure(config: pytest.Config) -> None:
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    config.addinivalue_line(
        "markers",
        "loop_blocking(reason): the test blocks the event loop on purpose (reason says why); "
        "the loop-lag guard lists its stalls instead of failing it",
    )


def _judge(item: pytest.Item) -> None:
    stalls = [stall for watch in list(_WATCHES) for stall in watch.take()]
    for watch in [w for w in _WATCHES if w._stop.is_set()]:
        _WATCHES.discard(watch)
    if not stalls:
        return
    item.user_properties.append(("loop_stalls", [s.report() for s in stalls]))
    blamed = [s for s in stalls if s.culprit() is not None]
    if item.get_closest_marker("loop_blocking") is not None or not blamed:
        # Listed at the end of the run by the process that prints it: under xdist that is
        # the controller, which sees the stalls only through the test's report.
        item.user_properties.append((_NOT_BLAMED, [s.report() for s in stalls]))
        return
    pytest.fail("\n\n".join(s.report() for s in blamed), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    _judge(item)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    _judge(item)
    return result


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, reports in report.user_properties:
        if name == _NOT_BLAMED:
            _OUTSIDE_APP.update((f"{report.nodeid}: {line}", None) for line in reports)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _OUTSIDE_APP:
        terminalreporter.section("event loop stalls not blamed on the app")
        for line in _OUTSIDE_APP:
            terminalreporter.write_line(line)
