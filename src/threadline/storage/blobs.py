"""Uploaded files and generated images: on disk under `<data_dir>/blobs` (`blob_store =
"file"`), or in the database as numbered chunks (`"database"`), which every process on the
database reads, with no shared mount.

Every stored file gets a generated name (`<org id>/<uuid>`): a client's filename is kept
as data in the database and never becomes part of a path. Uploads are written to a local
staging file first and moved into the store only once they passed every check, so a
refused or broken upload leaves nothing behind.

The database store never holds a whole file in memory: a file goes in one chunk
(`CHUNK_BYTES`) at a time, each in its own statement, and comes out the same way into a
temporary local copy (`fetch`) that the parser reads or a download sends, then deletes.
A file is visible only once its last chunk is written: readers look for the chunks of a
name, and the name reaches an asset row only after `keep` returns.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from uuid import UUID, uuid4

from sqlalchemy import bindparam, delete, insert, select

from threadline.domain.documents import LocalCopy
from threadline.storage.database import Database
from threadline.storage.tables import blob_chunks

CHUNK_BYTES = 1024 * 1024


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

    async def fetch(self, blob_path: str) -> LocalCopy:
        path = self.path(blob_path)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(blob_path)
        return LocalCopy(path)

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


_INSERT_CHUNK = insert(blob_chunks)
_SELECT_CHUNK = select(blob_chunks.c.data).where(
    blob_chunks.c.name == bindparam("b_name"), blob_chunks.c.seq == bindparam("b_seq")
)


class DatabaseBlobStore:
    """Blobs as rows of `blob_chunks` (see the module docstring); staging stays local."""

    def __init__(self, db: Database, staging: Path) -> None:
        self._db = db
        self._staging = staging

    def staging_path(self) -> Path:
        self._staging.mkdir(parents=True, exist_ok=True)
        return self._staging / uuid4().hex

    async def keep(self, org_id: UUID, staged: Path) -> str:
        name = f"{org_id}/{uuid4().hex}"
        try:
            with staged.open("rb") as source:
                seq = 0
                while True:
                    data = await asyncio.to_thread(source.read, CHUNK_BYTES)
                    if not data and seq > 0:
                        break
                    async with self._db.write() as conn:
                        await conn.execute(_INSERT_CHUNK, {"name": name, "seq": seq, "data": data})
                    seq += 1
                    if len(data) < CHUNK_BYTES:
                        break
        except BaseException:
            await asyncio.shield(self.delete(name))
            raise
        return name  # the staged file is the caller's to remove, as with the file store

    async def fetch(self, blob_path: str) -> LocalCopy:
        """The chunks, one at a time, into a temporary local file."""
        copy = LocalCopy(self.staging_path(), temporary=True)
        try:
            with copy.path.open("wb") as target:
                seq = 0
                while True:
                    async with self._db.read() as conn:
                        data = (
                            await conn.execute(_SELECT_CHUNK, {"b_name": blob_path, "b_seq": seq})
                        ).scalar()
                    if data is None:
                        break
                    await asyncio.to_thread(target.write, data)
                    seq += 1
            if seq == 0:
                raise FileNotFoundError(blob_path)
        except BaseException:
            copy.release()
            raise
        return copy

    async def delete(self, blob_path: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(blob_chunks).where(blob_chunks.c.name == blob_path))


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
