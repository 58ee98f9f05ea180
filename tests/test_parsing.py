"""Parsing uploads in the sandbox: what a user sees for real files, hostile files, and a
child process that crashes, hangs or runs out of memory. Files are made by `tests.files`."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests import files
from tests.helpers import FAULT_CHILD, gone
from threadline.domain.documents import ParsedDocument, ParseFailed
from threadline.ingestion import SUPPORTED_TYPES, detect, detect_file, unsupported_message
from threadline.ingestion.formats.text import markdown_outline
from threadline.ingestion.sandbox import SandboxedParser

module_loop = pytest.mark.asyncio(loop_scope="module")
# The default engine (RapidOCR, from pip) is always tested; tesseract only where installed.
OCR_ENGINES = ["rapidocr"] + (["tesseract"] if shutil.which("tesseract") else [])
MEMORY_REASON = "the file needs more than 128 MB to parse (a decompression bomb?)"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def parser() -> AsyncIterator[SandboxedParser]:
    sandbox = SandboxedParser(timeout_seconds=30, memory_mb=512, max_pages=800, ocr=True)
    yield sandbox
    await sandbox.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=OCR_ENGINES)
async def ocr_parser(request: pytest.FixtureRequest) -> AsyncIterator[SandboxedParser]:
    sandbox = SandboxedParser(
        timeout_seconds=60, memory_mb=2048, max_pages=800, ocr=True, ocr_engine=request.param
    )
    yield sandbox
    await sandbox.aclose()


def reads(phrase: str, text: str) -> bool:
    """`phrase` is in the OCR text. RapidOCR can run two words of a large display font
    together ("INVOICETOTAL"): word breaks are not held against it, the characters are."""
    return phrase in text or phrase.replace(" ", "") in text.replace(" ", "")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def faulty() -> AsyncIterator[SandboxedParser]:
    sandbox = SandboxedParser(1.0, 128, 800, ocr=False, pool_size=1, command=FAULT_CHILD)
    yield sandbox
    await sandbox.aclose()


async def parse(parser: SandboxedParser, path: Path) -> ParsedDocument:
    mime_type = detect_file(path, path.name)
    assert mime_type is not None, f"{path.name} was not recognised"
    return await parser.parse(path, mime_type, path.name)


async def failure(parser: SandboxedParser, path: Path) -> str:
    with pytest.raises(ParseFailed) as failed:
        await parse(parser, path)
    return failed.value.reason


def instruction(directory: Path, text: str) -> Path:
    path = directory / f"{text.split()[0]}.txt"
    path.write_text(text)
    return path


# ---- detection --------------------------------------------------------------------


def test_content_decides_the_type_not_the_name(made: Path) -> None:
    report = files.pdf(made, ["Hello"], name="really-a-pdf.docx")
    receipt = files.png(made, name="receipt.txt")
    program = made / "notes.txt"
    program.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
    fake_pdf = made / "fake.pdf"
    fake_pdf.write_text("just words, no PDF header")
    guide_as_xlsx = made / "guide.xlsx"
    guide_as_xlsx.write_bytes(files.docx(made).read_bytes())

    assert detect_file(report, report.name) == detect.PDF
    assert detect_file(receipt, receipt.name) == detect.PNG
    assert detect_file(guide_as_xlsx, guide_as_xlsx.name) == detect.DOCX
    assert detect_file(files.pptx(made), "roadmap.pptx") == detect.PPTX
    assert detect_file(files.xlsx(made), "sales.xlsx") == detect.XLSX
    assert detect_file(program, program.name) is None
    assert detect_file(fake_pdf, fake_pdf.name) is None
    assert detect_file(files.plain_zip(made, "archive.docx"), "archive.docx") is None


def test_text_types_come_from_the_extension_or_the_declared_type(made: Path) -> None:
    bmw = made / "cars.txt"
    bmw.write_text("BMW and Audi sales, 2026, in thousands of units")
    upload = made / "upload"
    upload.write_text("a,b\n1,2\n")

    assert detect_file(bmw, bmw.name) == detect.TEXT
    assert detect_file(files.markdown(made), "notes.md") == detect.MARKDOWN
    assert detect_file(files.html(made), "storm.html") == detect.HTML
    assert detect_file(files.small_html(made), "contact.htm") == detect.HTML
    assert detect_file(files.csv_file(made), "people.csv") == detect.CSV
    assert detect_file(files.utf16_text(made), "wide.txt") == detect.TEXT
    assert detect_file(upload, "upload", "text/csv; charset=utf-8") == detect.CSV
    assert detect_file(upload, "upload", "application/octet-stream") is None
    assert detect.detect_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ", "photo.bin") == detect.WEBP


def test_unsupported_message_lists_what_is_supported() -> None:
    message = unsupported_message("setup.exe")
    assert message.startswith("unsupported file type: 'setup.exe'")
    assert "PDF" in message and "Word document (.docx)" in message and "PNG image" in message
    assert len(SUPPORTED_TYPES) == 14


# ---- ordinary files ---------------------------------------------------------------


@module_loop
async def test_pdf_text_per_page_with_layout(parser: SandboxedParser, made: Path) -> None:
    texts = ["Revenue grew 12 percent", "Costs fell in the second half", "Outlook: stable"]
    document = await parse(parser, files.pdf(made, texts))

    assert [page.number for page in document.pages] == [0, 1, 2]
    assert [page.text for page in document.pages] == texts
    layout = [(p.width, p.height, p.rotation, p.is_image_page) for p in document.pages]
    assert layout == [(595, 842, 0, False), (842, 595, 0, False), (595, 842, 90, False)]
    assert document.notes == ()
    assert document.metadata["title"] == "Quarterly report"
    assert document.metadata["author"] == "Ada Lovelace"


@module_loop
async def test_pdf_scanned_page_is_read_with_ocr(ocr_parser: SandboxedParser, made: Path) -> None:
    document = await parse(ocr_parser, files.scanned_pdf(made))

    cover, scan, blank = document.pages
    assert cover.text == "Cover page with a real text layer" and not cover.is_image_page
    assert scan.is_image_page
    assert reads(files.OCR_PHRASE, scan.text), scan.text
    assert blank.text == "" and not blank.is_image_page
    assert document.notes == ()


@module_loop
async def test_without_ocr_a_scanned_page_gets_a_note(made: Path) -> None:
    sandbox = SandboxedParser(timeout_seconds=30, memory_mb=512, max_pages=800, ocr=False)
    try:
        document = await parse(sandbox, files.scanned_pdf(made))
        only_scan = await failure(sandbox, files.image_only_pdf(made))
        image = await failure(sandbox, files.png(made))
    finally:
        await sandbox.aclose()

    assert document.pages[1].is_image_page and document.pages[1].text == ""
    assert document.notes == ("page 2: no text found; OCR is turned off",)
    assert only_scan == "no text found: the pages are scanned images and OCR is turned off"
    assert image == "no text found: the file is an image and OCR is turned off"


@module_loop
async def test_without_tesseract_ocr_is_reported_as_not_installed(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the child finds no `tesseract`
    sandbox = SandboxedParser(30, 512, 800, ocr=True, ocr_engine="tesseract")
    try:
        document = await parse(sandbox, files.scanned_pdf(made))
        image = await failure(sandbox, files.png(made))
    finally:
        await sandbox.aclose()

    assert document.pages[0].text == "Cover page with a real text layer"
    assert document.notes == ("page 2: no text found; OCR is not installed",)
    assert image == "no text found: the file is an image and OCR is not installed"


@module_loop
async def test_image_is_read_with_ocr(ocr_parser: SandboxedParser, made: Path) -> None:
    document = await parse(ocr_parser, files.png(made))

    (page,) = document.pages
    assert reads(files.OCR_PHRASE, page.text), page.text
    assert (page.width, page.height, page.is_image_page) == (1800, 400, True)
    assert document.metadata == {
        "format": "PNG",
        "width": 1800,
        "height": 400,
        "mode": "L",
        "frames": 1,
    }


@module_loop
async def test_docx_paragraphs_and_tables_in_order(parser: SandboxedParser, made: Path) -> None:
    document = await parse(parser, files.docx(made))

    (page,) = document.pages
    assert page.text == (
        "Welcome aboard\n"
        "Badges are collected at the front desk.\n"
        "Meeting rooms\n"
        "Room | Floor | Seats\n"
        "Orion | 2 | 8\n"
        "Lyra | 5 | 12\n"
        "All rooms close at 22:00\n"
        "Lunch is served at noon."
    )
    assert (page.width, page.height) == (612, 792)  # python-docx's template: US Letter
    assert document.metadata["title"] == "Onboarding guide"
    # the headings, for the chunks' context lines: paragraph styles Heading 1, Heading 2
    assert document.metadata["outline"] == [[0, 0, "Welcome aboard"], [0, 1, "Meeting rooms"]]


@module_loop
async def test_pptx_one_page_per_slide_with_notes(parser: SandboxedParser, made: Path) -> None:
    document = await parse(parser, files.pptx(made))

    first, second = document.pages
    assert first.text == "Roadmap 2027\nShip the sandbox\nNotes: Mention the memory limits"
    assert second.text == "Budget\nTeam | Cost\nParsing | 42k"
    assert (first.width, first.height) == (720, 540)  # 10 by 7.5 inches
    assert document.metadata["slides"] == 2
    assert document.metadata["outline"] == [[0, 0, "Roadmap 2027"], [1, 0, "Budget"]]


@module_loop
async def test_xlsx_one_page_per_sheet(parser: SandboxedParser, made: Path) -> None:
    document = await parse(parser, files.xlsx(made))

    sales, staff, empty = document.pages
    assert sales.text == (
        "Sheet: Sales\n"
        "Region | Units | Price | Shipped\n"
        "North | 120 | 9.5 | 2026-03-01\n"
        "South | 80 | 10 | 2026-03-02T14:30:00\n"
        "Total | 200"
    )
    assert staff.text == "Sheet: Staff\nName | Role\nGrace | Engineer"
    assert empty.text == ""
    assert document.metadata["sheets"] == ["Sales", "Staff", "Empty"]


@module_loop
async def test_csv_rows_as_lines(parser: SandboxedParser, made: Path) -> None:
    document = await parse(parser, files.csv_file(made))

    assert document.pages[0].text == (
        "name | city | note\nAda | London | likes; semicolons\nAlan | Wilmslow"
    )


@module_loop
async def test_html_keeps_the_article_and_drops_the_rest(
    parser: SandboxedParser, made: Path
) -> None:
    article = await parse(parser, files.html(made))
    contact = await parse(parser, files.small_html(made))

    text = article.pages[0].text
    assert "logged the storm on day 8" in text
    for noise in ("SCRIPT-NOISE", "FOOTER-NOISE", "Shop", "Site menu", "color:red"):
        assert noise not in text
    assert article.metadata["title"] == "Storm log"
    # the headings the kept text holds (not the menu's, which the main text leaves out)
    assert article.metadata["outline"] == [[0, 0, "The storm of 1903"]]
    assert article.notes == ()
    assert contact.pages[0].text == "Ask the front desk\n\nTea & coffee: 2nd floor"
    assert contact.metadata["title"] == "Contact"
    assert contact.notes == ("no main article text was found; all the page's visible text is used",)


@module_loop
async def test_text_files_are_decoded(parser: SandboxedParser, made: Path) -> None:
    notes = await parse(parser, files.markdown(made))
    legacy = await parse(parser, files.cp1252_text(made))
    wide = await parse(parser, files.utf16_text(made))

    assert notes.pages[0].text == "# Notes\n\n- first point\n- second point"
    assert notes.metadata["outline"] == [[0, 0, "Notes"]]
    assert legacy.pages[0].text == "Café prices rose 5 € in Zürich"
    assert legacy.notes == ("the file is not valid UTF-8; it was read as Windows-1252",)
    assert wide.pages[0].text == "Grüße aus Köln" and wide.notes == ()


def test_markdown_headings_are_the_hash_lines_outside_fenced_code() -> None:
    text = (
        "# Install\ntext\n## From source ##\n```sh\n# a shell comment\n```\n"
        "### Options#\n#no-space\n    # indented code\n# C# notes\n~~~\n# in tildes\n~~~\n"
        f"# {'long ' * 300}\n"  # over 1,000 characters: no heading
    )
    assert markdown_outline(text) == [
        [0, 0, "Install"],
        [0, 1, "From source"],
        [0, 2, "Options#"],
        [0, 0, "C# notes"],
    ]


@module_loop
async def test_a_file_with_no_text_fails_saying_why(parser: SandboxedParser, made: Path) -> None:
    blank = made / "blank.txt"
    blank.write_text("  \n\n \t ")

    assert await failure(parser, blank) == (
        "no text found: the file is empty or holds only blank space"
    )
    assert await failure(parser, files.pdf(made, ["", ""], name="blank.pdf")) == (
        "no text found: the PDF has no text layer and no images (blank pages or drawings only)"
    )


# ---- refused files ----------------------------------------------------------------


@module_loop
async def test_encrypted_pdf(parser: SandboxedParser, made: Path) -> None:
    reason = await failure(parser, files.encrypted_pdf(made))
    assert reason == "encrypted PDF: it needs a password to open; upload a copy without one"


@module_loop
async def test_damaged_pdf(parser: SandboxedParser, made: Path) -> None:
    assert await failure(parser, files.truncated_pdf(made)) == (
        "the file is damaged or is not a valid PDF"
    )


@module_loop
async def test_page_limit(made: Path) -> None:
    sandbox = SandboxedParser(timeout_seconds=30, memory_mb=512, max_pages=2, ocr=False)
    try:
        pdf = await failure(sandbox, files.pdf(made, ["a", "b", "c", "d", "e"], name="5.pdf"))
        sheets = await failure(sandbox, files.xlsx(made))
        slides = await parse(sandbox, files.pptx(made))
    finally:
        await sandbox.aclose()

    assert pdf == "the file has 5 pages; the limit is 2"
    assert sheets == "the file has 3 pages; the limit is 2"
    assert len(slides.pages) == 2


@module_loop
async def test_pixel_bomb_image(parser: SandboxedParser, made: Path) -> None:
    reason = await failure(parser, files.pixel_bomb_png(made))
    assert reason == (
        "the file needs more than 512 MB to parse (a decompression bomb?): "
        "the image has too many pixels"
    )


@module_loop
async def test_memory_bomb_fails_at_the_limit_and_the_server_goes_on(made: Path) -> None:
    sandbox = SandboxedParser(timeout_seconds=30, memory_mb=128, max_pages=800, ocr=False)
    bomb = files.docx_bomb(made, 100)  # 0.7 MB that unpacks to 100 MB of paragraphs
    assert bomb.stat().st_size < 2 * 1024 * 1024
    try:
        started = time.monotonic()
        reason = await failure(sandbox, bomb)
        elapsed = time.monotonic() - started
        after = await parse(sandbox, files.docx(made))
    finally:
        await sandbox.aclose()

    assert reason == MEMORY_REASON
    assert elapsed < 10
    assert after.pages[0].text.startswith("Welcome aboard")


@module_loop
async def test_zip_bomb_is_refused_without_unpacking(made: Path) -> None:
    sandbox = SandboxedParser(timeout_seconds=30, memory_mb=128, max_pages=800, ocr=False)
    try:
        reason = await failure(sandbox, files.docx_bomb(made, 300, name="big-bomb.docx"))
    finally:
        await sandbox.aclose()
    assert reason == f"{MEMORY_REASON}: it unpacks to 300 MB"


@module_loop
async def test_xml_entity_attacks_are_refused(
    parser: SandboxedParser, made: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN-93f1")
    refused = (
        "the file is not a valid Office document: its XML declares a DTD, which Office files"
        " never do (an XML entity bomb or attack?)"
    )

    assert await failure(parser, files.billion_laughs_docx(made)) == refused
    assert await failure(parser, files.xxe_docx(made, secret)) == refused
    try:
        document = await parse(parser, files.xxe_html(made, secret))
        seen = json.dumps([document.pages[0].text, document.notes, document.metadata])
        assert "Visible paragraph" in seen
    except ParseFailed as failed:
        seen = failed.reason
    assert "SECRET-TOKEN" not in seen


# ---- the sandbox itself -----------------------------------------------------------


@module_loop
async def test_a_crash_fails_that_file_only(faulty: SandboxedParser, tmp_path: Path) -> None:
    first = await parse(faulty, instruction(tmp_path, "pid"))
    again = await parse(faulty, instruction(tmp_path, "pid"))
    crash = await failure(faulty, instruction(tmp_path, "abort"))
    after = await parse(faulty, instruction(tmp_path, "pid"))

    assert again.pages[0].text == first.pages[0].text  # a warm child was reused
    assert crash == "the parser crashed on this file"
    assert after.pages[0].text != first.pages[0].text  # the crashed child was replaced


@module_loop
async def test_memory_exhaustion_in_the_child(faulty: SandboxedParser, tmp_path: Path) -> None:
    assert await failure(faulty, instruction(tmp_path, "memory")) == MEMORY_REASON
    assert await failure(faulty, instruction(tmp_path, "sigkill")) == MEMORY_REASON


@module_loop
async def test_timeout_kills_the_child_and_what_it_started(
    faulty: SandboxedParser, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    reason = await failure(faulty, instruction(tmp_path, f"grandchild {pid_file}"))
    elapsed = time.monotonic() - started
    ticker.cancel()

    assert reason == "parsing took longer than 1 s"
    assert 1.0 <= elapsed < 4
    assert ticks >= 10  # the event loop was free while the child worked
    sleeper = int(pid_file.read_text())
    for _ in range(50):
        if gone(sleeper):
            break
        await asyncio.sleep(0.1)
    assert gone(sleeper)


@module_loop
async def test_child_limits_and_environment(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql://admin:hunter2@db/threadline")
    sandbox = SandboxedParser(1.0, 128, 800, ocr=False, pool_size=1, command=FAULT_CHILD)
    try:
        limits = json.loads((await parse(sandbox, instruction(tmp_path, "limits"))).pages[0].text)
        env = json.loads((await parse(sandbox, instruction(tmp_path, "env"))).pages[0].text)
    finally:
        await sandbox.aclose()

    assert limits["RLIMIT_AS"] == [128 * 1024 * 1024] * 2
    assert limits["RLIMIT_CORE"] == [0, 0]
    assert limits["RLIMIT_FSIZE"] == [1024 * 1024] * 2
    assert limits["RLIMIT_NOFILE"][0] <= 64
    assert 0 < limits["RLIMIT_CPU"][0] <= 5
    assert not any(key.startswith("THREADLINE_") for key in env)
    assert env["OMP_THREAD_LIMIT"] == "1"


@module_loop
async def test_files_parse_concurrently(parser: SandboxedParser, made: Path) -> None:
    paths = [files.docx(made), files.pptx(made), files.csv_file(made), files.markdown(made)]
    documents = await asyncio.gather(*(parse(parser, path) for path in paths))
    assert [len(document.pages) for document in documents] == [1, 2, 1, 1]


@module_loop
async def test_rapidocr_with_too_little_memory_says_what_to_set(made: Path) -> None:
    """OpenCV and onnxruntime need more address space than a small limit allows: the
    document says which setting to raise, rather than the child crashing on import."""
    sandbox = SandboxedParser(30, 512, 800, ocr=True, ocr_engine="rapidocr")
    try:
        image = await failure(sandbox, files.png(made))
    finally:
        await sandbox.aclose()
    assert image == (
        "no text found: the file is an image and "
        "OCR needs documents.parse_memory_mb of at least 2048"
    )


def test_rapidocr_lines_read_top_to_bottom_left_to_right() -> None:
    from threadline.ingestion.formats.rapid_ocr import lines_of

    def box(left: float, top: float, right: float, bottom: float) -> list[list[float]]:
        return [[left, top], [right, top], [right, bottom], [left, bottom]]

    boxes = [
        (box(300, 102, 500, 130), "world"),
        (box(10, 200, 200, 230), "second line"),
        (box(10, 100, 250, 128), "hello"),
        (box(10, 160, 90, 170), "  "),
    ]
    assert lines_of(boxes) == ["hello world", "second line"]
