"""Ingestion: turning an uploaded file into text a model can be grounded on.

    detect_file(path, name, declared)  → canonical MIME type, or None (the caller answers 422)
    SandboxedParser(...).parse(path, mime_type, name)  → ParsedDocument, or raises ParseFailed

Parsing happens in a sandboxed child process (`sandbox`, `child`) running the per-format
extractors (`formats`); nothing in this package parses an untrusted file in the server's own
process. `SandboxedParser` is imported on first use, so the child, which imports this package
too, does not pay for asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from threadline.ingestion.detect import (
    SUPPORTED_TYPES,
    detect_file,
    detect_type,
    unsupported_message,
)

if TYPE_CHECKING:
    from threadline.ingestion.sandbox import SandboxedParser

__all__ = [
    "SUPPORTED_TYPES",
    "SandboxedParser",
    "detect_file",
    "detect_type",
    "unsupported_message",
]


def __getattr__(name: str) -> Any:
    if name == "SandboxedParser":
        from threadline.ingestion.sandbox import SandboxedParser

        return SandboxedParser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
