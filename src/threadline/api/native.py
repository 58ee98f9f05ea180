"""Threadline's own error shape, the same as 1min.ai's:
`{"success": false, "error": {"code", "message"[, "details"]}}`. Used by the admin API,
the system endpoints, and dialects that share the shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from threadline.api.routing import error_responses
from threadline.domain.entities import User
from threadline.domain.errors import ThreadlineError


class NativeErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class NativeError(BaseModel):
    """`{"success": false, "error": {"code", "message"[, "details"]}}`"""

    success: Literal[False]
    error: NativeErrorDetail


NATIVE_ERRORS = error_responses(
    NativeError, (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504)
)


def error_body(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"success": False, "error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def validation_details(
    exc: RequestValidationError, strip: tuple[str, ...] = ("body",)
) -> list[dict[str, str]]:
    """Pydantic errors as `{field, message}` pairs a person can act on."""
    details = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if str(part) not in strip]
        field = ".".join(loc) or "body"
        details.append({"field": field, "message": describe(field, error)})
    return details


def describe(field: str, error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    parent, _, name = field.rpartition(".")
    if name.isdigit() and parent:  # an item of a list: "ids[0]", not "0"
        name = f"{parent.rsplit('.', 1)[-1]}[{name}]"
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"{name} is not a known field"
    if kind == "json_invalid":
        ctx = error.get("ctx") or {}
        if "position" in ctx:
            return f"the body is not valid JSON: {ctx.get('error', 'invalid')} at {ctx['position']}"
        return "the body is not valid JSON"
    simple = {
        "string_type": "a string",
        "bool_type": "a boolean",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "bool_parsing": "a boolean",
        "list_type": "an array",
        "dict_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
        "uuid_parsing": "a valid UUID",
        "uuid_type": "a valid UUID",
    }
    if kind in simple:
        return f"{name} must be {simple[kind]}"
    bounds = {"less_than_equal": "at most", "greater_than_equal": "at least"}
    if kind in bounds and "ctx" in error:
        limit = next(iter(error["ctx"].values()))
        return f"{name} must be {bounds[kind]} {limit}"
    return f"{name}: {error.get('msg', 'invalid value')}"


def render_native(_request: Request, exc: ThreadlineError | RequestValidationError) -> JSONResponse:
    if isinstance(exc, RequestValidationError):
        return error_response(
            400,
            "INVALID_REQUEST",
            "Missing required parameters or invalid format",
            validation_details(exc),
        )
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def team_user(user: User) -> dict[str, Any]:
    return {
        "teamId": str(user.org_id),
        "userId": str(user.id),
        "userName": user.name,
        "userAvatar": None,
        "status": user.status,
        "role": user.role.value,
        "creditLimit": user.credit_limit,
        "usedCredit": user.used_credit,
        "createdAt": iso(user.created_at),
        "createdBy": user.created_by,
        "updatedAt": iso(user.updated_at),
        "updatedBy": user.updated_by,
    }
