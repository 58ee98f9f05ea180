"""The chunker: bounded chunks on word boundaries, exact pages, overlap within a page."""

from __future__ import annotations

from itertools import pairwise

from threadline.domain.documents import ParsedPage
from threadline.ingestion.chunking import chunk_pages


def sentences(page: int, count: int) -> str:
    return " ".join(f"Sentence {page}.{i} has some words in it." for i in range(count))


def test_chunks_are_bounded_and_never_cross_a_page():
    pages = [ParsedPage(i, sentences(i, 40)) for i in range(3)]
    chunks = chunk_pages(7, pages, size=300, overlap=60)
    assert all(len(c.text) <= 300 for c in chunks)
    assert all(c.page_start == c.page_end for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert {c.document_id for c in chunks} == {7}
    for page in range(3):
        text = " ".join(c.text for c in chunks if c.page_start == page)
        for i in range(40):
            assert f"Sentence {page}.{i} has" in text


def test_consecutive_chunks_of_a_page_overlap_at_a_word_boundary():
    chunks = chunk_pages(1, [ParsedPage(0, sentences(0, 40))], size=300, overlap=60)
    for before, after in pairwise(chunks):
        head = after.text.split(". ")[0]
        assert head in before.text
        assert after.text[0].isupper()


def test_paragraphs_and_blank_pages():
    pages = [
        ParsedPage(0, "Title\n\nFirst   paragraph\nwraps here."),
        ParsedPage(1, "   "),
        ParsedPage(2, "x" * 700),
    ]
    chunks = chunk_pages(1, pages, size=300, overlap=0)
    assert chunks[0].text == "Title First paragraph wraps here."
    assert [c.page_start for c in chunks] == [0, 2, 2, 2]
    assert "".join(c.text for c in chunks[1:]) == "x" * 700
    assert chunk_pages(1, [ParsedPage(0, "")]) == []
