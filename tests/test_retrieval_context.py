"""Documents know what they are (issue 18): each chunk is searched with its file name, its
document's title and its section heading, and a question that names one of two nearly
identical documents gets that document's pages first. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.helpers import make_tenant, texts_as_chunks
from threadline.container import Container
from threadline.domain.documents import Chunk, DocumentState
from threadline.services.documents import Upload
from threadline.services.retrieval import Retriever
from threadline.services.retrieval_context import (
    chunk_context,
    contexts,
    located_headings,
    page_headings,
)
from threadline.services.retrieval_names import MAX_DOCUMENTS, named_documents, naming
from threadline.storage.chunks import SqlChunkIndex

# ---- headings and names, pure ----------------------------------------------------------


def test_each_page_gets_the_outline_path_open_on_it_and_the_sections_starting_there():
    outline = [
        [0, 0, "1 Introduction"],
        [1, 0, "5 Shell Variables"],
        [1, 1, "5.1 Bourne Shell Variables"],
        [3, 1, "5.2 Bash Variables"],
        ["x", 0, "broken"],  # malformed entries are skipped, not fatal
        [99, 0, "past the end"],
    ]
    assert page_headings(outline, 5) == [
        "1 Introduction",
        "1 Introduction; 5 Shell Variables; 5.1 Bourne Shell Variables",
        "5 Shell Variables › 5.1 Bourne Shell Variables",
        "5 Shell Variables › 5.1 Bourne Shell Variables; 5.2 Bash Variables",
        "5 Shell Variables › 5.2 Bash Variables",
    ]
    assert page_headings(None, 2) == ["", ""]
    assert page_headings("not an outline", 1) == [""]
    assert (
        chunk_context("bashref.pdf", "Bash  Reference\nManual", "5.2 Bash Variables")
        == "bashref.pdf · Bash Reference Manual · 5.2 Bash Variables"
    )
    assert chunk_context("notes.txt", "notes.txt", "") == "notes.txt"


def test_a_one_page_documents_chunks_get_the_headings_found_in_their_text():
    """A Word file or a Markdown file is one page: its headings are found in the chunks'
    text, in order, so each chunk gets the section it is in, not the first one."""
    outline = [
        [0, 0, "Installing"],
        [0, 1, "From  source"],  # spaced differently from the text: still found
        [0, 1, "Not in the text at all"],  # skipped: it does not hold the ones after it
        [0, 0, "Configuring"],
        [0, 1, "Options"],
    ]
    chunks = [
        "Installing\nThe package installs with pip. From source",
        "From source builds need a compiler and make.",
        "More about compilers and their flags, still under the same section.",
        "Configuring\nEdit the file.\nOptions\nEach option is a line.",
        "The last options, still under Options.",
    ]
    assert located_headings(outline, chunks) == [
        "Installing; From source",
        "Installing › From source",
        "Installing › From source",
        "Installing › From source; Configuring; Options",
        "Configuring › Options",
    ]
    assert located_headings(None, ["text"]) == [""]
    assert located_headings([[1, 0, "another page"], "junk"], ["another page"]) == [""]
    lines = contexts(
        "guide.docx", {"title": "Guide", "outline": outline}, [(0, c) for c in chunks], 1
    )
    assert lines[2] == "guide.docx · Guide · Installing › From source"
    # several pages: the heading is the page's, as for a PDF
    pdf = contexts("a.pdf", {"outline": [[1, 0, "Two"]]}, [(0, "x"), (1, "y")], 2)
    assert pdf == ["a.pdf", "a.pdf · Two"]


LABELS = {
    1: ("bash.pdf", None),
    2: ("bashref.pdf", "Bash Reference Manual"),
    3: ("gnuplot.pdf", "gnuplot documentation"),
    4: ("gri.pdf", "Gri"),
    5: ("gcrypt.pdf", "The Libgcrypt Reference Manual"),
    6: ("R-intro.pdf", "An Introduction to R"),
    7: ("R-lang.pdf", "R Language Definition"),
}


@pytest.mark.parametrize(
    ("question", "named"),
    [
        ("In the Bash Reference Manual, what is HISTCONTROL?", [2]),
        ("In bash.pdf, what is HISTCONTROL?", [1]),
        ("What does the bashref say about pipefail?", [2]),
        # "bash" is in both documents' names: it names neither
        ("How do I make bash keep duplicate history lines out?", []),
        # ... but a man page's name with its section names it
        ("In the bash(1) man page, what is FIGNORE?", [1]),
        ("What does the bash man page say about FIGNORE?", []),
        ("In bash(1), what does set -o print?", [1]),
        ("Is bash (1) or bash(12345) a section?", []),
        ("In gnuplot (not Gri), how is logscale done?", [3]),
        ("Unlike Gri, what does gnuplot do with logscale?", [3]),
        ("What does the Libgcrypt manual say about secure memory?", [5]),
        # a title word written as a plain word in the question is no name
        ("libgcrypt secure memory", []),
        ("According to An Introduction to R, where is .Rprofile read?", [6]),
        ("In R-lang, what is a promise?", [7]),
        ("How do I rotate axis labels?", []),
    ],
)
def test_a_question_names_the_document_it_is_about(question, named):
    assert named_documents(question, LABELS) == named


def test_nothing_is_named_when_the_question_names_every_document_or_there_is_one():
    both = {1: ("gnuplot.pdf", None), 2: ("gri.pdf", None)}
    assert named_documents("gnuplot or gri: which plots faster?", both) == []
    assert named_documents("In gnuplot.pdf, what is rand?", {1: ("gnuplot.pdf", None)}) == []


# ---- storage: the context column, the title --------------------------------------------


async def test_a_chunk_is_found_by_words_of_its_context_and_the_title_is_kept(db):
    a, b = await make_tenant(db, "org-a"), await make_tenant(db, "org-b")
    index = SqlChunkIndex(db)
    manual, page = await a.document("bashref.pdf"), await a.document("bash.pdf")
    text = "A value of ignoredups causes lines matching the previous entry not to be saved."
    await index.replace_chunks(
        a.org,
        manual,
        [Chunk(manual, 0, 90, 90, text, "bashref.pdf · Bash Reference Manual · Bash Variables")],
        None,
        None,
        title="Bash Reference Manual",
    )
    await index.replace_chunks(
        a.org, page, [Chunk(page, 0, 15, 15, text, "bash.pdf · Shell Variables")], None, None
    )
    # the same text in both; only the context tells them apart
    hits = await index.search_text(a.org, [manual, page], "reference manual ignoredups", 5)
    assert [h.document_id for h in hits] == [manual, page]
    hits = await index.search_text(a.org, [manual, page], "shell ignoredups", 5)
    assert [h.document_id for h in hits] == [page, manual]
    # a word only in the context finds the chunk; the stored text is the text alone
    [hit] = await index.search_text(a.org, [manual, page], "manual", 5)
    assert hit.document_id == manual and hit.text == text
    [chunk] = await index.document_chunks(a.org, manual)
    assert chunk.context == "bashref.pdf · Bash Reference Manual · Bash Variables"
    assert await index.document_labels(a.org, [manual, page]) == {
        manual: ("bashref.pdf", "Bash Reference Manual"),
        page: ("bash.pdf", None),
    }
    assert await index.document_labels(b.org, [manual, page]) == {}


# ---- end to end: real PDFs with an outline, through ingestion and the retriever ---------

PARAGRAPHS = [
    "The frobnicate option makes the widget spin twice before it settles.",
    "The quiet option keeps the widget from printing anything at all.",
    "The colour option paints the widget in the given colour.",
]


def _manual(directory: Path, name: str, title: str | None, outline: bool) -> Path:
    """Three pages with the same paragraphs: one twin has a title and bookmarks."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    path = directory / name
    drawing = canvas.Canvas(str(path), pagesize=A4)
    if title:
        drawing.setTitle(title)
    for number, paragraph in enumerate(PARAGRAPHS):
        if outline:
            key = f"s{number}"
            drawing.bookmarkPage(key)
            drawing.addOutlineEntry(f"Option {number + 1}", key, level=0)
        drawing.drawString(72, 700, paragraph)
        drawing.showPage()
    drawing.save()
    return path


