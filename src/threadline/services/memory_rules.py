"""The rule-based fact extractor: first-person statements → short third-person facts.

The bundled model (SmolLM2-135M) is too small to pick durable facts out of a message
reliably, so the default extractor is deterministic. It reads only what the user wrote:

    "Hi, my name is ana and I live in Lisbon."   → User's name is Ana            (kind name)
                                                   User lives in Lisbon           (kind home)
    "Call me Annie. I'm allergic to peanuts!"     → User wants to be called Annie (nickname)
                                                   User is allergic to peanuts
    "I don't like cilantro"                       → User dislikes cilantro (opinion:cilantro)
    "What is my name?"  "Do I like jazz?"         → nothing (questions are not statements)

A message is cut into sentences, a sentence into clauses where a new "I ..." / "my ..."
begins ("..., and I work at Acme"), and a clause must *start* with one of the patterns below
(after a greeting or "remember that"), so "my friend says I live in Paris" is not taken as a
fact about the user. Values are short (a long one is not a simple fact), first-person words in
them become third-person ("with my wife" → "with their wife"), and a value that is only a
pronoun ("I love it") is dropped. Kinds let a newer fact replace an older one: a user has one
name, one home, one opinion of cilantro.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from threadline.domain.memories import CONTENT_MAX, KIND_MAX, Fact

MAX_FACTS = 10  # per message
LONG_VALUE_WORDS = 12
# A clause longer than this is no simple fact about the user: it is skipped before any rule
# sees it (a rule's regex on a clause of a megabyte, e.g. " now" repeated, is quadratic).
MAX_CLAUSE_CHARS = 400
IN_THREAD_CHARS = 10_000  # a longer message is read in a thread, off the event loop

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_STARTS_CLAUSE = r"(?=(?:i|i'm|i am|my|call me|please call me)\b)"
_CLAUSE_BREAK = re.compile(
    rf"\s*[,;:]\s*{_STARTS_CLAUSE}|\s+(?:and|but|so|also)\s+{_STARTS_CLAUSE}", re.IGNORECASE
)
_LEAD_IN = re.compile(
    r"^(?:(?:hi|hello|hey|well|oh|ok|okay|so|also|and|but|btw|by the way|actually|fyi|"
    r"just so you know|for the record|(?:please )?(?:remember|note) that)\b[\s,!:-]*)+",
    re.IGNORECASE,
)
_TRAILING = re.compile(
    r"(?:\s+(?:now|actually|too|as well|currently|these days|though|btw))+$", re.IGNORECASE
)
_PRONOUNS = frozenset(["it", "this", "that", "these", "those", "them", "you", "him", "her"])
_FIRST_PERSON = {"my": "their", "me": "them", "myself": "themselves", "mine": "theirs"}
_FIRST_PERSON_WORD = re.compile(r"\b(my|me|myself|mine)\b", re.IGNORECASE)
_NAME_WORD = re.compile(r"[^\W\d_][\w'-]*")
_NOT_A_NAME = frozenset(["not", "none", "no", "unknown", "secret", "irrelevant", "the"])
_OPINIONS = {
    "like": "likes",
    "love": "loves",
    "enjoy": "enjoys",
    "adore": "adores",
    "hate": "hates",
    "dislike": "dislikes",
    "can't stand": "dislikes",
    "cannot stand": "dislikes",
    "don't like": "dislikes",
    "do not like": "dislikes",
}
_OPINION_VERBS = "|".join(sorted(_OPINIONS, key=len, reverse=True))
_DIETS = "vegetarian|vegan|pescatarian|pescetarian|lactose intolerant|gluten intolerant|celiac"
# "my <key> is <value>": only keys that name a durable fact, not "my question is ...".
_KEYS = (
    r"favou?rite [a-z]+(?: [a-z]+)?|birthday|job|occupation|profession|hometown|home town|"
    r"native language|first language|mother tongue|time ?zone|pronouns|nationality|"
    r"(?:wife|husband|partner|girlfriend|boyfriend|son|daughter|mother|father|mum|mom|dad|"
    r"brother|sister|boss|dog|cat|pet)'?s name"
)
_I_AM = r"i(?:'m| am)"

MakeFact = Callable[[re.Match[str], str], "Fact | None"]  # (match, cleaned value) → fact


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    fact: MakeFact
    words: int  # a longer value is not a simple fact


def _starts(pattern: str, fact: MakeFact, words: int = LONG_VALUE_WORDS) -> _Rule:
    """A clause that starts with `pattern`; the rest of it is the value."""
    return _Rule(re.compile(rf"^{pattern}\s+(?P<value>.+)$", re.IGNORECASE), fact, words)


def _whole(pattern: str, fact: MakeFact) -> _Rule:
    """A clause that is `pattern` and nothing more (its group `value` is the value)."""
    return _Rule(re.compile(rf"^{pattern}$", re.IGNORECASE), fact, LONG_VALUE_WORDS)


def _plain(template: str, kind: str | None = None) -> MakeFact:
    return lambda _match, value: Fact(template.format(value), kind)


def _name(template: str, kind: str | None) -> MakeFact:
    """A name: words of letters, capitalised ("ana maria" → "Ana Maria")."""

    def fact(_match: re.Match[str], value: str) -> Fact | None:
        words = value.split()
        if words[0].lower() in _NOT_A_NAME or not all(_NAME_WORD.fullmatch(w) for w in words):
            return None
        return Fact(template.format(" ".join(w[:1].upper() + w[1:] for w in words)), kind)

    return fact


def _pet(match: re.Match[str], value: str) -> Fact | None:
    animal = match.group("animal").lower()
    return _name(f"User has a {animal} named {{}}", None)(match, value)


def _opinion(match: re.Match[str], value: str) -> Fact:
    verb = _OPINIONS[" ".join(match.group("verb").lower().split())]
    return Fact(f"User {verb} {value}", f"opinion:{normal_text(value)}"[:KIND_MAX])


def _keyed(match: re.Match[str], value: str) -> Fact | None:
    key = " ".join(match.group("key").lower().split())
    template = f"User's {key} {match.group('verb').lower()} {{}}"
    kind = key.replace("favorite", "favourite")
    if key.endswith("name"):
        return _name(template, kind)(match, value)
    return Fact(template.format(value), kind)


_RULES = (
    _starts(rf"(?:my name is|my name's|{_I_AM} called)", _name("User's name is {}", "name"), 4),
    _starts(r"(?:please )?call me", _name("User wants to be called {}", "nickname"), 3),
    _whole(
        rf"{_I_AM} (?P<value>\d{{1,3}}) (?:years old|yo)", _plain("User is {} years old", "age")
    ),
    _starts(
        rf"(?:i (?:currently )?live in|{_I_AM} based in)", _plain("User lives in {}", "home"), 6
    ),
    _starts(
        rf"(?:{_I_AM} (?:originally )?from|i come from)", _plain("User is from {}", "origin"), 6
    ),
    _starts(r"i work as", _plain("User works as {}", "job"), 6),
    _starts(r"i work (?:at|for)", _plain("User works at {}", "employer"), 6),
    _whole(rf"{_I_AM} (?:an? )?(?P<value>{_DIETS})", _plain("User is {}", "diet")),
    _starts(rf"{_I_AM} allergic to", _plain("User is allergic to {}"), 8),
    _starts(r"i (?:really |usually |generally |always |much )?prefer", _plain("User prefers {}")),
    _starts(rf"i (?:really |absolutely |just |truly )?(?P<verb>{_OPINION_VERBS})", _opinion, 8),
    _starts(r"i speak", _plain("User speaks {}"), 8),
    _starts(r"i have an? (?P<animal>[a-z]+) (?:named|called)", _pet, 3),
    _starts(rf"my (?P<key>{_KEYS}) (?P<verb>is|are)", _keyed, 8),
)


class RuleExtractor:
    """Implements `domain.memories.FactExtractor` with the rules above."""

    async def extract(self, message: str, reply: str = "") -> list[Fact]:
        if len(message) > IN_THREAD_CHARS:
            return await asyncio.to_thread(extract_facts, message)
        return extract_facts(message)


def extract_facts(message: str) -> list[Fact]:
    """The facts the user states about themselves in `message`, at most MAX_FACTS. A later
    fact of a kind (or of the same text) replaces an earlier one of the same message."""
    found: dict[str, Fact] = {}
    for sentence in _SENTENCE.findall(message.replace("’", "'")):
        if sentence.rstrip().endswith("?"):
            continue
        if len(sentence) > 50 * MAX_CLAUSE_CHARS:  # too long to hold short clauses only
            sentence = sentence[: 50 * MAX_CLAUSE_CHARS]
        for clause in _CLAUSE_BREAK.split(sentence.strip().rstrip(".!").strip()):
            if len(clause) > MAX_CLAUSE_CHARS:
                continue
            fact = _fact(clause)
            if fact is not None:
                key = fact.kind or normal_text(fact.text)
                found.pop(key, None)  # the later one goes last, too
                found[key] = fact
    return list(found.values())[:MAX_FACTS]


def normal_text(text: str) -> str:
    """Lower-case words only: "User's name is Ana." and "user's name is ana" are the same."""
    return " ".join(re.findall(r"\w+", text.lower()))


def _fact(clause: str) -> Fact | None:
    text = _LEAD_IN.sub("", clause.strip())
    for rule in _RULES:
        match = rule.pattern.match(text)
        if match is None:
            continue
        value = _clean(match.group("value"))
        words = value.split()
        if not words or len(words) > rule.words or words[0].lower() in _PRONOUNS:
            return None
        fact = rule.fact(match, value)
        return fact if fact is not None and len(fact.text) <= CONTENT_MAX else None
    return None


def _clean(value: str) -> str:
    """The value without closing punctuation, trailing fillers or first-person words."""
    value = value.strip().strip("\"'“”()[]").rstrip(".,;:!").strip()
    value = _TRAILING.sub("", value)
    return _FIRST_PERSON_WORD.sub(lambda m: _FIRST_PERSON[m.group(1).lower()], value)
