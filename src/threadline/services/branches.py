"""Conversations that branch: a conversation's messages form a tree, and its head names the
branch every dialect continues and lists.

Why a service of its own: editing a prompt, regenerating a reply and moving the head are
conversation use cases that every dialect may offer (1min.ai's routes do today), and they
all come down to one operation of the chat engine, a turn appended under a given parent:

    ChatCommand(..., conversation_id=c, prompt=p, parent=message_id)   a new user message
        under `message_id` (None: a new first message), answered with the history of the path
        from the root to it; the new turn becomes the head.
    ChatCommand(..., answer_again=user_message, parent=user_message.parent_id)   the stored
        user message answered again: a new sibling of its earlier replies.

A dialect that chains on an older turn (OpenAI's `previous_response_id`) passes that turn's
message id as `parent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from threadline.domain.entities import Message, Principal
from threadline.domain.errors import InvalidRequest, NotFound
from threadline.domain.ports import ConversationStore
from threadline.services.chat import ChatService
from threadline.services.chat_command import ChatCommand, HistorySettings
from threadline.services.conversations import ConversationService
from threadline.services.runs import Run

# A new branch is answered with the history of its path, whichever model wrote it.
BRANCH_HISTORY = HistorySettings(is_mixed=True)


@dataclass(frozen=True, slots=True)
class ConversationTree:
    """Every message of a conversation (in the order written), its head, and the ids of the
    messages on the current branch (the path from the root to the head)."""

    conversation_id: UUID
    head_id: UUID | None
    messages: list[Message]
    branch: frozenset[UUID]


class BranchService:
    def __init__(
        self, conversations: ConversationService, store: ConversationStore, chat: ChatService
    ) -> None:
        self._conversations = conversations
        self._store = store
        self._chat = chat

    async def tree(self, caller: Principal, conversation_id: UUID) -> ConversationTree:
        conversation = await self._conversations.get(caller, conversation_id)
        messages = await self._store.tree(caller.org_id, conversation_id)
        parents = {m.id: m.parent_id for m in messages}
        branch: set[UUID] = set()
        at = conversation.head_id
        while at is not None and at in parents and at not in branch:
            branch.add(at)
            at = parents[at]
        return ConversationTree(conversation_id, conversation.head_id, messages, frozenset(branch))

    async def set_head(self, caller: Principal, conversation_id: UUID, message_id: UUID) -> None:
        """Later messages, in any dialect, continue from `message_id`; lists show its path."""
        await self._conversations.get(caller, conversation_id)
        if not await self._store.set_head(caller.org_id, conversation_id, message_id):
            raise NotFound(f"message {message_id} not found in conversation {conversation_id}")

    async def regenerate(
        self,
        caller: Principal,
        conversation_id: UUID,
        message_id: UUID,
        *,
        model: str | None,
        record_type: str,
    ) -> Run:
        """A new reply to the user message that `message_id` (an assistant reply) answers:
        a sibling of that reply, by `model` (the reply's own by default), charged as a reply."""
        await self._conversations.get(caller, conversation_id)
        reply = await self._message(caller, conversation_id, message_id)
        if reply.role != "assistant":
            raise InvalidRequest(f"message {message_id} is not an assistant reply; edit it instead")
        prompt = (
            await self._message(caller, conversation_id, reply.parent_id)
            if reply.parent_id is not None
            else None
        )
        if prompt is None or prompt.role != "user":
            raise InvalidRequest(f"message {message_id} answers no user message")
        command = ChatCommand(
            principal=caller,
            model=model or reply.model,
            record_type=record_type,
            prompt=prompt.content,
            conversation_id=conversation_id,
            session_id=prompt.session_id,
            history=BRANCH_HISTORY,
            prompt_object={"prompt": prompt.content, "regenerated": str(message_id)},
            parent=prompt.parent_id,
            answer_again=prompt,
        )
        return await self._chat.reply(command)

    async def edit(
        self,
        caller: Principal,
        conversation_id: UUID,
        message_id: UUID,
        prompt: str,
        *,
        model: str | None,
        record_type: str,
    ) -> Run:
        """`prompt` as a new sibling of the user message `message_id`, with its own reply."""
        await self._conversations.get(caller, conversation_id)
        original = await self._message(caller, conversation_id, message_id)
        if original.role != "user":
            raise InvalidRequest(f"message {message_id} is not a user message; regenerate it")
        if not prompt.strip():
            raise InvalidRequest("prompt must not be empty")
        command = ChatCommand(
            principal=caller,
            model=model or original.model,
            record_type=record_type,
            prompt=prompt,
            conversation_id=conversation_id,
            session_id=original.session_id,
            history=BRANCH_HISTORY,
            prompt_object={"prompt": prompt, "edited": str(message_id)},
            parent=original.parent_id,
        )
        return await self._chat.reply(command)

    async def _message(
        self, caller: Principal, conversation_id: UUID, message_id: UUID | None
    ) -> Message:
        """A message of a conversation the caller may see (checked by the caller first)."""
        found = None
        if message_id is not None:
            found = await self._store.message(caller.org_id, conversation_id, message_id)
        if found is None:
            raise NotFound(f"message {message_id} not found in conversation {conversation_id}")
        return found
