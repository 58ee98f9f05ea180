"""The paths AI Hub Converse serves, for the app's request-size caps and error shapes.

Kept apart from the routes so `api/app.py` can ask "is this an upload?" of a raw path
before any routing, without importing the handlers.
"""

from __future__ import annotations

import re

_OWN = re.compile(r"^(/api)?/v2/conversations(/.*)?$")
_UPLOAD = re.compile(r"^(/api)?/v2/conversations(/[^/]+/documents)?/?$")


def owns(path: str) -> bool:
    """A path under one of this dialect's prefixes."""
    return _OWN.match(path) is not None


def is_upload_path(path: str) -> bool:
    """Create-with-files and add-documents: the paths whose bodies may be 100 MB."""
    return _UPLOAD.match(path) is not None
