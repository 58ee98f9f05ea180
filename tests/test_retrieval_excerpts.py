"""What the chat is given (issue 18): neighbouring chunks that both rank are one excerpt
(services/retrieval_excerpts.py: the overlap said once, the page span covering both, the
prompt no larger than the first `limit` chunks were); tables of contents and indexes come
after the pages they point to; a short query found as written outranks its words apart."""

from __future__ import annotations

from tests.helpers import make_tenant, texts_as_chunks
from threadline.domain.documents import Chunk, ChunkHit
from threadline.services.retrieval import Retriever, pointers_last
from threadline.services.retrieval_excerpts import MAX_OVERLAP, excerpts, joined
from threadline.storage.chunks import SqlChunkIndex


def hit(document: int, ordinal: int, text: str, page: int | None = None) -> ChunkHit:
    page = ordinal if page is None else page
    return ChunkHit(
        document * 100 + ordinal, document, f"d{document}.pdf", ordinal, page, page, text, 0.0
    )


SHARED = "the sentence both chunks hold, "
A = "First part of the passage, ending in " + SHARED
B = SHARED + "and the rest of the passage after it."


def test_joined_says_the_overlap_once_and_keeps_text_without_one_apart():
    assert joined(A, B) == "First part of the passage, ending in " + B
    assert joined("one page.", "next page.") == "one page.\nnext page."
    # a short coincidence is no overlap
    assert joined("ends with the", "the start") == "ends with the\nthe start"
    # the overlap is looked for within MAX_OVERLAP characters only (a repeated letter
    # would otherwise make every position a candidate: quadratic in a chunk's size)
    assert joined("a" * 100_000, "a" * 100_000) == "a" * (200_000 - MAX_OVERLAP)
    assert joined("a" * 100_000 + "b", "a" * 100_000) == "a" * 100_000 + "b\n" + "a" * 100_000
    long_shared = "".join(f"{n:05d}" for n in range(1000))  # 5,000 characters, no repeats
    assert joined("x" + long_shared, long_shared + "y") == f"x{long_shared}\n{long_shared}y"


def test_a_ranked_neighbour_joins_the_better_chunk_and_what_it_saves_goes_on():
    ranked = [hit(1, 4, B, 3), hit(2, 0, "x" * 60), hit(1, 3, A, 3), hit(3, 7, "y" * 20)]
    got = excerpts(ranked, limit=3)
    assert [(h.document_id, h.ordinal) for h in got] == [(1, 4), (2, 0), (3, 7)]
    first = got[0]
    assert first.text == joined(A, B)  # the earlier chunk's text comes first
    assert (first.page_start, first.page_end) == (3, 3)
    assert first.chunk_id == 104  # the better-ranked chunk's identity and rank
    assert sum(len(h.text) for h in got) <= sum(len(h.text) + 1 for h in ranked[:3])


def test_excerpts_hold_no_more_text_than_the_first_chunks_did():
    ranked = [hit(1, 0, "a" * 100, 0), hit(1, 1, "b" * 100, 0), hit(2, 0, "c" * 300)]
    # 1/0 and 1/1 join (201 chars); 2/0 would take the text to 501 > 2 x 101: it waits
    got = excerpts(ranked, limit=2)
    assert [(h.document_id, h.ordinal, len(h.text)) for h in got] == [(1, 0, 201)]
    # nor does a later, shorter chunk jump the queue
    got = excerpts([*ranked, hit(3, 0, "d")], limit=2)
    assert [h.document_id for h in got] == [1]


def test_an_excerpt_joins_two_chunks_of_one_page_at_most_and_other_documents_never():
    ranked = [
        hit(1, 5, "m" * 50, 2),
        hit(1, 6, "n" * 50, 2),
        hit(1, 4, "l" * 50, 2),
        hit(2, 6, "o" * 50, 2),
        hit(1, 7, "p" * 50, 3),  # next to 1/6, but on the next page: cited apart
    ]
    got = excerpts(ranked, limit=5)
    assert [(h.document_id, h.ordinal, len(h.text)) for h in got] == [
        (1, 5, 101),
        (1, 4, 50),
        (2, 6, 50),
        (1, 7, 50),
    ]
    assert excerpts([], limit=3) == []
    assert [h.ordinal for h in excerpts(ranked, limit=1)] == [5]


