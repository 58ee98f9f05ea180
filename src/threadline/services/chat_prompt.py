"""The text arithmetic of a chat request: token estimates, the system text with its brand
voice, and the messages fitted to the room the model's context window leaves.

Split out of the engine (`services/chat.py`) so that it stays about driving a reply; nothing
here does I/O.
"""

from __future__ import annotations

from threadline.domain.brand_voices import BrandVoice
from threadline.domain.errors import Unprocessable
from threadline.domain.events import Usage
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.services.brand_voices import guidance
from threadline.services.catalog import CatalogModel
from threadline.services.chat_command import ChatCommand

CHARS_PER_TOKEN = 4
MAX_CONTEXT_CHARS = 24_000


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN) if text else 0


def estimate_usage(request: ModelRequest, text: str) -> Usage:
    """The usage of a reply whose provider reported none (it ended by itself, as far as
    anyone knows)."""
    prompt = sum(estimate_tokens(m.content) + 4 for m in request.messages)
    return Usage(input_tokens=prompt, output_tokens=estimate_tokens(text), estimated=True)


def join(*parts: str | None) -> str | None:
    """System texts, one paragraph each; None when there are none."""
    return "\n\n".join(p for p in parts if p) or None


def voiced_system(
    command: ChatCommand, entry: CatalogModel, voice: BrandVoice | None, budget_tokens: int
) -> str | None:
    """The command's own system text and the brand voice's guidance. A voice that leaves no
    room for the prompt in the model's context is refused, not cut."""
    if voice is None:
        return command.system
    system = join(command.system, guidance(voice)) or ""
    needed = estimate_tokens(system) + estimate_tokens(command.prompt) + 4
    if needed > budget_tokens:
        raise Unprocessable(
            f"brand voice {voice.name!r} is too long for model {entry.name!r}: with the prompt "
            f"it needs about {needed} tokens, and the model's context window leaves "
            f"{budget_tokens} (shorten its instructions or examples, or pick another model)"
        )
    return system


def fit(messages: list[ChatMessage], budget_tokens: int) -> list[ChatMessage]:
    """Drop the oldest history (never the system prompt or the last message) to fit.
    One pass: the total is summed once and lowered as messages go (linear in the list)."""
    head = 1 if messages and messages[0].role == "system" else 0
    total = sum(estimate_tokens(m.content) + 4 for m in messages)
    first = head  # the oldest history message kept
    while len(messages) - first > 1 and total > budget_tokens:
        total -= estimate_tokens(messages[first].content) + 4
        first += 1
    return [*messages[:head], *messages[first:]]
