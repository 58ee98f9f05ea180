"""A real headless Chromium for the console's tests, driven by Selenium.

Why it exists: the console is JavaScript, so what a user sees can only be checked in a
browser. The browser and its driver are Debian's (`chromium`, `chromium-driver`; `make test`
and `.ci/run` install them when missing), passed to Selenium by path, with Selenium Manager
told to stay offline: nothing downloads a browser or a driver.

    browser = Browser.start()               # one per test module (a fixture)
    browser.driver.get(url)
    browser.save_artifacts(folder, "name")  # screenshot + the browser's console log
    browser.quit()

`CuttableProxy` sits between the browser and the server so a test can drop every open
connection at once (`cut()`), as a flaky network would, and see the console resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("THREADLINE_TEST_ARTIFACTS", "test-artifacts")) / "console"
DESKTOP = (1280, 800)
PHONE = (390, 844)


def require_chromium() -> None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test does)")


class Browser:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    @classmethod
    def start(cls) -> Browser:
        require_chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",  # root in CI containers
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        driver.set_script_timeout(30)
        return cls(driver)

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()

    # ---- finding and waiting ------------------------------------------------------------

    def wait(self, condition: Callable[[Any], Any], timeout: float = 20.0) -> Any:
        """Until `condition(driver)` is truthy; an element redrawn while it was read (stale) or
        not there yet is a "not yet", not an error."""
        ignored = (StaleElementReferenceException, NoSuchElementException)
        waiting = WebDriverWait(self.driver, timeout, 0.05, ignored_exceptions=ignored)
        return waiting.until(condition)

    def by_id(self, testid: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def all(self, testid: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def visible(self, testid: str, timeout: float = 20.0) -> WebElement:
        return self.wait(lambda d: _shown(self.all(testid)), timeout)  # type: ignore[no-any-return]

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    # ---- what went wrong ------------------------------------------------------------------

    def console_log(self) -> list[dict[str, Any]]:
        """The browser console's entries since the last call (Chromium drains them)."""
        return list(self.driver.get_log("browser"))

    def save_artifacts(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / name
        with contextlib.suppress(Exception):
            self.driver.save_screenshot(str(target.with_suffix(".png")))
        with contextlib.suppress(Exception):
            log = self.console_log()
            target.with_suffix(".log.json").write_text(json.dumps(log, indent=1))
        return target


def _shown(elements: list[WebElement]) -> WebElement | bool:
    for element in elements:
        if element.is_displayed():
            return element
    return False


def errors_in(log: list[dict[str, Any]], allowed: tuple[str, ...] = ()) -> list[str]:
    """The SEVERE console entries, but those containing one of `allowed`."""
    return [
        entry["message"]
        for entry in log
        if entry.get("level") == "SEVERE" and not any(a in entry["message"] for a in allowed)
    ]


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to `target_port`; `cut()` drops every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="cuttable-proxy").start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> int:
        """Close every connection open now (new ones are accepted); how many were cut."""
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            self._drop(sock)
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