INDEX_PAGE = (
    "R_ARCH . . . . . . . . . . . . . . . . 9, 10\nR_BROWSER . . . . . . . . . . . . . . 57\n"
    "R_DISABLE_HTTPD . . . . . . . . . . . . . . . 5\nR_GSCMD . . . . . . . . . . . . . 45"
)
CONTENTS = "1 Obtaining R . . . . . . . . . . . . . . . . . . . . . . . . . 1\n1.1 Getting sources"


def test_tables_of_contents_and_indexes_come_after_the_pages_they_point_to():
    ranked = [
        hit(1, 90, INDEX_PAGE),
        hit(1, 2, CONTENTS),
        hit(1, 10, "Setting R_DISABLE_HTTPD to a non-empty value disables the help server."),
        hit(2, 3, "A sentence ends here. Then... another one, with an ellipsis."),
    ]
    assert [h.ordinal for h in pointers_last(ranked)] == [10, 3, 90, 2]
    assert pointers_last(ranked[2:]) == ranked[2:]


async def test_the_chat_gets_a_passage_split_over_two_chunks_as_one_excerpt(db):
    tenant = await make_tenant(db, "org-excerpts")
    index = SqlChunkIndex(db)
    document = await tenant.document("manual.pdf")
    texts = [
        "Unrelated introduction about installing the package.",
        "To rotate the frobnicator, hold the hush key while the frobnicator",
        "the frobnicator turns: the frobnicator then rotates quietly.",
        "Another frobnicator page, about cleaning.",
        "Licence terms.",
        "frobnicator rotates quietly . . . . . . . . . . . . . . . . . . . . . . . . . 2",
    ]
    pages = [0, 1, 1, 2, 3, 4]  # the passage's two chunks are on one page
    chunks = [
        Chunk(document, i, page, page, text)
        for i, (page, text) in enumerate(zip(pages, texts, strict=True))
    ]
    await index.replace_chunks(tenant.org, document, chunks, None, None)
    hits = await Retriever(index, None).search(
        tenant.org, [document], "frobnicator rotates quietly", limit=3
    )
    joined_text = texts[1] + "\n" + texts[2]
    assert joined_text in [h.text for h in hits]
    excerpt = next(h for h in hits if h.text == joined_text)
    assert (excerpt.page_start, excerpt.page_end) == (1, 1)
    assert len({h.chunk_id for h in hits}) == len(hits)
    assert 5 not in [h.ordinal for h in hits]  # the index entry waits behind the pages
    off = await Retriever(index, None).search(
        tenant.org,
        [document],
        "frobnicator rotates quietly",
        limit=3,
        excerpts=False,
        pointers=False,
    )
    assert all(h.page_start == h.page_end for h in off)  # single chunks when switched off
    assert 5 in [h.ordinal for h in off]  # and the index entry among them


async def test_a_short_query_found_as_written_outranks_its_words_apart(db):
    tenant = await make_tenant(db, "org-phrase")
    index = SqlChunkIndex(db)
    document = await tenant.document("gri.pdf")
    texts = [
        "Colorscale: set the image colorscale. An image colorscale is hsb or rgb; to set an "
        "hsb colorscale, set the image first, then the colorscale hsb values of the image.",
        "Images are drawn with the colours of a palette that the user may change at any "
        "time during a session, for one image or for all of them together. The command "
        "set image colorscale hsb maps the values to hues, and its rgb form to colours "
        "mixed from red, green and blue, as a reader of this manual will have expected.",
        "Unrelated page about axes.",
    ]
    await index.replace_chunks(tenant.org, document, texts_as_chunks(document, texts), None, None)
    retriever = Retriever(index, None)
    query = "set image colorscale hsb"
    words_apart = await retriever.search_text(tenant.org, [document], query, 3)
    assert words_apart[0].ordinal == 0  # BM25 alone: the chunk repeating the words wins
    hits = await retriever.search(tenant.org, [document], query, limit=2, excerpts=False)
    assert hits[0].ordinal == 1
    off = await retriever.search(
        tenant.org, [document], query, limit=2, excerpts=False, phrase=False
    )
    assert off[0].ordinal == 0
