"""The one clock the server reads (UTC, timezone-aware).

In `domain` because every layer that stamps a time needs it (services, storage, the
container at start-up) and `domain` is what all of them may import."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
