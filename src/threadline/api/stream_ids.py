"""The SSE ids of a reply's frames: `<aiRecordId>:<n>`, n the characters of its text sent so
far. The 1min.ai and Conversation Service dialects both write them (each in its `encode.py`)
and read them back from `Last-Event-ID` to resume a stream: one format, written and parsed
here."""

from __future__ import annotations

from uuid import UUID

from threadline.domain.errors import InvalidRequest


def frame_id(record_id: UUID | str, chars: int) -> str:
    """The id of a frame sent once `chars` characters of the reply's text had come."""
    return f"{record_id}:{chars}"


def position_of(record_id: UUID, last_event_id: str) -> int:
    """The characters a client has, from the SSE id of the last frame it received."""
    raw_id, _, chars = last_event_id.strip().rpartition(":")
    try:
        named = UUID(raw_id)
    except ValueError:
        named = None
    if named is None or not (chars.isascii() and chars.isdigit()) or len(chars) > 12:
        raise InvalidRequest(
            "Last-Event-ID must be the id of a frame of this stream (<aiRecordId>:<n>)"
        )
    if named != record_id:
        raise InvalidRequest(f"Last-Event-ID names another aiRecord than {record_id}")
    return int(chars)
