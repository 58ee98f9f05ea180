"""Headings from font-size cues (issue 18): a PDF without bookmarks still gives each page
the heading a reader sees, for contextual chunks."""

from __future__ import annotations

from pathlib import Path

from threadline.ingestion.formats import pdf
from threadline.ingestion.formats.job import Job
from threadline.ingestion.formats.pdf_headings import headings_from_fonts
from threadline.services.retrieval_context import page_headings

BODY = [(page, 10.0, f"body text line {i} of page {page}") for page in range(6) for i in range(20)]


def test_lines_set_larger_than_the_body_are_headings_by_size():
    lines = [
        (0, 14.0, "1 Introduction"),
        *BODY,
        (2, 12.0, "1.1 Getting started"),
        (4, 14.0, "2 Reference"),
        *[(page, 12.0, "The Widget Manual") for page in range(6)],  # a running header
        (5, 16.0, "ˆ"),  # an accent set large is no heading
    ]
    assert headings_from_fonts(lines) == [
        [0, 0, "1 Introduction"],
        [2, 1, "1.1 Getting started"],
        [4, 0, "2 Reference"],
    ]
    # smaller lines (footnotes) are no headings; nor is anything when large lines abound
    assert headings_from_fonts([*BODY, (1, 8.0, "1 a footnote")]) == []
    assert headings_from_fonts([(p, 14.0, t) for p, _, t in BODY[:40]] + BODY[40:60]) == []
    assert headings_from_fonts([]) == []


def _report(path: Path, outline: bool) -> Path:
    """Three pages, each with a 16-point heading over 10-point text; bookmarks optional."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    drawing = canvas.Canvas(str(path), pagesize=A4)
    for number, heading in enumerate(("Installing", "Configuring", "Upgrading")):
        if outline:
            drawing.bookmarkPage(f"s{number}")
            drawing.addOutlineEntry(f"Part {number + 1}", f"s{number}", level=0)
        drawing.setFont("Helvetica-Bold", 16)
        drawing.drawString(72, 760, heading)
        drawing.setFont("Helvetica", 10)
        for line in range(12):
            drawing.drawString(72, 730 - 14 * line, f"{heading} step {line}: do the next thing.")
        drawing.showPage()
    drawing.save()
    return path


def test_a_pdf_without_bookmarks_gets_its_headings_from_font_sizes(tmp_path: Path):
    job = Job("report.pdf", max_pages=10, memory_mb=512, timeout_seconds=30, ocr=False)
    parsed = pdf.extract(_report(tmp_path / "plain.pdf", outline=False), job)
    outline = parsed.metadata["outline"]
    assert outline == [[0, 0, "Installing"], [1, 0, "Configuring"], [2, 0, "Upgrading"]]
    assert page_headings(outline, 3) == [
        "Installing",
        "Installing; Configuring",
        "Configuring; Upgrading",
    ]
    # bookmarks, when there are some, are the outline
    parsed = pdf.extract(_report(tmp_path / "marked.pdf", outline=True), job)
    assert [title for _, _, title in parsed.metadata["outline"]] == ["Part 1", "Part 2", "Part 3"]
