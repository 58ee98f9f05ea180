"""A stateless dialect's request that continues a stored conversation.

Why it exists: Anthropic's Messages API keeps no state (the client resends the whole
exchange), yet a Threadline conversation is one history whichever dialect talks to it. A
Messages request that names a conversation (Threadline's extension) carries only the new
user turn; this service puts it in that conversation: the caller's conversation (else "not
found", `ConversationService.get`'s visibility rule), its current branch read as history
with every model's exchanges (`is_mixed`), the prompt and its reply stored there after the
head (which moves to the reply), answered and charged as every reply. It mirrors what
`services/responses.py` does for a response naming a conversation.

The command comes with `messages` holding exactly the new user message (the dialect checks
its wire shape and names the rule); here it becomes the prompt.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from threadline.domain.errors import InvalidRequest
from threadline.services.chat import ChatService
from threadline.services.chat_command import ChatCommand, HistorySettings
from threadline.services.conversations import ConversationService
from threadline.services.runs import Run


class ConversationTurns:
    def __init__(
        self, *, chat: ChatService, conversations: ConversationService, history_limit: int
    ) -> None:
        self._chat = chat
        self._conversations = conversations
        self._history = HistorySettings(is_mixed=True, limit=history_limit)

    async def reply(self, command: ChatCommand, conversation_id: UUID) -> Run:
        """Start the reply to the command's one user message in the conversation (returns
        at once with its run, as `ChatService.reply`)."""
        await self._conversations.get(command.principal, conversation_id)
        turn = replace(
            command,
            prompt=_turn(command),
            messages=(),
            conversation_id=conversation_id,
            history=self._history,
        )
        return await self._chat.reply(turn)

    async def count_tokens(self, command: ChatCommand, conversation_id: UUID) -> int:
        """The input tokens of the reply `reply()` would start: the conversation's history
        (the same window) before the new message. Nothing is stored or charged."""
        _turn(command)
        window = await self._conversations.history(
            command.principal,
            conversation_id,
            model=None,
            limit=self._history.limit,
        )
        counted = replace(command, messages=(*window.messages, *command.messages))
        return self._chat.count_tokens(counted)


def _turn(command: ChatCommand) -> str:
    messages = command.messages
    if len(messages) != 1 or messages[0].role != "user":
        raise InvalidRequest(
            "in a conversation, the request holds only the new user message (the "
            "conversation's history is read from the store)"
        )
    return messages[0].content
