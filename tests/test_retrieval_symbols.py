"""Symbols survive tokenization (issue 18): identifiers, commands, options and paths are
found as written, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from tests.helpers import make_tenant, texts_as_chunks
from threadline.services.retrieval import Retriever
from threadline.storage.chunks import SqlChunkIndex
from threadline.storage.symbols import symbol_terms, symbols


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Call glp_exact. Then stop.", ["glp_exact"]),
        (
            "Setting R_DEFAULT_PACKAGES=NULL loads base",
            ["r_default_packages=null", "r_default_packages"],
        ),
        ("set \\zmin and --norc, then $HOME.", ["\\zmin", "--norc", "$home"]),
        ("read ~/.Rprofile or R-intro.pdf", ["~/.rprofile", ".rprofile", "r-intro.pdf"]),
        ("SHA256 with setTitle on x86_64", ["x86_64"]),  # words alone are words
        # prose, numbers and abbreviations are no symbols
        ("e.g. the value is 8192 or 3.14, i.e. small; well-known", ["well-known"]),
        ("What does HISTCONTROL do in the manual?", []),
        # a typeset minus sign or hyphen is the dash a user types
        ("start with \u2212\u2212norc or \u2010\u2010login", ["--norc", "--login"]),
    ],
)
def test_symbols_are_taken_as_written(text, found):
    assert symbols(text) == found


def test_a_symbol_becomes_one_token_of_letters_and_digits():
    [glp] = symbol_terms("glp_exact")
    assert glp.isascii() and glp.isalnum()
    assert symbol_terms("GLP_EXACT") == [glp]  # case is folded
    assert len(set(symbol_terms("a_bc a-bc a.bc a/bc abc1"))) == 4  # abc1 is a word


NOISE = [
    "The exact solver of glp is slow; an exact answer from glp needs exact arithmetic.",
    "Packages by default: the default packages list names packages loaded by default.",
    "zmin is the smallest z; norc is not a word here, nor is zmin.",
]
SYMBOLIC = [
    "Call glp_exact only after glp_simplex found a basis.",
    "Setting R_DEFAULT_PACKAGES=NULL ensures that only package base is loaded.",
    "set image range \\zmin \\zmax; start R with --norc to skip the profile.",
]


async def test_a_symbol_is_found_whole_not_as_its_common_parts(db):
    a, b = await make_tenant(db, "org-a"), await make_tenant(db, "org-b")
    index = SqlChunkIndex(db)
    document = await a.document("manual.pdf")
    await index.replace_chunks(
        a.org, document, texts_as_chunks(document, NOISE + SYMBOLIC), None, None
    )
    other = await b.document("manual.pdf")
    await index.replace_chunks(b.org, other, texts_as_chunks(other, SYMBOLIC), None, None)

    for question, ordinal in (
        ("what does glp_exact do?", 3),
        ("R_DEFAULT_PACKAGES", 4),
        ("the \\zmin command", 5),
        ("what is --norc for", 5),
    ):
        hits = await index.search_symbols(a.org, [document], question, 5)
        assert [h.ordinal for h in hits] == [ordinal], question
        assert hits[0].document_id == document  # never the other org's same text
    assert await index.search_symbols(a.org, [document], "glp exact", 5) == []
    assert await index.search_symbols(a.org, [], "glp_exact", 5) == []

    # words alone rank the page that repeats the parts first; with the symbols' ranking
    # beside them, the page that has the symbol comes first
    words = await index.search_text(a.org, [document], "what does glp_exact do", 2)
    assert words[0].ordinal == 0
    retriever = Retriever(index, None)
    hits = await retriever.search(a.org, [document], "what does glp_exact do", limit=2)
    assert hits[0].ordinal == 3
    plain = await retriever.search(
        a.org, [document], "what does glp_exact do", limit=2, symbols=False
    )
    assert plain[0].ordinal == 0
