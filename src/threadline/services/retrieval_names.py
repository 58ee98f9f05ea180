"""Which of the documents in scope a question names ("In the Bash Reference Manual, ...").

A conversation often holds documents that say nearly the same thing (a man page and the
reference manual it was cut from; two libraries of one family). When the question names one
of them, its pages must come before its twin's, whatever the wording overlap says. A
document is named by:

- its file name (`bashref.pdf`), or the file name without its extension when that has
  several words (`R-intro`) or is a word no other document in scope is called by (`gnuplot`);
- its whole title (`Bash Reference Manual`);
- a word of its title that no other document in scope is called by, written as a name is
  in the question (capitalised or mixed case, not the question's first word: `Libgcrypt`);
- a one-word file name without its extension written as a man page's name, with its
  section (`bash(1)` for `bash.pdf`), even when other documents share the word (the Bash
  Reference Manual is not the bash(1) man page). ("the bash man page" names none: measured
  on bench/twins.json, dropping `bash` from such a question's search cost more than it won.)

A word the documents share (`bash`, for `bash.pdf` and the `Bash Reference Manual`) names
none of them. A match inside a longer one is dropped (`bash` inside `Bash Reference
Manual`), and so is a match just after a negation ("in gnuplot, not Gri": Gri is not
named). Of what is left, the documents with the longest match are named. Nothing is named
when every document in scope would be (the question then is about them all), nor in a scope
of more than `MAX_DOCUMENTS` documents. Linear in the question and the labels: each label
phrase is tried only where the question has its first word.

The named documents are then searched with what is left of the question once the words that
only say which document it is about are out: the matched name, the words that say what kind
of document it is (`man page`, `manual`, `reference`), and the names of the documents the
question sets aside ("not Gri"). In that scope every chunk carries the name in its context,
so those words tell no page from another; left in, they rank the pages that repeat them (a
title page, an introduction) above the one that answers. (Dropping every other word of the
named document's title too measured worse: a title's words are often the question's topic.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MAX_DOCUMENTS", "named_documents", "naming"]

_WORD = re.compile(r"[^\W_]+")
_NEGATIONS_TEXT = "not unlike than instead versus vs except without nor neither rather"
_NEGATIONS = frozenset(_NEGATIONS_TEXT.split())
_NEGATION_REACH = 3  # words before a match in which a negation cancels it
# words that call no document by name, however few documents' titles have them
_GENERIC_TEXT = """
    a an and the of for to in on with by manual reference guide documentation document
    introduction user users handbook book library program programs language tutorial
    version edition chapter volume gnu pdf
"""
_GENERIC = frozenset(_GENERIC_TEXT.split())
# words that say what kind of document a question is about, not what it asks
_KIND_TEXT = """
    manual manuals reference guide documentation document docs handbook supplement faq
    man page pages according pdf
