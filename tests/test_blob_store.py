"""`blob_store = "database"` (issue 13): uploaded files kept as chunks in the database, which
every process on it reads. On SQLite and PostgreSQL: a file of several chunks goes in and
comes out whole and byte-exact, a gone blob is not found; through the API, an upload is
ingested, downloaded and deleted with nothing left on disk or in the table."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import func, select

from tests.helpers import key_only, make_settings, until_done
from threadline.settings import Settings
from threadline.storage.blobs import CHUNK_BYTES, DatabaseBlobStore
from threadline.storage.database import Database
from threadline.storage.tables import blob_chunks


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, blob_store="database")


async def _rows(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(blob_chunks))).scalar_one())


async def test_a_file_of_several_chunks_goes_in_and_out_whole(db: Database, tmp_path: Path):
    store = DatabaseBlobStore(db, tmp_path / "staging")
    data = os.urandom(2 * CHUNK_BYTES + 12345)
    staged = store.staging_path()
    staged.write_bytes(data)
    name = await store.keep(uuid4(), staged)
    assert await _rows(db) == 3
    copy = await store.fetch(name)
    assert copy.temporary and copy.path.read_bytes() == data
    copy.release()
    assert not copy.path.exists()
    await store.delete(name)
    assert await _rows(db) == 0
    with pytest.raises(FileNotFoundError):
        await store.fetch(name)
    assert [p for p in (tmp_path / "staging").iterdir() if p != staged] == []


async def test_an_upload_kept_in_the_database_is_ingested_downloaded_and_deleted(
    client, admin, container, settings
):
    text = b"The office parrot is named Captain Nibbles. " * 200
    files = {"asset": ("parrot.txt", text, "text/plain")}
    r = await client.post("/api/assets", headers=key_only(admin), files=files)
    assert r.status_code == 200, r.text
    asset = r.json()["asset"]
    done = await until_done(client, admin, asset["uuid"])
    assert done["status"] == "COMPLETE", done
    assert done["fileCharacter"] >= len(text) - 10
    r = await client.get(f"/api/assets/{asset['uuid']}/content", headers=key_only(admin))
    assert r.status_code == 200 and r.content == text
    blobs = settings.data_dir / "blobs"
    assert [p for p in blobs.rglob("*") if p.is_file()] == []  # copies are gone once used
    assert await _rows(container.db) == 1
    r = await client.delete(f"/api/assets/{asset['uuid']}", headers=key_only(admin))
    assert r.status_code == 200
    assert await _rows(container.db) == 0
    r = await client.get(f"/api/assets/{asset['uuid']}/content", headers=key_only(admin))
    assert r.status_code == 404