async def test_a_question_naming_one_of_two_twin_documents_gets_that_ones_page_first(
    tmp_path: Path, db_url: str
):

    container = Container(make_settings(tmp_path, db_url))
    await container.start(worker=False)
    try:
        caller = await container.accounts.operator()
        ids = {}
        for name, title, outline in (
            ("widget.pdf", None, False),
            ("widgetref.pdf", "Widget Reference Manual", True),
        ):
            path = _manual(tmp_path, name, title, outline)
            upload = Upload(name, "application/pdf", io.BytesIO(path.read_bytes()))
            [outcome] = await container.documents.add(caller, [upload])
            assert outcome.document is not None
            ids[name] = outcome.document.id
        await container.worker.run_until_idle()
        for document_id in ids.values():
            document = await container.documents.get_document(caller, document_id)
            assert document.state is DocumentState.COMPLETE

        chunks = await container.chunk_index.document_chunks(caller.org_id, ids["widgetref.pdf"])
        assert [c.context for c in chunks] == [
            "widgetref.pdf · Widget Reference Manual · Option 1",
            "widgetref.pdf · Widget Reference Manual · Option 1; Option 2",
            "widgetref.pdf · Widget Reference Manual · Option 2; Option 3",
        ]
        scope = sorted(ids.values())
        for question, expected in (
            ("In the Widget Reference Manual, what does frobnicate do?", "widgetref.pdf"),
            ("In widget.pdf, what does frobnicate do?", "widget.pdf"),
        ):
            hits = await container.retriever.search(caller.org_id, scope, question, limit=4)
            assert (hits[0].document_id, hits[0].page_start) == (ids[expected], 0), question
            assert hits[0].text == PARAGRAPHS[0]
    finally:
        await container.stop()


