"""Real files for the parsing tests, made at test time: what users upload, and what an
attacker would. Each builder writes into `directory` and returns the file's path.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OCR_PHRASE = "INVOICE TOTAL 4217 EUROS"
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def pdf(directory: Path, pages: Sequence[str], *, name: str = "report.pdf") -> Path:
    """One page per text, on A4. The second page is landscape; the third has /Rotate 90 on
    a landscape media box (reportlab's doing), so it is displayed portrait."""
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.pdfgen import canvas

    path = directory / name
    drawing = canvas.Canvas(str(path), pagesize=A4)
    drawing.setTitle("Quarterly report")
    drawing.setAuthor("Ada Lovelace")
    for number, text in enumerate(pages):
        drawing.setPageSize(landscape(A4) if number == 1 else A4)
        drawing.setPageRotation(90 if number == 2 else 0)
        for line, words in enumerate(text.split("\n")):
            drawing.drawString(72, 700 - 16 * line, words)
        drawing.showPage()
    drawing.save()
    return path


def text_image(text: str = OCR_PHRASE, *, size: tuple[int, int] = (1800, 400)) -> Image.Image:
    """Large, clear black text on white: what Tesseract reads without trouble."""
    image = Image.new("L", size, 255)
    font = ImageFont.load_default(size=72)
    ImageDraw.Draw(image).text((60, 150), text, fill=0, font=font)
    return image


def scanned_pdf(directory: Path) -> Path:
    """Page 1 has a text layer; page 2 is only a picture of text (a scan); page 3 is blank."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path = directory / "scan.pdf"
    drawing = canvas.Canvas(str(path), pagesize=A4)
    drawing.drawString(72, 700, "Cover page with a real text layer")
    drawing.showPage()
    picture = text_image()
    # 1800 px across 432 pt: 300 dpi, as a scanner would make it
    drawing.drawImage(ImageReader(picture), 72, 500, width=432, height=96)
    drawing.showPage()
    drawing.showPage()
    drawing.save()
    return path


def image_only_pdf(directory: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path = directory / "only-scan.pdf"
    drawing = canvas.Canvas(str(path), pagesize=A4)
    drawing.drawImage(ImageReader(text_image()), 72, 500, width=432, height=96)
    drawing.showPage()
    drawing.save()
    return path


def encrypted_pdf(directory: Path) -> Path:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=pdf(directory, ["Top secret plans"], name="plain.pdf"))
    writer.encrypt(user_password="open sesame", owner_password="owner")
    path = directory / "locked.pdf"
    with path.open("wb") as f:
        writer.write(f)
    return path


def truncated_pdf(directory: Path) -> Path:
    whole = pdf(directory, ["First page", "Second page", "Third page"], name="whole.pdf")
    path = directory / "truncated.pdf"
    path.write_bytes(whole.read_bytes()[:700])
    return path


def docx(directory: Path) -> Path:
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.title = "Onboarding guide"
    document.add_heading("Welcome aboard", level=1)
    document.add_paragraph("Badges are collected at the front desk.")
    document.add_heading("Meeting rooms", level=2)
    table = document.add_table(rows=3, cols=3)
    cells = [["Room", "Floor", "Seats"], ["Orion", "2", "8"], ["Lyra", "5", "12"]]
    for row, values in zip(table.rows, cells, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    merged = table.add_row().cells
    merged[0].merge(merged[2]).text = "All rooms close at 22:00"
    document.add_paragraph("Lunch is served at noon.")
    path = directory / "guide.docx"
    document.save(str(path))
    return path


def pptx(directory: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])
    first.shapes.title.text = "Roadmap 2027"
    first.placeholders[1].text = "Ship the sandbox"
    first.notes_slide.notes_text_frame.text = "Mention the memory limits"
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Budget"
    shape = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1))
    for (row, col), value in zip(
        [(0, 0), (0, 1), (1, 0), (1, 1)], ["Team", "Cost", "Parsing", "42k"], strict=True
    ):
        shape.table.cell(row, col).text = value
    path = directory / "roadmap.pptx"
    presentation.save(str(path))
    return path


def xlsx(directory: Path) -> Path:
    from openpyxl import Workbook

    workbook = Workbook()
    sales = workbook.active
    assert sales is not None
    sales.title = "Sales"
    sales.append(["Region", "Units", "Price", "Shipped"])
    sales.append(["North", 120, 9.5, dt.datetime(2026, 3, 1)])
    sales.append(["South", 80, 10.0, dt.datetime(2026, 3, 2, 14, 30)])
    sales.append([])
    sales.append(["Total", 200, None, None])
    sales.cell(row=1, column=10, value=None)
    staff = workbook.create_sheet("Staff")
    staff.append(["Name", "Role"])
    staff.append(["Grace", "Engineer"])
    workbook.create_sheet("Empty")
    path = directory / "sales.xlsx"
    workbook.save(str(path))
    return path


def csv_file(directory: Path) -> Path:
    path = directory / "people.csv"
    path.write_text('name;city;note\nAda;London;"likes; semicolons"\nAlan;Wilmslow;\n')
    return path


def html(directory: Path) -> Path:
    paragraphs = "".join(
        f"<p>The lighthouse keeper logged the storm on day {day}; waves reached the lamp"
        " room and the keeper wrote that the old brass lens survived intact.</p>"
        for day in range(1, 9)
    )
    page = (
        "<!doctype html><html><head><title>Storm log</title><style>p{color:red}</style>"
        "<script>var tracking = 'SCRIPT-NOISE';</script></head><body>"
        "<nav><h2>Site menu</h2><a href='/'>Home</a> <a href='/shop'>Shop</a></nav>"
        f"<article><h1>The storm of 1903</h1>{paragraphs}</article>"
        "<footer>Copyright FOOTER-NOISE</footer></body></html>"
    )
    path = directory / "storm.html"
    path.write_text(page)
    return path


def small_html(directory: Path) -> Path:
    """All its text is in a footer, which trafilatura drops as boilerplate."""
    path = directory / "contact.htm"
    path.write_text(
        "<html><head><title>Contact</title><script>SCRIPT-NOISE</script></head>"
        "<body><footer><p>Ask the front desk</p><p>Tea &amp; coffee: 2nd floor</p></footer>"
        "</body></html>"
    )
    return path


def markdown(directory: Path) -> Path:
    path = directory / "notes.md"
    path.write_text("# Notes\n\n- first point\n- second point\n")
    return path


def cp1252_text(directory: Path) -> Path:
    path = directory / "legacy.txt"
    path.write_bytes("Café prices rose 5 € in Zürich".encode("cp1252"))
    return path


def utf16_text(directory: Path) -> Path:
    path = directory / "wide.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + "Grüße aus Köln".encode("utf-16-le"))
    return path


def png(directory: Path, *, name: str = "receipt.png") -> Path:
    path = directory / name
    text_image().save(path, format="PNG")
    return path


def pixel_bomb_png(directory: Path) -> Path:
    """A small PNG that decodes to 10000 x 10000 pixels."""
    path = directory / "huge.png"
    Image.new("1", (10000, 10000), 1).save(path, format="PNG")
    return path


# ---- hostile Office packages ------------------------------------------------------


def _rewrite_docx(
    directory: Path, name: str, write_document: Callable[[zipfile.ZipFile], None]
) -> Path:
    """A real .docx whose word/document.xml is replaced by `write_document`."""
    import docx as python_docx

    base = io.BytesIO()
    python_docx.Document().save(base)
    path = directory / name
    with (
        zipfile.ZipFile(base) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target,
    ):
        for info in source.infolist():
            if info.filename == "word/document.xml":
                write_document(target)
            else:
                target.writestr(info, source.read(info))
    return path


def docx_bomb(directory: Path, megabytes: int, *, name: str = "bomb.docx") -> Path:
    """A .docx of well-formed paragraphs that unpacks to `megabytes` MB of XML."""

    def write(target: zipfile.ZipFile) -> None:
        paragraph = b"<w:p><w:r><w:t>" + b"bomb " * 40 + b"</w:t></w:r></w:p>"
        chunk = paragraph * (1024 * 1024 // len(paragraph))
        with target.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(f'<?xml version="1.0"?><w:document xmlns:w="{W_NS}"><w:body>'.encode())
            for _ in range(megabytes):
                part.write(chunk)
            part.write(b"</w:body></w:document>")

    return _rewrite_docx(directory, name, write)


def _document_with_doctype(doctype: str, body_text: str) -> str:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE w:document [\n{doctype}\n]>\n'
        f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>{body_text}</w:t></w:r></w:p>'
        "</w:body></w:document>"
    )


def billion_laughs_docx(directory: Path) -> Path:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    ]
    xml = _document_with_doctype("\n".join(entities), "&lol9;")
    return _rewrite_docx(
        directory, "laughs.docx", lambda target: target.writestr("word/document.xml", xml)
    )


def xxe_docx(directory: Path, secret_file: Path) -> Path:
    xml = _document_with_doctype(
        f'<!ENTITY xxe SYSTEM "file://{secret_file}">', "Before &xxe; after"
    )
    return _rewrite_docx(
        directory, "xxe.docx", lambda target: target.writestr("word/document.xml", xml)
    )


def xxe_html(directory: Path, secret_file: Path) -> Path:
    path = directory / "xxe.html"
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret_file}">]>'
        "<html><body><p>Visible paragraph &xxe; end.</p></body></html>"
    )
    return path


def plain_zip(directory: Path, name: str) -> Path:
    path = directory / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "just a zip")
    return path
