"""What the store can hold, checked at the edge so that no request reaches SQL with a value
the database cannot represent (which would be a 500 instead of the caller's mistake).

Two halves:

- Bounded integer types (`Offset`, `page_limit`, `StoreInt`, ...) for every integer of every
  dialect's query and body schemas: they appear in `/openapi.json` as `minimum`/`maximum`,
  and a value outside them is the dialect's 400 like any other invalid field. The bound is
  +-(2^53 - 1), `JSON_INT_MAX`: within the store's 64 bits, and the largest integer every
  JSON client (and schema tool) represents exactly, where 2^63 - 1 is not. Body integers are
  strict: `true` or `"5"` is not a number.
- `CheckedRequest`, the request every dialect route parses: its JSON body, form fields, file
  names, query and path parameters are refused when they hold a number that is not finite
  (`1e999`, `NaN`: JSON cannot store it back), a NUL character (PostgreSQL text cannot store
  one) or a lone UTF-16 surrogate (`"\\ud800"`, not encodable as UTF-8). The refusal is an
  `Unrepresentable` error that `routing` renders as the owning dialect's validation error,
  naming the field.

Integers inside free-form JSON (`metadata`) are kept as sent: they are stored as JSON, which
holds any integer; only declared fields reach integer columns, and those are bounded.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, Field
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

JSON_INT_MAX = 2**53 - 1  # every declared integer field's bound (see above)
_MAX_DIGITS = 16  # JSON_INT_MAX's
_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a parsed JSON body can hold a NUL or a surrogate: an escape (a raw NUL byte is not
# JSON, a raw surrogate is not UTF-8). Escaped surrogate *pairs* (emoji, as Python's json
# writes them) match too; they are then told apart by encoding the parsed body.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: `2.0` is one (a JSON number with no fractional part), `true`
    and `"2"` are not. Integral floats become ints; the rest is left to strict validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_INTEGER = BeforeValidator(_json_integer)
# (the validator after the Field: so the schema keeps JSON Schema's minimum/maximum)
StoreInt = Annotated[int, Field(ge=-JSON_INT_MAX, le=JSON_INT_MAX, strict=True), _INTEGER]
NonNegative = Annotated[int, Field(ge=0, le=JSON_INT_MAX, strict=True), _INTEGER]
Positive = Annotated[int, Field(ge=1, le=JSON_INT_MAX, strict=True), _INTEGER]
Offset = Annotated[int, Query(ge=0, le=JSON_INT_MAX, description="skip this many")]


def page_limit(description: str = "at most this many (capped)") -> Any:
    """A `limit` query parameter: 1 or more (a larger one is capped by the service)."""
    return Query(ge=1, le=JSON_INT_MAX, description=description)


def store_int(text: str) -> int | None:
    """`text` as a non-negative integer the store can hold, or None (ASCII digits only:
    `str.isdigit` also takes "²", which `int()` refuses)."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    value = int(text)
    return value if value <= JSON_INT_MAX else None


class Unrepresentable(HTTPException):
    """A value the store cannot hold; `loc` names where (FastAPI re-raises an
    HTTPException from body parsing, so the route can render it in its dialect's shape)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(400, message)
        self.loc = loc
        self.message = message

    def as_validation_error(self) -> RequestValidationError:
        error = {"type": "unrepresentable", "loc": self.loc, "msg": self.message}
        return RequestValidationError([error])


def problem(value: str) -> str | None:
    """Why a string cannot be stored, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if not value.isascii() and _SURROGATE.search(value):
        return "contains a lone UTF-16 surrogate, which is not valid Unicode text"
    return None


def parse_json(body: bytes) -> tuple[Any, bool]:
    """The parsed body, and whether it may hold a value the store cannot (for `verify`).
    Linear, and cheap for a clean body: one regex scan of the bytes; floats and
    NaN/Infinity are flagged as they are parsed."""
    suspect = False

    def number(text: str) -> float:
        nonlocal suspect
        value = float(text)
        suspect = suspect or not math.isfinite(value)  # 1e999
        return value

    def constant(_name: str) -> float:
        nonlocal suspect
        suspect = True  # NaN, Infinity, -Infinity: not JSON
        return math.nan

    parsed = json.loads(body, parse_float=number, parse_constant=constant)
    escaped = b"\x00" in body or _SUSPECT_ESCAPE.search(body) is not None  # \x00: UTF-16/32
    return parsed, suspect or escaped


def verify(parsed: Any) -> None:
    """Raise `Unrepresentable` naming the first value the store cannot hold (a body with
    escaped emoji is settled by the C encoder; only a real problem is walked for)."""
    if not _encodable(parsed) or _has_non_finite(parsed):
        check_json(parsed)


def _has_non_finite(parsed: Any) -> bool:
    try:
        json.dumps(parsed, allow_nan=False)
    except ValueError:
        return True
    return False


def _encodable(parsed: Any) -> bool:
    """No NUL and no lone surrogate anywhere, told by the C encoder (a string holding the
    characters backslash-u-0000 reads as a false alarm, settled by `check_json`)."""
    try:
        text = json.dumps(parsed, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\\u0000" not in text


def _value_problem(value: object) -> str | None:
    if isinstance(value, str):
        return problem(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
    return None


def check_json(document: Any) -> None:
    """Raise `Unrepresentable` for the first value of the parsed body the store cannot
    hold (iterative: the depth of a body is the client's choice)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), document)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if (why := problem(key)) is not None:
                    raise Unrepresentable(loc, f"a field name {why}")
                stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, index), item) for index, item in enumerate(value))
        elif (why := _value_problem(value)) is not None:
            raise Unrepresentable(loc, why)


def check_form(form: FormData) -> None:
    for name, value in form.multi_items():
        text = value.filename or "" if isinstance(value, UploadFile) else value
        for what, loc in ((name, ("body",)), (text, ("body", name))):
            if (why := problem(what)) is not None:
                field = "file name" if isinstance(value, UploadFile) and what is text else None
                raise Unrepresentable(loc, f"the {field} {why}" if field else why)


def check_params(request: Request) -> None:
    """Query and path parameters (percent-decoding can make a NUL: `?q=%00`)."""
    for name, value in request.query_params.multi_items():
        if (why := problem(name) or problem(value)) is not None:
            raise Unrepresentable(("query", name), why)
    for name, value in request.path_params.items():
        if isinstance(value, str) and (why := problem(value)) is not None:
            raise Unrepresentable(("path", name), why)


YIELD_AFTER_BYTES = 64 * 1024


class CheckedRequest(Request):
    """A request whose JSON and form bodies are checked as they are parsed (once: the
    parsed body is what FastAPI validates)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            parsed, suspect = parse_json(body)
            if suspect:  # settled off the event loop (the body may be large)
                await asyncio.to_thread(verify, parsed)
            elif len(body) > YIELD_AFTER_BYTES:
                # Parsing and validating a big body are each one C call holding the loop
                # (~20 ms a MB here): let other requests run between the two.
                await asyncio.sleep(0)
            self._json = parsed
        return self._json

    async def _get_form(self, **limits: Any) -> FormData:
        form = await super()._get_form(**limits)
        try:
            check_form(form)
        except Unrepresentable:
            await form.close()
            raise
        return form
