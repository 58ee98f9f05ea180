"""The admin usage view: credits and tokens per day, per model and per user, for the last
N days of one org (an admin's own; system admins may name another). The store sums; this
fills the calendar (every day present, so a chart has no gaps) and names the users."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID

from threadline.domain.clock import utcnow
from threadline.domain.entities import Org, User
from threadline.domain.errors import InvalidRequest
from threadline.domain.ports import UsageStore
from threadline.domain.usage import UsageRow

MAX_DAYS = 366


@dataclass(frozen=True)
class UsageReport:
    org: Org
    first_day: date
    last_day: date
    rows: list[UsageRow]
    users: dict[UUID, str]

    @property
    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=i) for i in range(count)]


class UsageService:
    def __init__(self, store: UsageStore) -> None:
        self._store = store

    async def report(self, org: Org, users: list[User], days: int) -> UsageReport:
        """`org` is the one `AccountService.target_org` allowed the caller; `users` its users."""
        if not 1 <= days <= MAX_DAYS:
            raise InvalidRequest(f"days must be between 1 and {MAX_DAYS} (got {days})")
        today = utcnow().date()
        first = today - timedelta(days=days - 1)
        since = datetime.combine(first, time.min, tzinfo=UTC)
        rows = await self._store.usage(org.id, since)
        names = {u.id: u.name for u in users}
        return UsageReport(org=org, first_day=first, last_day=today, rows=rows, users=names)
