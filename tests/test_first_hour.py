"""What a newcomer meets in the first hour (issue 14), as they would meet it: model aliases
that let the API documents' examples run verbatim, errors in each dialect's own shape, the
assets endpoint. In process (ASGI), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests import loop_watch
from tests.helpers import Fakes, make_settings
from tests.server_process import ServerProcess
from threadline import __version__
from threadline.container import create_app
from threadline.domain.events import Usage
from threadline.services.catalog import MODEL_ID_NAMESPACE
from threadline.settings import ModelConfig, Settings
from threadline.storage.tables import ai_records

CHAT = "/api/chat-with-ai"


def aliased_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """Like a fresh install: the default model under its own name, no `[aliases]` table."""
    models = {"smollm2-135m": ModelConfig(provider="fake"), "other": ModelConfig(provider="fake")}
    return make_settings(tmp_path, db_url, models=models, default_model="smollm2-135m", **overrides)


@pytest.fixture
async def aliased(tmp_path: Path, db_url: str, fakes: Fakes) -> AsyncIterator[Any]:
    application = create_app(aliased_settings(tmp_path, db_url), model_factory=fakes.factory)
    async with application.router.lifespan_context(application), loop_watch.watching("app"):
        yield application


@pytest.fixture
async def http(aliased: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=aliased)
    async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
        yield c


@pytest.fixture
async def key(aliased: Any) -> dict[str, str]:
    issued = await aliased.state.container.bootstrap()
    return {"API-KEY": issued.secret, "Content-Type": "application/json"}


# ---- model aliases ------------------------------------------------------------------------


def test_the_default_config_aliases_the_examples_model_to_the_default_model(
    tmp_path: Path,
) -> None:
    fresh = Settings(data_dir=tmp_path)
    assert fresh.model_aliases() == {"gpt-4o-mini": "smollm2-135m"}
    table = Settings(data_dir=tmp_path, aliases={})
    assert table.model_aliases() == {}


def test_an_alias_must_name_a_configured_model_and_not_shadow_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[aliases\] 'gpt-4o' = 'nope': not a configured"):
        Settings(data_dir=tmp_path, aliases={"gpt-4o": "nope"})
    with pytest.raises(ValueError, match="is a configured model itself"):
        Settings(data_dir=tmp_path, aliases={"smollm2-135m": "smollm2-135m"})


async def test_the_examples_model_name_answers_with_the_default_model_and_says_so(
    aliased: Any, http: httpx.AsyncClient, key: dict[str, str], fakes: Fakes
) -> None:
    fakes["smollm2-135m"].enqueue(["Qubits.", Usage(7, 2)])
    example = {
        "type": "UNIFY_CHAT_WITH_AI",
        "model": "gpt-4o-mini",
        "promptObject": {"prompt": "Explain quantum computing in simple terms"},
    }
    r = await http.post(CHAT, headers=key, json=example)
    assert r.status_code == 200, r.text
    record = r.json()["aiRecord"]
    assert record["model"] == "smollm2-135m"
    assert record["modelDetail"]["name"] == "smollm2-135m"
    assert record["aiRecordDetail"]["resultObject"] == ["Qubits."]
    async with aliased.state.container.db.engine.connect() as connection:
        stored = (await connection.execute(select(ai_records.c.model))).scalars().all()
    assert stored == ["smollm2-135m"]


async def test_aliases_are_listed_as_aliases(http: httpx.AsyncClient, key: dict[str, str]) -> None:
    native = (await http.get("/api/models", headers=key)).json()
    assert native["aliases"] == {"gpt-4o-mini": "smollm2-135m"}
    by_name = {m["name"]: m for m in native["models"]}
    assert by_name["smollm2-135m"]["aliases"] == ["gpt-4o-mini"]
    assert by_name["other"]["aliases"] == []
    assert "gpt-4o-mini" not in by_name

    openai = (await http.get("/v1/models", headers=key)).json()["data"]
    assert [(m["id"], m.get("alias_for")) for m in openai] == [
        ("smollm2-135m", None),
        ("other", None),
        ("gpt-4o-mini", "smollm2-135m"),
    ]
    one = (await http.get("/v1/models/gpt-4o-mini", headers=key)).json()
    assert one["id"] == "gpt-4o-mini" and one["alias_for"] == "smollm2-135m"


async def test_an_unknown_model_names_the_models_and_the_aliases(
    http: httpx.AsyncClient, key: dict[str, str]
) -> None:
    body = {"type": "UNIFY_CHAT_WITH_AI", "model": "gpt-5", "promptObject": {"prompt": "hi"}}
    r = await http.post(CHAT, headers=key, json=body)
    assert r.status_code == 422
    assert "available models: smollm2-135m, other (aliases: gpt-4o-mini)" in r.text


# ---- errors in the dialect's shape, before any route runs ---------------------------------


async def test_an_unknown_route_answers_in_the_owning_dialects_shape(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    native = await client.get("/api/no-such-thing", headers=admin)
    assert native.status_code == 404
    assert native.json() == {
        "success": False,
        "error": {"code": "NOT_FOUND", "message": "No such endpoint: GET /api/no-such-thing"},
    }
    openai = await client.get("/v1/nothing", headers=admin)
    assert openai.status_code == 404
    assert openai.json()["error"]["message"] == "No such endpoint: GET /v1/nothing"
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    sessions = await client.get("/api/conversation/nothing/here", headers=admin)
    assert sessions.status_code == 404 and sessions.json()["code"] == "NOT_FOUND"
    converse = await client.get("/api/v2/conversations/a/b/c/d", headers=admin)
    assert converse.status_code == 404
    assert converse.json() == {"message": "No such endpoint: GET /api/v2/conversations/a/b/c/d"}
    root = await client.get("/nowhere")
    assert root.status_code == 404 and root.json()["success"] is False


async def test_a_wrong_method_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    # /api/conversations has GET (list) and POST (create) as two routes
    r = await client.delete("/api/conversations", headers=admin)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert r.json()["error"]["message"] == "DELETE is not allowed here; allowed: GET, POST"
    completions = await client.get("/v1/chat/completions", headers=admin)
    assert completions.status_code == 405
    assert completions.headers["allow"] == "POST"
    assert completions.json()["error"]["type"] == "invalid_request_error"


async def test_malformed_json_names_the_line_and_column_not_an_offset(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    broken = '{\n  "type": "UNIFY_CHAT_WITH_AI",\n  "model": gpt-4o-mini\n}'
    r = await client.post(CHAT, headers=admin, content=broken)
    assert r.status_code == 400
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "body"
    assert detail["message"] == "the body is not valid JSON: Expecting value at line 3, column 12"
    openai = await client.post("/v1/chat/completions", headers=admin, content=broken)
    assert openai.status_code == 400
    assert "at line 3, column 12" in openai.json()["error"]["message"]


async def test_a_body_too_large_is_413_in_the_dialects_shape(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    big = b'{"x": "' + b"a" * 2_000_000 + b'"}'
    native = await client.post(CHAT, headers=admin, content=big)
    assert native.status_code == 413
    assert native.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    openai = await client.post("/v1/chat/completions", headers=admin, content=big)
    assert openai.status_code == 413 and "larger than 1 MB" in openai.json()["error"]["message"]


# ---- a config error is one line ------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    command = [sys.executable, "-m", "threadline", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_config_typo_is_one_line_naming_file_key_and_what_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "threadline.toml").write_text('[documents]\nocr_engine = "tess"\n')
    done = run_cli("models", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "threadline: config error in threadline.toml (or THREADLINE_* variables): "
        "documents.ocr_engine: 'tess' is not allowed; allowed: 'rapidocr' or 'tesseract'"
    ]
    (tmp_path / "threadline.toml").write_text("[documents]\nchunk_char = 900\n")
    unknown = run_cli("models", cwd=tmp_path).stderr
    assert "documents.chunk_char: not a known key; allowed keys: advanced_top_k, chunk_chars" in (
        unknown
    )
    assert "Traceback" not in unknown
    debug = run_cli("--debug", "models", cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr + debug.stdout
    assert "documents.chunk_char: not a known key" in debug.stderr


def test_a_config_file_that_is_not_toml_says_where(tmp_path: Path) -> None:
    (tmp_path / "threadline.toml").write_text('default_model = "a"\nport = \n')
    done = run_cli("models", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("not valid TOML: Invalid value (at line 2, column 8)")


# ---- GET /api/assets ------------------------------------------------------------------------


async def upload_text(client: httpx.AsyncClient, key: str, name: str) -> dict[str, Any]:
    files = {"asset": (name, f"Notes called {name}.\n".encode(), "text/plain")}
    r = await client.post("/api/assets", headers={"API-KEY": key}, files=files)
    assert r.status_code == 200, r.text
    return r.json()["asset"]  # type: ignore[no-any-return]


async def listed(client: httpx.AsyncClient, key: str, query: str = "") -> dict[str, Any]:
    for _ in range(300):
        r = await client.get(f"/api/assets{query}", headers={"API-KEY": key})
        assert r.status_code == 200, r.text
        if all(a["status"] != "RUNNING" for a in r.json()["assets"]):
            return r.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError("ingestion did not finish in 30 s")


async def test_assets_lists_the_callers_own_newest_first_with_status_and_pages(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    user = await client.post("/api/admin/users", headers=admin, json={"name": "bob"})
    made = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": user.json()["user"]["userId"]}
    )
    bob = made.json()["apiKey"]["key"]
    mine = [await upload_text(client, admin["API-KEY"], f"a{i}.txt") for i in range(3)]
    theirs = await upload_text(client, bob, "bob.txt")

    page = await listed(client, admin["API-KEY"], "?limit=2")
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [a["name"] for a in page["assets"]] == ["a2.txt", "a1.txt"]
    first = page["assets"][0]
    assert first["uuid"] == mine[2]["uuid"] and first["key"] == mine[2]["key"]
    assert (first["status"], first["pageCount"]) == ("COMPLETE", 1)
    rest = await listed(client, admin["API-KEY"], "?limit=2&offset=2")
    assert [a["name"] for a in rest["assets"]] == ["a0.txt"]
    bobs = await listed(client, bob)
    assert [a["uuid"] for a in bobs["assets"]] == [theirs["uuid"]] and bobs["total"] == 1
    bad = await client.get("/api/assets?limit=0", headers=admin)
    assert bad.status_code == 400


# ---- the CLI: whole ids, orgs that exist, asset ids that the API takes ------------------------

CLI_CONFIG = """\
default_model = "a-model-with-a-rather-long-name-for-narrow-terminals"

