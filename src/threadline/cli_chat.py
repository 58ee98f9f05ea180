"""`threadline chat`: one prompt through the chat engine, streamed to the terminal.

It runs in-process against the data dir, as the first admin user of the system org (made
on the spot when the database is new), so its usage is recorded like any other reply.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from threadline.domain.errors import ThreadlineError
from threadline.domain.events import Failed, TextDelta
from threadline.services.chat import ChatCommand

if TYPE_CHECKING:
    from threadline.container import Container


async def run_chat(container: Container, prompt: str, model: str) -> int:
    try:
        principal = await container.accounts.operator()
        run = await container.chat.reply(
            ChatCommand(
                principal=principal,
                model=model,
                record_type="UNIFY_CHAT_WITH_AI",
                prompt=prompt,
                prompt_object={"prompt": prompt},
            )
        )
    except ThreadlineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    async for _, event in run.events():
        if isinstance(event, TextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Failed):
            print(f"\nerror: {event.message}", file=sys.stderr)
            return 1
    sys.stdout.write("\n")
    return 0