async def test_a_word_documents_chunks_carry_the_heading_they_sit_under(
    tmp_path: Path, db_url: str
):
    import docx as python_docx

    document = python_docx.Document()
    for heading, topic in (("Installing", "install"), ("Configuring", "configure")):
        document.add_heading(heading, level=1)
        for n in range(4):
            document.add_paragraph(f"Step {n} to {topic} the widget, with enough words to fill.")
    path = tmp_path / "widget.docx"
    document.save(str(path))
    settings = make_settings(
        tmp_path, db_url, documents={"chunk_chars": 150, "chunk_overlap_chars": 0}
    )
    container = Container(settings)
    await container.start(worker=False)
    try:
        caller = await container.accounts.operator()
        kind = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        upload = Upload("widget.docx", kind, io.BytesIO(path.read_bytes()))
        [outcome] = await container.documents.add(caller, [upload])
        assert outcome.document is not None
        await container.worker.run_until_idle()
        chunks = await container.chunk_index.document_chunks(caller.org_id, outcome.document.id)
    finally:
        await container.stop()
    assert len(chunks) >= 4
    for chunk in chunks:  # each chunk names the section its text is from
        section = "Configuring" if "configure" in chunk.text else "Installing"
        assert chunk.context.startswith("widget.docx · "), chunk.context
        assert chunk.context.split(" · ")[-1].split("; ")[-1].endswith(section), chunk


def test_the_words_that_name_a_document_are_left_out_of_its_own_search():
    assert naming("In the Bash Reference Manual, what is HISTCONTROL?", LABELS) == (
        [2],
        "In the , what is HISTCONTROL?",
    )
    # the names of the documents set aside and the words that say what kind of document
    # it is ("man page") go too; symbols stay whole
    assert naming("In gnuplot (not Gri), how is logscale done?", LABELS) == (
        [3],
        "In (not ), how is logscale done?",
    )
    assert naming("In the bash man page (bash.pdf), what is EXECIGNORE?", LABELS) == (
        [1],
        "In the bash , what is EXECIGNORE?",
    )
    assert naming("According to An Introduction to R, what is R_HOME?", LABELS) == (
        [6],
        "to , what is R_HOME?",
    )
    # a question that is only a name keeps its words
    assert naming("bashref.pdf", LABELS) == ([2], "bashref.pdf")
    assert naming("How do I rotate axis labels?", LABELS) == ([], "How do I rotate axis labels?")


def test_a_library_bigger_than_a_conversation_is_not_searched_for_names():
    labels = {i: (f"doc-{i}.pdf", f"Product{i} Manual") for i in range(MAX_DOCUMENTS + 1)}
    assert naming("In doc-7.pdf, what is it?", labels) == ([], "In doc-7.pdf, what is it?")
    del labels[MAX_DOCUMENTS]
    assert naming("In doc-7.pdf, what is it?", labels)[0] == [7]


async def test_within_a_named_document_the_page_covering_the_question_comes_first(db):
    tenant = await make_tenant(db, "org-named")
    index = SqlChunkIndex(db)
    texts = [
        "frobnicator frobnicator frobnicator frobnicator: the frobnicator overview",
        "To rotate the frobnicator quietly, hold the hush key.",
        *[f"rotate it quietly, as every page of this manual says ({i})" for i in range(4)],
    ]
    alpha, beta = await tenant.document("alpha.pdf"), await tenant.document("beta.pdf")
    for document in (alpha, beta):
        chunks = texts_as_chunks(document, texts)
        await index.replace_chunks(tenant.org, document, chunks, None, None)
    retriever = Retriever(index, None)
    question = "how do I rotate the frobnicator quietly"
    # fused ranks alone: the page that repeats the one rare word comes first
    plain = await retriever.search(tenant.org, [alpha], question, limit=2)
    assert plain[0].ordinal == 0
    # named: alpha's pages first, the one that has all of the question's words at the top
    hits = await retriever.search(tenant.org, [alpha, beta], f"In alpha.pdf, {question}?", limit=3)
    assert (hits[0].document_id, hits[0].ordinal) == (alpha, 1)
    assert {h.document_id for h in hits} == {alpha}
