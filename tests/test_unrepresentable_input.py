"""Input the store cannot hold is the caller's mistake, in every dialect: an integer outside
64 bits, a lone surrogate, a NUL character, a number that is not finite. Each is a 4xx in the
owning dialect's error shape naming the field, never a 500, on SQLite and PostgreSQL. And a
stream that has started and then fails ends with the dialect's error event, never a dropped
connection."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import httpx
import pytest

from threadline.api.bounds import JSON_INT_MAX

TOO_BIG = 2**63  # one past SQLite INTEGER / PostgreSQL BIGINT
PAST_BOUND = (JSON_INT_MAX + 1, TOO_BIG, 10**30)  # every declared integer's bound is 2^53 - 1
SURROGATE = "\ud800"
JSON = {"Content-Type": "application/json"}
BOUNDARY = "b0undary"


def multipart(fields: dict[str, str], file_field: str, file_name: bytes) -> tuple[bytes, dict]:
    """A multipart body written by hand: clients percent-encode a NUL in a file name, a
    hostile one need not."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="'.encode()
        + file_name
        + b'"\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
    )
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def raw_json(value: dict[str, Any]) -> bytes:
    """JSON as a client may send it: a lone surrogate escaped (valid JSON text)."""
    return json.dumps(value).encode()


def native_error(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["error"]["message"], body
    return dict(body["error"])


@pytest.fixture
async def org_id(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    return str((await client.get("/api/me", headers=admin)).json()["user"]["teamId"])


@pytest.fixture
async def conversation_id(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    body = {"type": "UNIFY_CHAT_WITH_AI", "title": "t", "model": "gpt-4o-mini"}
    r = await client.post("/api/conversations", headers=admin, json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["conversation"]["uuid"])


# ---- integers outside the store's range ---------------------------------------------------


async def test_offsets_and_limits_past_64_bits_are_400_on_every_list(
    client, admin, org_id, conversation_id
):
    native = ["/api/conversations", f"/api/conversations/{conversation_id}"]
    native += ["/api/brand-voices", "/api/memories"]
    for path in native:
        for param in ("offset", "limit"):
            for value in PAST_BOUND:
                r = await client.get(f"{path}?{param}={value}", headers=admin)
                error = native_error(r)
                assert error["code"] == "INVALID_REQUEST"
                assert error["details"][0]["field"] == f"query.{param}", error
                assert "must be at most 9007199254740991" in error["details"][0]["message"]
        ok = await client.get(f"{path}?offset={JSON_INT_MAX}&limit={JSON_INT_MAX}", headers=admin)
        assert ok.status_code == 200, (path, ok.text)
    sessions = [f"/api/conversation/list?org_id={org_id}"]
    sessions += [f"/api/conversation/messages?org_id={org_id}&conversation_id={uuid4()}"]
    for path in sessions:
        r = await client.get(f"{path}&offset={TOO_BIG}", headers=admin)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", r.text
        assert r.json()["errors"][0]["field"] == "offset"
    r = await client.get(f"/api/v2/conversations?offset={TOO_BIG}", headers=admin)
    assert r.status_code == 400 and "offset" in r.json()["message"], r.text
    assert list(r.json()) == ["message"]


async def test_credit_limit_past_the_bound_is_400_and_the_largest_is_stored(client, admin):
    bad = [*PAST_BOUND, -1, True, "5", 1.5]
    for body in [{"name": "a", "creditLimit": value} for value in bad]:
        r = await client.post("/api/admin/users", headers=admin, json=body)
        assert native_error(r)["details"][0]["field"] == "creditLimit"
    r = await client.post("/api/admin/users", headers=admin, json={"name": "b", "creditLimit": 7})
    assert r.status_code == 201, r.text
    user_id = r.json()["user"]["userId"]
    r = await client.patch(
        f"/api/admin/users/{user_id}", headers=admin, json={"creditLimit": 10**30}
    )
    assert native_error(r)["details"][0]["field"] == "creditLimit"
    r = await client.patch(
        f"/api/admin/users/{user_id}", headers=admin, json={"creditLimit": JSON_INT_MAX}
    )
    assert r.status_code == 200 and r.json()["user"]["creditLimit"] == JSON_INT_MAX, r.text


async def test_declared_integers_past_the_bound_are_refused_free_form_ones_kept(client, admin):
    """A declared integer field is bounded (here inside promptObject: 1min.ai's 422); an
    integer inside free-form JSON (metadata) is stored as JSON, which holds any integer."""
    settings = {"historySettings": {"historyMessageLimit": TOO_BIG}}
    body = {"model": "gpt-4o-mini", "promptObject": {"prompt": "hi", "settings": settings}}
    r = await client.post("/api/chat-with-ai", headers=admin, json=body)
    error = native_error(r, 422)
    assert error["details"][0]["field"] == "settings.historySettings.historyMessageLimit"
    metadata = {"n": 2**70, "m": -(2**64), "x": 1.5e300}
    body = {"model": "gpt-4o-mini", "promptObject": {"prompt": "hi"}, "metadata": metadata}
    r = await client.post("/api/chat-with-ai", headers=admin, json=body)
    assert r.status_code == 200, r.text
    record_id = r.json()["aiRecord"]["uuid"]
    again = await client.get(f"/api/chat-with-ai/{record_id}", headers=admin)
    assert again.json()["aiRecord"]["metadata"] == metadata


async def test_converse_ids_past_64_bits_are_400_and_odd_digits_404(client, admin):
    key = {"API-KEY": admin["API-KEY"]}
    r = await client.post("/api/v2/conversations", headers=key, data={"name": "c"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = await client.delete(f"/api/v2/conversations/{cid}/documents?ids={TOO_BIG}", headers=key)
    assert r.status_code == 400 and "ids must be integers" in r.json()["message"], r.text
    r = await client.request(
        "DELETE",
        f"/api/v2/conversations/{cid}/documents",
        headers=admin,
        content=raw_json({"ids": [TOO_BIG]}),
    )
    assert r.status_code == 400 and list(r.json()) == ["message"], r.text
    for odd in ("²", str(TOO_BIG)):
        r = await client.get(f"/api/v2/conversations/{cid}/documents/{odd}", headers=admin)
        assert r.status_code == 404, r.text


# ---- text the store cannot hold: NUL, lone surrogates; numbers that are not finite ----------


@pytest.mark.parametrize("bad", ["a\x00b", f"a{SURROGATE}b"])
async def test_nul_and_lone_surrogates_are_400_in_each_dialects_shape(
    client, admin, org_id, conversation_id, bad
):
    bearer = {"Authorization": admin["API-KEY"], "Content-Type": "application/json"}
    bearer["Authorization"] = f"Bearer {admin['API-KEY']}"
    messages = [{"role": "user", "content": bad}]
    for stream in (False, True):
        body = {"model": "gpt-4o-mini", "messages": messages, "stream": stream}
        r = await client.post("/v1/chat/completions", headers=bearer, content=raw_json(body))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "messages[0].content" and error["type"] == "invalid_request_error"
    body = {"model": "gpt-4o-mini", "promptObject": {"prompt": bad}}
    r = await client.post("/api/chat-with-ai", headers=admin, content=raw_json(body))
    assert native_error(r, 422)["code"] == "PROMPT_OBJECT_VALIDATION_FAILED"
    r = await client.post(
        "/api/conversations",
        headers=admin,
        content=raw_json({"type": "CHAT_WITH_AI", "title": bad, "model": "gpt-4o-mini"}),
    )
    assert native_error(r)["details"][0]["field"] == "title"
    r = await client.post(
        f"/api/conversation/create?org_id={org_id}",
        headers=bearer,
        content=raw_json({"title": bad}),
    )
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "title", r.text
    r = await client.post(
        f"/api/v2/conversations/{conversation_id}/prompts",
        headers=bearer,
        content=raw_json({"question": bad, "document_ids": [1]}),
    )
    assert r.status_code == 400 and r.json()["message"].startswith("question"), r.text
    r = await client.post(
        "/api/admin/users", headers=admin, content=raw_json({"name": "x", bad: 1})
    )
    assert "field name" in native_error(r)["message"] or native_error(r)["details"]


async def test_a_nul_in_the_query_or_path_is_400(client, admin, org_id):
    r = await client.get("/api/v2/conversations?search_string=a%00b", headers=admin)
    assert r.status_code == 400 and "search_string" in r.json()["message"], r.text
    r = await client.get("/api/assets/a%00b", headers=admin)
    assert native_error(r)["details"][0]["field"] == "path.asset_id"
    r = await client.get(f"/api/conversation/list?org_id={org_id}&x=%00", headers=admin)
    assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST", r.text


async def test_numbers_that_are_not_finite_are_400(client, admin):
    for number in ("1e999", "NaN", "-Infinity"):
        body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], '
        body += f'"temperature": {number}}}'
        headers = {"Authorization": f"Bearer {admin['API-KEY']}", **JSON}
        r = await client.post("/v1/chat/completions", headers=headers, content=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == "temperature", r.text


async def test_form_fields_and_file_names_with_a_nul_are_400(client, admin):
    key = {"API-KEY": admin["API-KEY"]}
    r = await client.post("/api/v2/conversations", headers=key, data={"name": "a\x00b"})
    assert r.status_code == 400 and r.json()["message"].startswith("name"), r.text
    body, form = multipart({"name": "n"}, "files", b"re\x00port.txt")
    r = await client.post("/api/v2/conversations", headers={**key, **form}, content=body)
    assert r.status_code == 400 and "file name" in r.json()["message"], r.text
    body, form = multipart({}, "asset", b"re\x00port.txt")
    r = await client.post("/api/assets", headers={**key, **form}, content=body)
    assert "file name" in native_error(r)["details"][0]["message"]
    listed = await client.get("/api/v2/conversations", headers=key)
    assert listed.json()["conversations"] == [], "nothing was created"


async def test_escaped_emoji_and_a_literal_backslash_u0000_are_text_like_any_other(
    client, admin, fakes
):
    """No false alarm: surrogate *pairs* (Python's json escapes emoji so) and the six
    characters `\\u0000` typed as text are stored and answered as sent."""
    prompt = "smile \U0001f600 and the text \\u0000"
    fakes["gpt-4o-mini"].enqueue(["ok"])
    body = {"model": "gpt-4o-mini", "promptObject": {"prompt": prompt}}
    r = await client.post("/api/chat-with-ai", headers=admin, content=raw_json(body))
    assert r.status_code == 200, r.text
    assert b"\\ud83d\\ude00" in raw_json(body)  # it was sent escaped
    assert r.json()["aiRecord"]["aiRecordDetail"]["promptObject"]["prompt"] == prompt