"""
_KIND = frozenset(_KIND_TEXT.split())
_EMPTY_BRACKETS = re.compile(r"[(\[][^\w(\[\])]*[)\]]")  # "()" or "(., )" once names are out
_JOINERS = "_-./\\$:=+#~@"  # characters that join words into one symbol
_QUESTION_TEXT = "what which who whom how why when where is are was does do did can"
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
MAX_QUERY_WORDS = 200
# A scope of more documents (an org's whole library) is not searched for names: the
# labels would cost a query and a scan each time, for a choice a person rarely makes there.
MAX_DOCUMENTS = 200


@dataclass(frozen=True, slots=True)
class _Phrase:
    words: tuple[str, ...]
    proper: bool  # a single title word: must be written as a name in the question
    section: bool = False  # a man page's name: must be followed by "(<section>)"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _phrases(name: str, title: str | None, shared: Mapping[str, int]) -> list[_Phrase]:
    """The ways a question can name this document (see the module's docstring)."""
    phrases = [_Phrase(tuple(_words(name)), False)]
    stem = _words(name.rsplit(".", 1)[0] if "." in name else name)
    if len(stem) > 1 or (stem and shared.get(stem[0], 0) == 1 and stem[0] not in _GENERIC):
        phrases.append(_Phrase(tuple(stem), False))
    if len(stem) == 1 and stem[0] not in _GENERIC:
        phrases.append(_Phrase((stem[0],), False, section=True))
    title_words = _words(title or "")
    if len(title_words) > 1:
        phrases.append(_Phrase(tuple(title_words), False))
    for word in dict.fromkeys(title_words):
        if shared.get(word, 0) == 1 and word not in _GENERIC and len(word) >= 3:
            phrases.append(_Phrase((word,), len(title_words) > 1))
    return [p for p in phrases if p.words and "".join(p.words) not in _GENERIC]


def named_documents(query: str, labels: Mapping[int, tuple[str, str | None]]) -> list[int]:
    """The ids of the documents the question names (none, when it names none or all)."""
    return naming(query, labels)[0]


def naming(query: str, labels: Mapping[int, tuple[str, str | None]]) -> tuple[list[int], str]:
    """The documents the question names, and the question without the words that name
    them (every document in the named ones' scope has those words in its context: they
    would only blur the ranking within it)."""
    if not 2 <= len(labels) <= MAX_DOCUMENTS:
        return [], query
    tokens = list(_WORD.finditer(query))[:MAX_QUERY_WORDS]
    words = [t.group().lower() for t in tokens]
    shared: dict[str, int] = {}
    for name, title in labels.values():
        for word in set(_words(name)) | set(_words(title or "")):
            shared[word] = shared.get(word, 0) + 1
    positions: dict[str, list[int]] = {}
    for i, word in enumerate(words):
        positions.setdefault(word, []).append(i)
    matches: list[tuple[int, int, int]] = []  # (start, end, document)
    for document, (name, title) in labels.items():
        for phrase in _phrases(name, title, shared):
            for start in positions.get(phrase.words[0], ()):
                size = len(phrase.words)
                if tuple(words[start : start + size]) != phrase.words:
                    continue
                if phrase.proper and not _written_as_name(tokens[start].group(), start):
                    continue
                if phrase.section:
                    if not _man_section(query, tokens, start):
                        continue
                    size = 2
                matches.append((start, start + size, document))
    kept = [m for m in matches if not _inside_longer(m, matches) and not _negated(words, m[0])]
    if not kept:
        return [], query
    longest = max(end - start for start, end, _ in kept)
    named = sorted({doc for start, end, doc in kept if end - start == longest})
    if len(named) == len(labels):
        return [], query
    set_aside = {i for s, e, _ in matches if _negated(words, s) for i in range(s, e)}
    dropped = {i for s, e, d in kept if d in named for i in range(s, e)} | set_aside
    dropped |= {i for i, w in enumerate(words) if w in _KIND and _standalone(query, tokens[i])}
    parts, cursor = [], 0
    for i in sorted(dropped):
        parts.append(query[cursor : tokens[i].start()])
        cursor = tokens[i].end()
    parts.append(query[cursor:])
    remainder = " ".join(_EMPTY_BRACKETS.sub(" ", "".join(parts)).split())
    kept_words = [t.group() for i, t in enumerate(tokens) if i not in dropped]
    return named, remainder if _has_content(kept_words) else query


def _man_section(query: str, tokens: Sequence[re.Match[str]], at: int) -> bool:
    """`tokens[at]` is followed by a man page section in brackets: `bash(1)`, `open(3p)`."""
    if at + 1 >= len(tokens):
        return False
    section = tokens[at + 1]
    return (
        section.start() == tokens[at].end() + 1
        and query[tokens[at].end()] == "("
        and section.group()[0].isdigit()
        and len(section.group()) <= 3
        and query[section.end() : section.end() + 1] == ")"
    )


def _standalone(query: str, token: re.Match[str]) -> bool:
    """A word on its own, not a part of a symbol (the `R` of `R_HOME`, the `page` of
    `page-size`)."""
    start, end = token.span()
    before = query[start - 1] if start else " "
    after = query[end : end + 2] or " "
    if before.isalnum() or before in _JOINERS:
        return False
    if after[0] == "." and len(after) > 1 and not after[1].isspace():
        return False
    return after[0] not in _JOINERS or after[0] == "."


def _has_content(words: Sequence[str]) -> bool:
    ignored = _GENERIC | _NEGATIONS | _QUESTION_WORDS
    return any(w.lower() not in ignored for w in words)


def _written_as_name(token: str, position: int) -> bool:
    inner_capital = any(ch.isupper() for ch in token[1:])
    return inner_capital or (token[:1].isupper() and position > 0)


def _inside_longer(match: tuple[int, int, int], matches: Sequence[tuple[int, int, int]]) -> bool:
    start, end, _ = match
    return any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in matches)


def _negated(words: Sequence[str], start: int) -> bool:
    return any(w in _NEGATIONS for w in words[max(0, start - _NEGATION_REACH) : start])
