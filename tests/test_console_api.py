"""The public APIs the web console needed and that every client now has: a PDF page as a
PNG (`GET /api/assets/{id}/pages/{n}.png`), the admin usage aggregate and its CSV
(`GET /api/admin/usage`, `/api/admin/usage.csv`), title search in 1min.ai's conversation
list, the team and the configured features in `/api/me`, and the console's own page. SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.files import pdf
from tests.helpers import CHAT, Fakes, key_only, make_settings, until_done
from threadline.container import create_app
from threadline.settings import SearchSettings, YouTubeSettings

PAGES = ["The first page talks about apples.", "The second page talks about pears."]


async def _upload_pdf(client: httpx.AsyncClient, headers: dict[str, str], tmp_path: Path) -> Any:
    path = pdf(tmp_path, PAGES)
    r = await client.post(
        "/api/assets",
        headers=key_only(headers),
        files={"asset": ("fruit.pdf", path.read_bytes(), "application/pdf")},
    )
    assert r.status_code == 200, r.text
    return await until_done(client, headers, r.json()["asset"]["uuid"])


async def test_a_pdf_page_is_a_png_cached_and_scoped_to_the_org(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], tmp_path: Path
) -> None:
    asset = await _upload_pdf(client, admin, tmp_path)
    assert asset["status"] == "COMPLETE" and asset["pageCount"] == 2
    url = f"/api/assets/{asset['uuid']}/pages/2.png"
    r = await client.get(url, headers=key_only(admin))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "PNG" and image.width == 1000 and image.height > 500
    cached = list((tmp_path / "page-images").rglob("2-1000.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    again = await client.get(f"/api/assets/{asset['key']}/pages/2.png", headers=key_only(admin))
    assert again.status_code == 200 and again.content == r.content  # by key too, from the cache
    # another org's key: not found, as every object of another org
    foreign = await client.get(url, headers=acme["headers"])
    assert foreign.status_code == 404, foreign.text
    missing = await client.get(f"/api/assets/{asset['uuid']}/pages/3.png", headers=key_only(admin))
    assert missing.status_code == 404
    assert "the document has 2" in missing.json()["error"]["message"]
    zero = await client.get(f"/api/assets/{asset['uuid']}/pages/0.png", headers=key_only(admin))
    assert zero.status_code == 400
    anonymous = await client.get(url)
    assert anonymous.status_code == 401
    # deleting the asset removes its cached pages
    deleted = await client.delete(f"/api/assets/{asset['uuid']}", headers=key_only(admin))
    assert deleted.status_code == 200
    assert not cached[0].exists()
    assert (await client.get(url, headers=key_only(admin))).status_code == 404


async def test_a_page_of_a_document_that_is_not_a_pdf_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await client.post(
        "/api/assets",
        headers=key_only(admin),
        files={"asset": ("notes.txt", b"plain text notes", "text/plain")},
    )
    asset = await until_done(client, admin, r.json()["asset"]["uuid"])
    page = await client.get(f"/api/assets/{asset['uuid']}/pages/1.png", headers=key_only(admin))
    assert page.status_code == 422
    assert "not a PDF" in page.json()["error"]["message"]


async def test_usage_sums_the_org_requests_per_day_model_and_user(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], me: dict[str, Any]
) -> None:
    for model in ("gpt-4o-mini", "gpt-4o-mini", "other-model"):
        r = await client.post(
            CHAT, headers=admin, json={"model": model, "promptObject": {"prompt": "Hello there"}}
        )
        assert r.status_code == 200, r.text
    # another org's request is not counted here
    r = await client.post(
        CHAT, headers=acme["headers"], json={"model": "fake", "promptObject": {"prompt": "x"}}
    )
    assert r.status_code == 200, r.text
    r = await client.get("/api/admin/usage", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    today = datetime.now(UTC).date().isoformat()
    assert body["to"] == today and len(body["days"]) == 30 and body["days"][-1] == today
    rows = {(u["model"], u["day"]): u for u in body["usage"]}
    assert set(rows) == {("gpt-4o-mini", today), ("other-model", today)}
    priced = rows[("gpt-4o-mini", today)]
    assert priced["requests"] == 2 and priced["userName"] == me["userName"]
    assert priced["userId"] == me["userId"]
    assert priced["inputTokens"] > 0 and priced["outputTokens"] > 0
    # PRICED: 1 credit per input token, 2 per output token
    assert priced["credits"] == priced["inputTokens"] + 2 * priced["outputTokens"]
    assert body["totals"]["requests"] == 3
    mine = (await client.get("/api/me", headers=admin)).json()["user"]["usedCredit"]
    assert body["totals"]["credits"] == mine
    # the CSV: the same rows
    r = await client.get("/api/admin/usage.csv?days=7", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {(t["model"], t["requests"]) for t in table} == {
        ("gpt-4o-mini", "2"),
        ("other-model", "1"),
    }
    # a member may not see it; days out of range is a 400
    member = await client.post("/api/admin/users", headers=admin, json={"name": "m"})
    key = await client.post(
        "/api/admin/keys", headers=admin, json={"userId": member.json()["user"]["userId"]}
    )
    refused = await client.get("/api/admin/usage", headers={"API-KEY": key.json()["apiKey"]["key"]})
    assert refused.status_code == 403
    assert (await client.get("/api/admin/usage?days=0", headers=admin)).status_code == 400


async def test_usage_csv_quotes_formulas_in_user_names(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    made = await client.post("/api/admin/users", headers=admin, json={"name": "=HYPERLINK(1)"})
    user_id = made.json()["user"]["userId"]
    key = await client.post("/api/admin/keys", headers=admin, json={"userId": user_id})
    headers = {"API-KEY": key.json()["apiKey"]["key"], "Content-Type": "application/json"}
    r = await client.post(
        CHAT, headers=headers, json={"model": "fake", "promptObject": {"prompt": "hi"}}
    )
    assert r.status_code == 200, r.text
    text = (await client.get("/api/admin/usage.csv", headers=admin)).text
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text


async def test_conversations_are_searched_by_title_and_me_names_the_team(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    for title in ("Budget 2027", "Holiday plans", "budget review"):
        body = {"title": title, "type": "UNIFY_CHAT_WITH_AI", "model": "fake"}
        r = await client.post("/api/conversations", headers=admin, json=body)
        assert r.status_code == 200, r.text
    r = await client.get("/api/conversations?search=BUDGET", headers=admin)
    titles = [c["title"] for c in r.json()["conversations"]]
    assert titles == ["budget review", "Budget 2027"]  # newest first
    assert r.json()["total"] == 2
    team = (await client.get("/api/me", headers=admin)).json()["team"]
    assert team["name"] == "default" and team["teamId"]


async def test_me_says_which_configurable_features_are_on(
    client: httpx.AsyncClient, admin: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    r = await client.get("/api/me", headers=admin)
    assert r.json()["features"] == {"webSearch": False, "youtubeTranscripts": True}
    # the same database behind a server with a search provider and no YouTube transcripts
    settings = make_settings(
        tmp_path / "other",
        db_url,
        search=SearchSettings(provider="searxng", base_url="http://127.0.0.1:9"),
        youtube=YouTubeSettings(enabled=False),
    )
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://threadline") as c:
            r = await c.get("/api/me", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["features"] == {"webSearch": True, "youtubeTranscripts": False}


async def test_the_console_page_ships_with_the_package_and_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/console")
    assert r.status_code == 200 and 'data-testid="api-key"' in r.text
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    for name in ("app.js", "api.js", "markdown.js", "console.css"):
        asset = await client.get(f"/console/static/{name}")
        assert asset.status_code == 200, name
    assert (await client.get("/console/static/..%2Fapi%2Fconsole.py")).status_code == 404
    assert (await client.get("/console/static/nothing.js")).status_code == 404
    assert "http" not in (await client.get("/console")).text.replace("http-equiv", "")


async def test_stop_ends_a_running_reply_where_it_is(
    client: httpx.AsyncClient, admin: dict[str, str], acme: dict[str, Any], fakes: Fakes
) -> None:
    gate = asyncio.Event()
    fakes["gpt-4o-mini"].enqueue(["one ", "two ", gate, "three ", "four"])
    body = {"title": "stoppable", "type": "UNIFY_CHAT_WITH_AI", "model": "gpt-4o-mini"}
    cid = (await client.post("/api/conversations", headers=admin, json=body)).json()
    cid = cid["conversation"]["uuid"]
    prompt = {"model": "gpt-4o-mini", "promptObject": {"prompt": "go", "conversationId": cid}}
    reply = asyncio.create_task(client.post(CHAT, headers=admin, json=prompt))
    record_id = None
    for _ in range(400):
        detail = (await client.get(f"/api/conversations/{cid}", headers=admin)).json()
        ids = [m["aiRecordId"] for m in detail["conversation"]["messages"] if m["aiRecordId"]]
        if ids:
            record_id = ids[0]
            break
        await asyncio.sleep(0.01)
    assert record_id is not None
    # another org's key: not found; the owner's: stopped
    foreign = await client.post(f"{CHAT}/{record_id}/stop", headers=acme["headers"])
    assert foreign.status_code == 404
    stop = await client.post(f"{CHAT}/{record_id}/stop", headers=admin)
    assert stop.json() == {"success": True, "uuid": record_id, "stopped": True}
    gate.set()
    record = (await reply).json()["aiRecord"]
    assert record["status"] == "SUCCESS"
    assert record["aiRecordDetail"]["resultObject"] == ["one two "]
    assert record["usage"]["credits"] > 0  # charged what it produced
    again = await client.post(f"{CHAT}/{record_id}/stop", headers=admin)
    assert again.json()["stopped"] is False  # it had ended
    bad = await client.post(f"{CHAT}/not-a-uuid/stop", headers=admin)
    assert bad.status_code == 400
