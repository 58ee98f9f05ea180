"""The web console's sign-in and playground in a real headless Chromium: a live server, the
fake upstream streaming over real HTTP, and a proxy that drops the browser's connections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser import DESKTOP, PHONE
from tests.console_site import ALIAS, MODEL, ConsoleSite
from tests.fake_upstream import Reply
from tests.search_server import SearchEngine
from threadline.settings import SearchSettings

PAYLOAD = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path) -> Iterator[ConsoleSite]:
    console = ConsoleSite(tmp_path_factory.mktemp("console-chat"), migrated_sqlite)
    yield console
    console.close()


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest, site: ConsoleSite) -> Iterator[None]:
    yield
    site.after(request)


def _replies(site: ConsoleSite) -> list[str]:
    return [r.find_element(By.CSS_SELECTOR, ".bubble").text for r in site.browser.all("reply")]  # type: ignore[union-attr]


def _send(site: ConsoleSite, prompt: str) -> None:
    browser = site.browser
    assert browser is not None
    before = len(browser.all("reply"))
    field = browser.by_id("prompt")
    field.clear()
    field.send_keys(prompt)
    browser.by_id("send").click()
    browser.wait(lambda d: len(browser.all("reply")) == before + 1)


def _injected(site: ConsoleSite) -> int:
    """Nodes the payloads would have made, anywhere in the page (the sidebar's titles too)."""
    return int(
        site.driver.execute_script(
            'return document.querySelectorAll(\'img[src="x"], body script, '
            "a[href^=javascript]').length"
        )
    )


def _last_record(site: ConsoleSite) -> dict[str, Any]:
    """The aiRecord of the newest conversation's last reply, from the API."""
    key = {"API-KEY": site.key}
    newest = httpx.get(f"{site.api}/api/conversations?limit=1", headers=key).json()
    uuid = newest["conversations"][0]["uuid"]
    detail = httpx.get(f"{site.api}/api/conversations/{uuid}", headers=key).json()
    record_id = detail["conversation"]["messages"][-1]["aiRecordId"]
    body = httpx.get(f"{site.api}/api/chat-with-ai/{record_id}", headers=key).json()
    return dict(body["aiRecord"])


def _last_meta(site: ConsoleSite) -> str:
    return str(site.browser.all("reply-meta")[-1].text)  # type: ignore[union-attr]


def test_sign_in_shows_who_and_credits_and_sign_out_forgets_the_key(site: ConsoleSite) -> None:
    browser = site.browser
    assert browser is not None
    driver = site.driver
    site.forget_key()
    driver.get(site.url)
    browser.visible("api-key")
    site.screenshot("sign-in")
    browser.by_id("api-key").send_keys("not-a-key")
    browser.by_id("sign-in").click()
    browser.wait(lambda d: "not accepted" in d.find_element(By.ID, "signin-error").text)
    # keyboard only: the field, then Enter
    field = browser.by_id("api-key")
    field.clear()
    field.send_keys(site.key, Keys.ENTER)
    credits = browser.wait(lambda d: browser.by_id("user-credits").text.strip())
    assert "credits left" in credits
    assert driver.find_element(By.ID, "who-org").text == "default"
    assert driver.find_element(By.ID, "who-role").text == "ADMIN"
    assert site.key not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('threadline.apiKey')") == site.key
    options = [o.text for o in browser.by_id("model-picker").find_elements(By.TAG_NAME, "option")]
    assert f"{MODEL} (default)" in options and f"{ALIAS} → {MODEL} (alias)" in options
    browser.by_id("sign-out").click()
    browser.visible("api-key")
    assert driver.execute_script("return sessionStorage.getItem('threadline.apiKey')") is None
    site.no_console_errors("401")  # the refused key's request


def test_a_reply_streams_token_by_token_and_stop_ends_it(site: ConsoleSite) -> None:
    site.sign_in()
    browser = site.browser
    assert browser is not None
    site.upstream.enqueue(Reply(tokens=150, delay=0.04))  # about 6 s
    full = "".join(Reply(tokens=150).pieces())
    _send(site, "Count slowly please")
    lengths = set()
    browser.wait(lambda d: lengths.add(len(_replies(site)[-1])) or len(lengths) >= 4)
    assert browser.by_id("stop").is_displayed()
    browser.by_id("stop").click()
    # the server ends the reply where it is; the stream goes on to its result
    browser.wait(lambda d: "[stopped]" in _last_meta(site) and "credits" in _last_meta(site))
    stopped = _replies(site)[-1]
    assert 0 < len(stopped) < len(full.strip())
    time.sleep(0.4)  # had it gone on, tokens arrive every 40 ms
    assert _replies(site)[-1] == stopped
    record = _last_record(site)
    assert record["status"] == "SUCCESS"
    assert record["aiRecordDetail"]["resultObject"][0].strip() == stopped  # stored as shown
    assert record["usage"]["credits"] > 0
    assert browser.by_id("send").is_displayed()
    # the next reply: markdown built as DOM, a code block with its copy button, the figures
    site.upstream.enqueue(Reply("Use **bold** and `x`:\n\n```python\nprint('hi')\n```\n"))
    _send(site, "Show code")
    browser.wait(lambda d: "credits" in _last_meta(site))
    reply = browser.all("reply")[-1]
    assert reply.find_element(By.CSS_SELECTOR, "strong").text == "bold"
    assert reply.find_element(By.CSS_SELECTOR, "pre code").text == "print('hi')"
    assert reply.find_element(By.CSS_SELECTOR, '[data-testid="copy-code"]').is_displayed()
    meta = _last_meta(site)
    assert meta.startswith(MODEL) and "tokens" in meta
    assert int(meta.split(" credits")[0].rsplit(" ", 1)[-1]) > 0
    site.screenshot("playground")
    site.no_console_errors()


def test_a_dropped_connection_resumes_and_the_reply_finishes(site: ConsoleSite) -> None:
    site.sign_in()
    browser = site.browser
    assert browser is not None
    site.upstream.enqueue(Reply(tokens=60, delay=0.05))  # 3 s
    full = "".join(Reply(tokens=60).pieces()).strip()
    _send(site, "Tell me a long story")
    browser.wait(lambda d: len(_replies(site)[-1]) > 10)
    assert site.proxy.cut() >= 1  # every connection of the browser, the stream's included
    browser.wait(lambda d: "credits" in _last_meta(site), timeout=30)
    assert _replies(site)[-1] == full  # nothing lost, nothing twice
    assert "[resumed]" in _last_meta(site)
    site.no_console_errors("net::ERR_", "Failed to fetch")


def test_html_in_a_prompt_or_a_reply_renders_as_text(site: ConsoleSite) -> None:
    site.sign_in()
    browser = site.browser
    assert browser is not None
    site.upstream.enqueue(Reply(f"Here: {PAYLOAD} and [x](javascript:alert(3))"))
    _send(site, PAYLOAD)
    browser.wait(lambda d: "credits" in _last_meta(site))
    user = browser.all("user-message")[-1].text
    assert PAYLOAD in user
    assert PAYLOAD in _replies(site)[-1]
    assert _injected(site) == 0
    # the same conversation opened again from the list: its history, as text too
    browser.by_id("new-chat").click()
    assert not browser.all("reply")
    site.driver.find_element(By.CSS_SELECTOR, "#conversation-list button").click()
    browser.wait(lambda d: len(browser.all("reply")) == 1 and "credits" in _last_meta(site))
    assert PAYLOAD in browser.all("user-message")[0].text
    assert PAYLOAD in _replies(site)[0]
    assert _injected(site) == 0
    assert site.driver.execute_script("return window.__xss === undefined")
    with pytest.raises(NoAlertPresentException):
        site.driver.switch_to.alert.text  # noqa: B018
    site.no_console_errors()


def test_the_conversation_list_has_every_dialect_newest_first_and_searches_titles(
    site: ConsoleSite,
) -> None:
    bearer = {"Authorization": f"Bearer {site.key}"}
    org = httpx.get(f"{site.api}/api/me", headers=bearer).json()["user"]["teamId"]
    made = [
        httpx.post(  # 1min.ai
            f"{site.api}/api/conversations",
            headers={"API-KEY": site.key},
            json={"title": "Orchard <i>one</i>", "type": "UNIFY_CHAT_WITH_AI", "model": MODEL},
        ),
        httpx.post(  # the Conversation Service
            f"{site.api}/api/conversation/create?org_id={org}",
            headers=bearer,
            json={"title": "Orchard <b>two</b>"},
        ),
        httpx.post(  # AI Hub Converse
            f"{site.api}/api/v2/conversations",
            headers={**bearer, "IB-Context": org},
            data={"name": "Orchard three", "description": "", "org": org},
        ),
    ]
    assert [r.status_code for r in made] == [200, 200, 201], [r.text for r in made]
    site.sign_in()
    browser = site.browser
    assert browser is not None

    def titles(_: object = None) -> list[str]:
        return list(
            site.driver.execute_script(
                "return [...document.querySelectorAll('#conversation-list .title')]"
                ".map(t => t.textContent)"
            )
        )

    browser.wait(lambda d: "Orchard three" in titles())
    assert titles()[:3] == ["Orchard three", "Orchard <b>two</b>", "Orchard <i>one</i>"]
    browser.by_id("conversation-search").send_keys("ORCHARD <b>")
    browser.wait(lambda d: titles() == ["Orchard <b>two</b>"])
    site.no_console_errors()


def test_the_phone_layout_has_no_horizontal_scroll(site: ConsoleSite) -> None:
    site.sign_in()
    driver = site.driver
    try:
        driver.set_window_size(*PHONE)
        for view in ("playground", "documents", "library", "admin"):
            site.tab(view)
            time.sleep(0.2)  # the view's lists load
            width = driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert width[0] <= width[1], f"{view}: {width[0]} px wide in a {width[1]} px screen"
            if view == "playground":
                site.screenshot("phone")
    finally:
        driver.set_window_size(*DESKTOP)
    site.no_console_errors()


def test_web_search_is_offered_only_where_a_provider_is_configured(
    site: ConsoleSite, tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path
) -> None:
    site.sign_in()
    assert site.browser is not None
    site.browser.visible("prompt")
    assert site.driver.find_elements(By.ID, "web-search") == []  # no [search] provider
    assert site.driver.find_element(By.ID, "with-memories").is_displayed()
    # the same browser on a second server whose [search] names the fake engine
    with SearchEngine() as engine:
        config = SearchSettings(provider="searxng", base_url=engine.url, timeout_seconds=2)
        searching = ConsoleSite(
            tmp_path_factory.mktemp("console-search"),
            migrated_sqlite,
            search=config,
            browser=site.browser,
        )
        try:
            searching.sign_in()
            box = site.browser.visible("web-search")
            box.click()
            _send(searching, "What is a tide mill?")  # returns once the reply's box is shown
            site.browser.wait(lambda d: engine.requests)  # the search comes before the answer
            assert [r.query.get("q") for r in engine.requests] == ["What is a tide mill?"]
            searching.no_console_errors()
        finally:
            searching.close()
