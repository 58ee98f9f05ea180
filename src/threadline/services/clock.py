"""The one clock services read (UTC, timezone-aware)."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
