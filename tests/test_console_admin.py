"""The console's admin pages in a real headless Chromium: users and credit limits, a key
made (shown once), used, revoked and then refused; the 30-day usage chart showing the
test's own requests; the Admin tab hidden from members; memories and brand voices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.console_site import MODEL, ConsoleSite


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path) -> Iterator[ConsoleSite]:
    console = ConsoleSite(tmp_path_factory.mktemp("console-admin"), migrated_sqlite)
    yield console
    console.close()


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest, site: ConsoleSite) -> Iterator[None]:
    yield
    site.after(request)


def _chat(site: ConsoleSite, key: str) -> None:
    r = httpx.post(
        f"{site.api}/api/chat-with-ai",
        headers={"API-KEY": key},
        json={"model": MODEL, "promptObject": {"prompt": "Hello from the admin test"}},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def _me(site: ConsoleSite, key: str) -> httpx.Response:
    return httpx.get(f"{site.api}/api/me", headers={"API-KEY": key}, timeout=10)


def _text(site: ConsoleSite, selector: str) -> str:
    """The text of an element read in one script (the tables are redrawn after each change)."""
    script = "return document.querySelector(arguments[0])?.textContent || ''"
    return str(site.driver.execute_script(script, selector))


def _legend(site: ConsoleSite) -> list[str]:
    return [e.text for e in site.browser.all("usage-series")]  # type: ignore[union-attr]


def test_an_admin_makes_a_key_that_works_until_revoked(site: ConsoleSite) -> None:
    member = site.member_key("dana")
    site.sign_in(view="admin")
    browser = site.browser
    assert browser is not None
    browser.wait(lambda d: "dana" in browser.by_id("admin-users").text)
    select = site.driver.find_element(By.ID, "key-user")
    select.find_element(By.XPATH, "./option[text()='dana']").click()
    browser.by_id("new-key").click()
    key = browser.wait(lambda d: browser.by_id("key-value").text.strip())
    assert key.startswith("tl_") and key != member
    assert _me(site, key).json()["user"]["userName"] == "dana"  # it works
    prefix = key.split("_")[1]
    row = f'#keys tr[data-prefix="{prefix}"]'
    browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    site.screenshot("admin")
    site.driver.find_element(By.CSS_SELECTOR, f'{row} [data-testid="revoke-key"]').click()
    browser.wait(lambda d: "revoked" in _text(site, row))
    refused = _me(site, key)
    assert refused.status_code == 401, refused.text
    assert _me(site, member).status_code == 200  # dana's other key is untouched
    # a credit limit set in the table is the user's
    limit = site.driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Credit limit of dana"]')
    limit.clear()
    limit.send_keys("4321")
    limit.find_element(By.XPATH, "../following-sibling::td/button").click()
    browser.wait(lambda d: _me(site, member).json()["user"]["creditLimit"] == 4321)
    site.no_console_errors()


def test_the_usage_chart_shows_the_tests_own_requests(site: ConsoleSite) -> None:
    member = site.member_key("erin")
    for key in (site.key, site.key, member):
        _chat(site, key)
    usage = httpx.get(f"{site.api}/api/admin/usage", headers={"API-KEY": site.key}).json()
    requests = usage["totals"]["requests"]
    assert requests >= 3
    site.sign_in(view="admin")
    browser = site.browser
    assert browser is not None
    browser.wait(lambda d: _legend(site))
    [series] = _legend(site)
    assert series.startswith(f"{MODEL}:") and series.endswith(f", {requests} requests")
    bars = site.driver.find_elements(By.CSS_SELECTOR, '[data-testid="usage-chart"] rect')
    assert bars and bars[-1].get_attribute("data-day") == usage["to"]  # today's bar
    # per user: erin's one request is her own series
    select = site.driver.find_element(By.ID, "usage-by")
    select.find_element(By.XPATH, "./option[@value='user']").click()
    browser.wait(lambda d: any(s.startswith("erin:") for s in _legend(site)))
    erin = next(s for s in _legend(site) if s.startswith("erin:"))
    assert erin.endswith(", 1 requests")
    site.screenshot("usage")
    site.no_console_errors()


def test_a_member_sees_no_admin_tab_and_manages_memories_and_voices(site: ConsoleSite) -> None:
    member = site.member_key("finn")
    site.sign_in(member)
    browser = site.browser
    assert browser is not None
    assert not browser.by_id("tab-admin").is_displayed()
    assert site.driver.find_element(By.ID, "who-role").text == "MEMBER"
    site.tab("library")
    site.driver.find_element(By.ID, "memory-text").send_keys("User grows <b>pears</b>\n")
    browser.wait(lambda d: browser.all("memory"))
    field = browser.all("memory")[0].find_element(By.TAG_NAME, "input")
    assert field.get_attribute("value") == "User grows <b>pears</b>"
    [added] = httpx.get(f"{site.api}/api/memories", headers={"API-KEY": member}).json()["memories"]
    field.clear()
    field.send_keys("User grows apples in Lisbon")
    browser.all("memory")[0].find_element(By.XPATH, ".//button[text()='Save']").click()

    def stored(_: object = None) -> list[str]:
        memories = httpx.get(f"{site.api}/api/memories", headers={"API-KEY": member}).json()
        return [m["content"] for m in memories["memories"]]

    browser.wait(lambda d: stored() == ["User grows apples in Lisbon"])
    [edited] = httpx.get(f"{site.api}/api/memories", headers={"API-KEY": member}).json()["memories"]
    assert edited["uuid"] == added["uuid"]  # edited in place (PATCH), not added anew
    browser.wait(  # the list drawn again from the API: one memory, the new one
        lambda d: (
            [
                m.find_element(By.TAG_NAME, "input").get_attribute("value")
                for m in browser.all("memory")
            ]
            == ["User grows apples in Lisbon"]
        )
    )
    # brand voices: add, edit, delete
    site.driver.find_element(By.ID, "voice-name").send_keys("Plain")
    site.driver.find_element(By.ID, "voice-instructions").send_keys("Short sentences.")
    site.driver.find_element(By.ID, "voice-save").click()
    browser.wait(lambda d: browser.all("voice") and "Plain" in browser.all("voice")[0].text)
    browser.all("voice")[0].find_element(By.XPATH, ".//button[text()='Edit']").click()
    name = site.driver.find_element(By.ID, "voice-name")
    name.clear()
    name.send_keys("Plainer")
    site.driver.find_element(By.ID, "voice-save").click()
    browser.wait(lambda d: browser.all("voice") and "Plainer" in browser.all("voice")[0].text)
    site.screenshot("memories-and-voices")
    browser.all("voice")[0].find_element(By.XPATH, ".//button[text()='Delete']").click()
    browser.wait(lambda d: not browser.all("voice"))
    voices = httpx.get(f"{site.api}/api/brand-voices", headers={"API-KEY": member}).json()
    assert voices["brandVoices"] == []
    site.no_console_errors()
