"""The model-based fact extractor (`[memories] extractor = "model"`).

A configured catalog model reads the user's message (and, for context only, the reply it
got) and answers a JSON list of facts. Its answer is untrusted: it is parsed leniently
(code fences and prose around the list are tolerated), every item is validated (a short
single-line third-person "User ..." sentence; a kind that is a short lower-case label or
nothing) and the list is capped. An answer with no JSON list in it gives no facts, never
junk memories. A model that fails (upstream down, timeout) raises, so the job retries.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Any

import structlog

from threadline.domain.events import TextDelta
from threadline.domain.memories import CONTENT_MAX, KIND_MAX, Fact
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.services.catalog import ModelCatalog
from threadline.services.fallbacks import Candidate, FallbackChain
from threadline.services.memory_rules import MAX_FACTS

log = structlog.get_logger(__name__)

MESSAGE_CHARS = 4_000
REPLY_CHARS = 1_000
ANSWER_TOKENS = 400
_KIND = re.compile(r"[a-z][a-z0-9 _:'-]*")
_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$")

INSTRUCTIONS = f"""You keep a memory of durable facts about a user, to help in later \
conversations. Read the user's message and answer ONLY a JSON array, nothing else.
Each item: {{"fact": "<a short third-person sentence starting with 'User'>", "kind": \
"<a one- or two-word lower-case label when a user has only one such fact (name, home, job, \
employer, age), else null>"}}.
Keep only what the user states about themselves that stays true for a while: name, where \
they live, work, family, preferences, likes and dislikes, allergies, diet, languages.
Leave out questions, requests, plans for today, hypotheticals, facts about other people, and \
anything that only the assistant said. At most {MAX_FACTS} items; [] when there are none.
Example: the message "I'm Ana, I live in Lisbon and I can't eat nuts. What's for dinner?" \
gives [{{"fact": "User's name is Ana", "kind": "name"}}, {{"fact": "User lives in Lisbon", \
"kind": "home"}}, {{"fact": "User cannot eat nuts", "kind": null}}]"""


class ModelExtractor:
    """Implements `domain.memories.FactExtractor` with a catalog model."""

    def __init__(self, catalog: ModelCatalog, model: str) -> None:
        self._catalog = catalog
        self.model = catalog.get(model).name

    async def extract(self, message: str, reply: str) -> list[Fact]:
        entry = self._catalog.get(self.model)
        request = ModelRequest(
            messages=[
                ChatMessage("system", INSTRUCTIONS),
                ChatMessage("user", _exchange(message, reply)),
            ],
            max_tokens=min(ANSWER_TOKENS, entry.config.max_output_tokens),
            temperature=0.0,
        )
        # The reply's own routing: its upstreams (providers/router.py), then its fallbacks.
        candidates = [
            Candidate(one, partial(self._catalog.model, one.name))
            for one in (entry, *(self._catalog.get(n) for n in entry.config.fallbacks))
        ]
        chain = FallbackChain(candidates, request, entry.config.continue_on_failure)
        parts = [event.text async for event in chain.events() if isinstance(event, TextDelta)]
        facts = parse_facts("".join(parts))
        if facts is None:
            log.warning("memory extractor answered no JSON list of facts", model=self.model)
            return []
        return facts


def _exchange(message: str, reply: str) -> str:
    return (
        f"The user's message:\n<<<\n{message[:MESSAGE_CHARS]}\n>>>\n\n"
        "The assistant's reply (context only, not a source of facts):\n"
        f"<<<\n{reply[:REPLY_CHARS]}\n>>>"
    )


def parse_facts(answer: str) -> list[Fact] | None:
    """The valid facts of a model's answer (invalid items are dropped), at most MAX_FACTS;
    None when the answer holds no JSON list at all."""
    text = _FENCE.sub("", answer.strip())
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end < start:
        return None
    try:
        items = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    facts: list[Fact] = []
    for item in items:
        fact = _fact(item)
        if fact is not None and fact not in facts:
            facts.append(fact)
    return facts[:MAX_FACTS]


def _fact(item: Any) -> Fact | None:
    raw_kind: Any = None
    if isinstance(item, dict):
        item, raw_kind = item.get("fact"), item.get("kind")
    if not isinstance(item, str):
        return None
    text = " ".join(item.split())
    if not (text[:5].lower() == "user " or text[:7].lower() == "user's "):
        return None
    if len(text) > CONTENT_MAX or len(text.split()) < 3:
        return None
    kind = raw_kind.strip().lower() if isinstance(raw_kind, str) else None
    if kind is not None and (len(kind) > KIND_MAX or not _KIND.fullmatch(kind)):
        kind = None
    return Fact("User" + text[4:], kind or None)
