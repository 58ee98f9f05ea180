"""An aiRecord as a dialect shows it: the record, its user as stored now, its provider.

Why it exists: 1min.ai renders every aiRecord with the user's fresh credit figures and the
model's provider label. Reading those takes the accounts, the catalog and (for a resumed or
looked-up reply) the replay service; this module does it so that a dialect's handler makes one
call and encodes what it gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from threadline.domain.entities import AiRecord, Principal, User
from threadline.domain.errors import ThreadlineError
from threadline.domain.events import Done
from threadline.services.accounts import AccountService
from threadline.services.catalog import ModelCatalog
from threadline.services.replays import Replay, ReplayService
from threadline.services.runs import Run


@dataclass(frozen=True, slots=True)
class RecordView:
    record: AiRecord
    user: User
    provider: str  # the model's provider label; "unknown" for a model no longer configured


class RecordViews:
    def __init__(
        self, accounts: AccountService, replays: ReplayService, catalog: ModelCatalog
    ) -> None:
        self._accounts = accounts
        self._replays = replays
        self._catalog = catalog

    async def finished(self, run: Run, caller: Principal) -> RecordView:
        """The run's record once it has ended, with the user as charged."""
        record = await run.result()
        user = run.user or await self._accounts.user(caller)  # fresh after the charge
        return RecordView(record, user, self.provider(record.model))

    async def replayed(self, replay: Replay, done: Done, caller: Principal) -> RecordView:
        """The record a resumed stream ends with."""
        record = done.record if isinstance(done.record, AiRecord) else replay.record
        return await self._with_owner(replay, record, caller)

    async def current(self, caller: Principal, record_id: UUID) -> RecordView:
        """The record as it is now (PENDING while its reply runs; it does not wait)."""
        replay = await self._replays.open(caller, record_id)
        return await self._with_owner(replay, await self._replays.current(replay), caller)

    async def _with_owner(self, replay: Replay, record: AiRecord, caller: Principal) -> RecordView:
        user = await self._replays.owner(replay) or await self._accounts.user(caller)
        return RecordView(record, user, self.provider(record.model))

    def provider(self, model: str) -> str:
        """The model's provider label; a model no longer configured is "unknown"."""
        try:
            return str(self._catalog.entry(model).provider_label)
        except ThreadlineError:
            return "unknown"
