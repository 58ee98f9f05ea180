"""What an org used: one row per day, model and user (the admin usage view and its CSV).

Kept apart from the records themselves: the aggregate is what an admin reads, computed by
the store (one GROUP BY), never by loading every record of a month into the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import UUID


@dataclass(frozen=True)
class UsageRow:
    day: date
    model: str
    user_id: UUID
    requests: int
    input_tokens: int
    output_tokens: int
    credits: int
