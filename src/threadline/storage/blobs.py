"""Uploaded files on disk, under `<data_dir>/blobs`.

Every stored file gets a generated name (`<org id>/<uuid>`): a client's filename is kept
as data in the database and never becomes part of a path. Uploads are written to a staging
file first and moved into place only once they passed every check, so a refused or broken
upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from uuid import UUID, uuid4


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / "staging"

    def staging_path(self) -> Path:
        """A fresh path for an upload in progress (discard it with `discard`)."""
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / uuid4().hex

    async def keep(self, org_id: UUID, staged: Path) -> str:
        """Move a staged file into the store; returns its blob path (relative)."""
        relative = f"{org_id}/{uuid4().hex}"
        target = self.path(relative)
        await asyncio.to_thread(_move, staged, target)
        return relative

    def path(self, blob_path: str) -> Path:
        """The absolute path of a stored blob; refuses anything that escapes the root."""
        target = (self.root / blob_path).resolve()
        if self.root.resolve() not in target.parents:
            raise ValueError("blob path outside the blob store")
        return target

    async def delete(self, blob_path: str) -> None:
        await asyncio.to_thread(self.path(blob_path).unlink, missing_ok=True)

    @staticmethod
    def discard(staged: Path) -> None:
        staged.unlink(missing_ok=True)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