[models."a-model-with-a-rather-long-name-for-narrow-terminals"]
provider = "fake"

[embeddings]
provider = "none"
"""


def cli_env(cwd: Path, *args: str, columns: int = 40) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    env["COLUMNS"] = str(columns)
    command = [sys.executable, "-m", "threadline", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_models_never_truncates_piped_and_as_json(tmp_path: Path) -> None:
    (tmp_path / "threadline.toml").write_text(CLI_CONFIG)
    name = "a-model-with-a-rather-long-name-for-narrow-terminals"
    model_id = str(uuid.uuid5(MODEL_ID_NAMESPACE, name))
    piped = cli_env(tmp_path, "models")
    assert piped.returncode == 0, piped.stderr
    header, row = piped.stdout.splitlines()
    assert header.split() == ["id", "name", "provider", "capabilities", "default", "aliases"]
    assert row.split("  ")[0] == model_id and name in row.split()
    listed = json.loads(cli_env(tmp_path, "models", "--json").stdout)
    assert listed == [
        {
            "id": model_id,
            "name": name,
            "provider": "fake",
            "capabilities": ["chat", "streaming"],
            "default": True,
            "aliases": ["gpt-4o-mini"],
        }
    ]


def test_keys_create_for_an_unknown_org_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "threadline.toml").write_text(CLI_CONFIG)
    first = cli_env(tmp_path, "keys", "create", "--org", "acme", "--create-org")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith("tl_")
    typo = cli_env(tmp_path, "keys", "create", "--org", "acmee")
    assert typo.returncode == 1 and typo.stdout == ""
    assert typo.stderr.strip() == (
        "threadline: no org named 'acmee'; known orgs: acme (--create-org creates it)"
    )
    again = cli_env(tmp_path, "keys", "create", "--org", "acme")
    assert again.returncode == 0 and again.stdout.strip().startswith("tl_")


async def test_ingest_prints_the_asset_uuid_and_key_that_the_api_takes(
    tmp_path: Path, fakes: Fakes
) -> None:
    (tmp_path / "threadline.toml").write_text(CLI_CONFIG)
    (tmp_path / "notes.txt").write_text("The meeting room is on the fourth floor.\n")
    done = await asyncio.to_thread(cli_env, tmp_path, "ingest", "notes.txt")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == (
        "Use the uuid or the key in fileList or attachments.files (GET /api/assets lists them)."
    )
    row = next(line.split() for line in lines if "notes.txt" in line and "COMPLETE" in line)
    asset_uuid, asset_key = row[0], row[1]
    assert asset_key.startswith("files/") and asset_key.endswith("_notes.txt")

    settings = Settings(data_dir=tmp_path / "data", **tomllib.loads(CLI_CONFIG))
    application = create_app(settings, model_factory=fakes.factory)
    async with application.router.lifespan_context(application):
        container = application.state.container
        principal = await container.accounts.operator()
        for reference in (asset_uuid, asset_key):
            asset, document = await container.documents.get_asset(principal, reference)
            assert str(asset.id) == asset_uuid and document.state.value == "COMPLETE"


# ---- /docs and /redoc offline ---------------------------------------------------------------


async def test_docs_and_redoc_load_everything_from_the_server_itself(
    client: httpx.AsyncClient,
) -> None:
    for page in ("/docs", "/redoc"):
        r = await client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert sources, r.text
        assert not [s for s in sources if "//" in s], sources  # no other host
        assert "http" not in r.text.replace("'/openapi.json'", "")
        for source in sources:
            asset = await client.get(source)
            assert asset.status_code == 200, source
            assert len(asset.content) > 4000
    assert (await client.get("/docs-assets/../../etc/passwd")).status_code == 404
    assert (await client.get("/docs-assets/core.py")).status_code == 404


# ---- startup output and a clean stop ----------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_says_where_it_is_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    server = ServerProcess(tmp_path / "data", models={"smollm2-135m": {"provider": "fake"}})
    server.start()
    first = server.output()
    assert f"Listening on {server.base_url}" in first
    assert f"Threadline {__version__}" in first
    assert f"data dir     {(tmp_path / 'data').resolve()}" in first
    assert "database     sqlite" in first
    assert "model        smollm2-135m: fake, chat, streaming (default); also answers to " in first
    assert "gpt-4o-mini" in first
    assert 'web search   off; [search] provider = "ddgs"' in first
    assert "OCR          on, rapidocr (from pip)" in first
    assert "embeddings   off (full-text search only)" in first
    assert 'reranking    off; [rerank] provider = "cohere-compatible"' in first
    assert f"  export TL_URL={server.base_url}\n" in first
    assert f"  export TL_KEY={server.key}\n" in first
    r = httpx.get(f"{server.base_url}/api/me", headers=server.headers())
    assert r.status_code == 200

    proc = server._proc
    assert proc is not None
    proc.send_signal(stop_signal)
    assert proc.wait(60) == 0
    server._proc = None
    output = server.output()
    assert "Traceback" not in output and "Error" not in output, output
    assert output.rstrip().endswith("Stopped.")

    server.start()  # not the first start: no key, no export lines
    again = server.output(since_start=True)
    assert "Listening on" in again and "TL_KEY" not in again and server.key not in again
    server.stop()
