"""Symbols as written: identifiers, commands, options, paths, found whole.

Full-text search splits `glp_exact` into `glp` and `exact`, `R_DEFAULT_PACKAGES=NULL` into
four common words, and drops the backslash of `\\zmin` and the dashes of `--norc`: a lookup
of a symbol then ranks every page that mentions its parts. So each chunk also keeps its
symbols, each encoded as one token of letters and digits (`chunks.symbols`), in an index of
their own (an FTS5 column on SQLite, a `simple` tsvector on PostgreSQL); a question's
symbols, encoded the same way, are looked up there as a third ranking beside BM25 and
vectors (`services/retrieval.py`).

A symbol is a run of letters, digits and `_ $ \\ . : / = + # ~ -` that has such a
character between two letters or digits (`glp_exact`, `gcry_md_open`, `.Rprofile`,
`R-intro`, `x86_64`), starts with `\\`, `-`, `$`, `.`, `/` or `~/` before a letter
(`\\zmin`, `--norc`, `$HOME`); sentence punctuation at its ends is not part of it. (A
word of letters and digits alone, `SHA256` or `setTitle`, is one word to full-text search
already.) A symbol with `=`, `/`, `:` or `,` inside is also kept in its parts
(`R_DEFAULT_PACKAGES=NULL` gives `R_DEFAULT_PACKAGES` too). Case is folded, and the dashes
that typesetting puts for a hyphen (U+2212 minus signs in a man page's options, U+2010 or
U+2011 hyphens) are read as `-`, so a question typed with a keyboard's hyphen finds them.
"""

from __future__ import annotations

import re

__all__ = ["encode", "symbol_terms", "symbol_text"]

_HAS_SYMBOL_CHAR = re.compile(r"[_$\\.:/=+#~\-]\S").search  # not only at a word's end
_CANDIDATE = re.compile(r"[\w$\\.:/=+#~\-]+")
_INNER = re.compile(r"[^\W_][_$\\.:/=+#\-]+[^\W_]")
_LEADING = re.compile(r"^(?:\\|--?|\$|\.|~/\.?|/)[^\W\d_]")
_PARTS = re.compile(r"[=/:,]+")
_ABBREVIATION = re.compile(r"^(?:[^\W\d_]\.)+[^\W\d_]?$")  # e.g, i.e, U.S.
_TRAILING = ".,:;=+#-/"
_DASHES = str.maketrans({"\u2212": "-", "\u2010": "-", "\u2011": "-"})
MAX_SYMBOL_CHARS = 64
MAX_SYMBOLS = 256  # per chunk, distinct
MAX_QUERY_SYMBOLS = 16


def _is_symbol(token: str) -> bool:
    if len(token) < 3 or len(token) > MAX_SYMBOL_CHARS or _ABBREVIATION.match(token):
        return False
    if token.replace(".", "").replace(",", "").isdigit():
        return False  # a number is no symbol
    return bool(_INNER.search(token) or _LEADING.match(token))


def symbols(text: str, limit: int = MAX_SYMBOLS) -> list[str]:
    """The distinct symbols of `text`, lower-cased, in order of first appearance."""
    found: dict[str, None] = {}
    text = text.translate(_DASHES)
    # Most words have none of the symbol characters: one C call each rules them out (the
    # regexes below cost microseconds a word, and a chunk has ~200 words).
    for word in text.split():
        if not _HAS_SYMBOL_CHAR(word):
            continue
        for match in _CANDIDATE.finditer(word):
            token = match.group().rstrip(_TRAILING)
            candidates = [token]
            if _PARTS.search(token):
                candidates += [p.rstrip(_TRAILING) for p in _PARTS.split(token)]
            for candidate in candidates:
                if _is_symbol(candidate):
                    found.setdefault(candidate.lower(), None)
                    if len(found) == limit:
                        return list(found)
    return list(found)


def encode(symbol: str) -> str:
    """One token of ASCII letters and digits that both backends' tokenizers keep whole:
    `s`, then each letter or digit as it is (non-ASCII ones and punctuation as `q` and
    their code point in hex, then `z`)."""
    out = ["s"]
    for ch in symbol:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"q{ord(ch):x}z")
    return "".join(out)


def symbol_text(text: str) -> str:
    """What `chunks.symbols` holds for a chunk's text: its encoded symbols."""
    return " ".join(encode(s) for s in symbols(text))


def symbol_terms(query: str) -> list[str]:
    """A question's encoded symbols, to search `chunks.symbols` with."""
    return [encode(s) for s in symbols(query[:16_384], MAX_QUERY_SYMBOLS)]
