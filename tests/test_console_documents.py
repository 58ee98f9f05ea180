"""Documents in the web console, in a real headless Chromium: several files uploaded with a
progress bar each, their state watched to COMPLETE or FAILED (with the reason), a PDF
attached to a chat, its citations as chips that open the cited page as an image; and a
document's name and text carrying HTML render as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.console_site import ConsoleSite
from tests.fake_upstream import Reply
from tests.files import pdf, truncated_pdf

PAYLOAD = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>'
PAGES = [  # (page 2 of tests/files.pdf is landscape, its text above the page's top)
    "The pear harvest of Threadline orchards starts in September.",
    "Orchards of Threadline grow apples in the north valley.",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path) -> Iterator[ConsoleSite]:
    console = ConsoleSite(tmp_path_factory.mktemp("console-docs"), migrated_sqlite)
    yield console
    console.close()


@pytest.fixture(autouse=True)
def _artifacts(request: pytest.FixtureRequest, site: ConsoleSite) -> Iterator[None]:
    yield
    site.after(request)


def _statuses(site: ConsoleSite) -> dict[str, str]:
    """Name → status text, read in one script (the table is redrawn as states change)."""
    return dict(
        site.driver.execute_script(
            "return [...document.querySelectorAll('#documents tr[data-asset]')].map(r => ["
            "r.querySelector('[data-testid=doc-name]').textContent,"
            "r.querySelector('[data-testid=doc-status]').textContent])"
        )
    )


def _ask(site: ConsoleSite, prompt: str) -> None:
    browser = site.browser
    assert browser is not None
    site.tab("playground")
    browser.by_id("new-chat").click()
    before = len(browser.all("reply"))
    browser.by_id("prompt").send_keys(prompt)
    browser.by_id("send").click()
    browser.wait(
        lambda d: (
            len(browser.all("reply")) > before and "credits" in browser.all("reply-meta")[-1].text
        )
    )


def _injected(site: ConsoleSite) -> int:
    return int(
        site.driver.execute_script(
            "return document.querySelectorAll('img[src=\"x\"], body script').length"
        )
    )


def test_upload_watch_attach_ask_and_open_the_cited_page(site: ConsoleSite, tmp_path: Path) -> None:
    fruit = pdf(tmp_path, PAGES, name="orchards.pdf")
    broken = truncated_pdf(tmp_path)
    site.sign_in(view="documents")
    browser = site.browser
    assert browser is not None
    browser.by_id("file-input").send_keys(f"{fruit}\n{broken}")
    bars = browser.wait(
        lambda d: len(browser.all("upload-progress")) == 2 and browser.all("upload-progress")
    )
    browser.wait(lambda d: all(b.get_attribute("value") == "1" for b in bars))
    seen: set[str] = set()

    def settled(_: object) -> bool:
        statuses = _statuses(site)
        seen.update(statuses.values())
        return (
            statuses.get("orchards.pdf") == "COMPLETE"
            and "truncated.pdf" in statuses
            and (statuses["truncated.pdf"].startswith("FAILED"))
        )

    browser.wait(settled, timeout=60)
    assert "RUNNING" in seen  # watched while it was ingested
    failed = _statuses(site)["truncated.pdf"]
    assert len(failed) > len("FAILED: ")  # with the reason
    site.screenshot("documents")
    # attach the PDF, ask about it: the reply's sources are chips
    row = site.driver.find_element(By.XPATH, "//tr[td[text()='orchards.pdf']]")
    row.find_element(By.CSS_SELECTOR, '[data-testid="attach-doc"]').click()
    site.upstream.enqueue(Reply("The pear harvest starts in September [1]."))
    _ask(site, "When does the pear harvest of Threadline orchards start?")
    assert browser.all("attached-doc")[0].text.startswith("📎 orchards.pdf")
    chips = browser.all("citation")
    assert chips, "the reply has no source chips"
    labels = [c.text for c in chips]
    assert any("orchards.pdf · p. 1" in label for label in labels), labels
    chip = next(c for c in chips if "p. 1" in c.text)
    assert "September" in chip.get_attribute("title")  # the excerpt
    chip.click()
    image = browser.visible("page-image")
    browser.wait(lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 1000)
    assert "page 1" in site.driver.find_element(By.ID, "page-caption").text
    site.screenshot("citation")
    site.driver.find_element(By.ID, "page-close").click()
    assert not image.is_displayed()
    site.no_console_errors()


def test_a_document_name_and_text_with_html_render_as_text(
    site: ConsoleSite, tmp_path: Path
) -> None:
    name = '<img src=x onerror="alert(9)"><b>plan.pdf'
    hostile = pdf(tmp_path, [f"Harvest notes {PAYLOAD} end of notes."], name=name)
    site.sign_in(view="documents")
    browser = site.browser
    assert browser is not None
    browser.by_id("file-input").send_keys(str(hostile))
    browser.wait(
        lambda d: any(s == "COMPLETE" for n, s in _statuses(site).items() if "plan" in n), 60
    )
    shown = [n for n in _statuses(site) if "plan" in n]
    assert shown and "<" in shown[0] and "plan.pdf" in shown[0]  # the name, as text
    row = site.driver.find_element(By.CSS_SELECTOR, "#documents tr[data-asset]")
    row.find_element(By.CSS_SELECTOR, '[data-testid="attach-doc"]').click()
    site.upstream.enqueue(Reply(f"The notes say {PAYLOAD}"))
    _ask(site, "What do the harvest notes say?")
    excerpts = [c.get_attribute("title") for c in browser.all("citation")]
    assert any("<script>" in e and "onerror" in e for e in excerpts), excerpts
    assert any("<b>plan.pdf" in c.text for c in browser.all("citation"))
    assert PAYLOAD in browser.all("reply")[-1].text
    assert _injected(site) == 0
    assert site.driver.execute_script("return window.__xss === undefined")
    with pytest.raises(NoAlertPresentException):
        site.driver.switch_to.alert.text  # noqa: B018
    site.no_console_errors()
