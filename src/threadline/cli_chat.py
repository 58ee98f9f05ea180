"""`threadline chat`: one prompt through the chat engine, streamed to the terminal.

It runs in-process against the data dir, as the first admin user of the system org (made
on the spot when the database is new), so its usage is recorded like any other reply.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from threadline.domain.entities import Principal, Role
from threadline.domain.errors import ThreadlineError
from threadline.domain.events import Failed, TextDelta
from threadline.services.accounts import SYSTEM_ORG_NAME
from threadline.services.chat import ChatCommand

if TYPE_CHECKING:
    from threadline.container import Container


async def _cli_principal(container: Container) -> Principal:
    store = container.account_store
    org = await store.find_org_by_name(SYSTEM_ORG_NAME) or await store.create_org(
        SYSTEM_ORG_NAME, is_system=True
    )
    admins = [u for u in await store.list_users(org.id) if u.role is Role.ADMIN]
    user = (
        admins[0]
        if admins
        else await store.create_user(
            org.id, "admin", Role.ADMIN, container.settings.default_credit_limit, "CLI"
        )
    )
    return Principal(org=org, user=user, key_id=user.id)


async def run_chat(container: Container, prompt: str, model: str) -> int:
    try:
        principal = await _cli_principal(container)
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
