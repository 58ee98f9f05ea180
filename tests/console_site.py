"""One console under test: a live Threadline (tests/live_server.py) in front of the fake
OpenAI-compatible upstream, a cuttable proxy in front of the server, and one headless
Chromium (tests/browser.py). The browser tests build one per module (a module-scoped
fixture): a browser start costs about a second, a server start more."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from selenium.webdriver.common.by import By

from tests.browser import ARTIFACTS, Browser, CuttableProxy, errors_in
from tests.fake_upstream import FakeUpstream
from tests.helpers import PRICED, make_settings
from tests.live_server import LiveServer
from threadline.container import create_app
from threadline.domain.entities import Role
from threadline.settings import ModelConfig, SearchSettings

MODEL = "gpt-4o-mini"
ALIAS = "smart"


class ConsoleSite:
    def __init__(
        self,
        folder: Path,
        migrated_sqlite: Path,
        *,
        search: SearchSettings | None = None,
        browser: Browser | None = None,
    ) -> None:
        """A site with its own browser, or sharing `browser` (another site's: not quit on
        close); `search` is its `[search]` (none by default)."""
        self._env = f"CONSOLE_UPSTREAM_KEY_{uuid4().hex[:8].upper()}"
        secret = "sk-console-" + uuid4().hex
        os.environ[self._env] = secret
        self.upstream = FakeUpstream(api_key=secret).start()
        model = ModelConfig(
            provider="openai-compatible",
            base_url=self.upstream.url,
            api_key_env=self._env,
            upstream_model="fake-upstream-model",
            timeout_seconds=10.0,
            credits=PRICED,
        )
        database = folder / "threadline.db"
        shutil.copyfile(migrated_sqlite, database)
        self.settings = make_settings(
            folder,
            f"sqlite+aiosqlite:///{database}",
            models={MODEL: model},
            default_model=MODEL,
            aliases={ALIAS: MODEL},
            search=search or SearchSettings(),
        )
        self.server = LiveServer(create_app(self.settings))
        self.server.start()
        self.key = self.server.call(self.container.bootstrap()).secret
        self.proxy = CuttableProxy(self.server.port)
        self._own_browser = browser is None
        self.browser: Browser | None = None
        self.browser = browser or Browser.start()

    @property
    def container(self) -> Any:
        return self.server.app.state.container

    @property
    def driver(self) -> Any:
        assert self.browser is not None
        return self.browser.driver

    @property
    def url(self) -> str:
        """The console through the proxy (so a test can cut the browser's connections)."""
        return f"{self.proxy.base_url}/console"

    @property
    def api(self) -> str:
        """The API directly (for the test's own calls)."""
        return self.server.base_url

    def member_key(self, name: str = "member") -> str:
        async def issue() -> str:
            accounts = self.container.accounts
            admin = await accounts.authenticate(self.key)
            return str(
                (await accounts.issue_key(admin.org, role=Role.MEMBER, user_name=name)).secret
            )

        return self.server.call(issue())

    def sign_in(self, key: str | None = None, view: str = "") -> None:
        driver = self.driver
        self.forget_key()
        driver.get(self.url + (f"#{view}" if view else ""))
        assert self.browser is not None
        field = self.browser.visible("api-key")
        field.send_keys(key or self.key)
        self.browser.by_id("sign-in").click()
        self.browser.wait(lambda d: self.browser.by_id("user-credits").text.strip())  # type: ignore[union-attr]

    def forget_key(self) -> None:
        """Clear the tab's sessionStorage on the page open now (the last test's console, idle;
        not a fresh console, which would be signing in with the key meanwhile), and leave."""
        with contextlib.suppress(Exception):  # the browser's first page has no storage
            self.driver.execute_script("sessionStorage.clear()")
        self.driver.get("about:blank")
        if self.browser is not None:  # what the last page logged after its test checked
            self.browser.console_log()

    def tab(self, view: str) -> None:
        assert self.browser is not None
        self.browser.by_id(f"tab-{view}").click()
        self.browser.wait(lambda d: d.find_element(By.ID, f"view-{view}").is_displayed())

    def no_console_errors(self, *allowed: str) -> None:
        assert self.browser is not None
        errors = errors_in(self.browser.console_log(), allowed)
        assert not errors, f"the browser console logged errors: {errors}"

    def after(self, request: pytest.FixtureRequest) -> None:
        """Save a screenshot and the browser's log of a failed test."""
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed and self.browser is not None:
            saved = self.browser.save_artifacts(request.node.name)
            print(f"\nscreenshot and browser log: {saved}.png, {saved}.log.json")

    def screenshot(self, name: str) -> Path:
        """Keep a screenshot of the page as documentation (docs/console/NAME.png)."""
        target = Path(__file__).resolve().parent.parent / "docs" / "console" / f"{name}.png"
        if os.environ.get("THREADLINE_CONSOLE_SCREENSHOTS"):
            target.parent.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(target))
        return target

    def close(self) -> None:
        if self.browser is not None and self._own_browser:
            self.browser.quit()
        self.proxy.close()
        self.server.stop()
        self.upstream.stop()
        os.environ.pop(self._env, None)


__all__ = ["ARTIFACTS", "ConsoleSite"]
