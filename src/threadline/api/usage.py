"""`GET /api/admin/usage` and `/api/admin/usage.csv` (ADMIN role): requests, tokens and
credits per day, model and user over the last `days` days (default 30) of the caller's org
(system admins: `?orgId=`). The console's usage chart reads the JSON; the CSV is the same
rows for a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from threadline.api.admin import OrgQuery
from threadline.api.deps import ContainerDep, PrincipalDep
from threadline.api.native import NATIVE_ERRORS, render_native
from threadline.api.routing import route_class
from threadline.services.usage import MAX_DAYS, UsageReport

router = APIRouter(
    prefix="/api/admin", route_class=route_class(render_native, NATIVE_ERRORS), tags=["admin"]
)
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="how many days, today included")]
COLUMNS = (
    "day",
    "model",
    "userId",
    "userName",
    "requests",
    "inputTokens",
    "outputTokens",
    "credits",
)


async def _report(principal: Any, container: Any, org_id: Any, days: int) -> UsageReport:
    org = await container.accounts.target_org(principal, org_id)
    users = await container.accounts.list_users(org)
    report: UsageReport = await container.usage.report(org, users, days)
    return report


def _rows(report: UsageReport) -> list[dict[str, Any]]:
    return [
        {
            "day": row.day.isoformat(),
            "model": row.model,
            "userId": str(row.user_id),
            "userName": report.users.get(row.user_id),
            "requests": row.requests,
            "inputTokens": row.input_tokens,
            "outputTokens": row.output_tokens,
            "credits": row.credits,
        }
        for row in report.rows
    ]


@router.get("/usage")
async def usage(
    principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None, days: Days = 30
) -> dict[str, Any]:
    """`{teamId, from, to, days: [every day], usage: [{day, model, userId, userName, requests,
    inputTokens, outputTokens, credits}], totals}`: one row per day, model and user that
    made at least one request."""
    report = await _report(principal, container, org_id, days)
    rows = _rows(report)
    totals = {
        name: sum(r[name] for r in rows)
        for name in ("requests", "inputTokens", "outputTokens", "credits")
    }
    return {
        "teamId": str(report.org.id),
        "from": report.first_day.isoformat(),
        "to": report.last_day.isoformat(),
        "days": [d.isoformat() for d in report.days],
        "usage": rows,
        "totals": totals,
    }


@router.get(
    "/usage.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def usage_csv(
    principal: PrincipalDep, container: ContainerDep, org_id: OrgQuery = None, days: Days = 30
) -> Response:
    """The same rows as CSV, with a header line."""
    report = await _report(principal, container, org_id, days)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in _rows(report):
        writer.writerow([_cell(row[c]) for c in COLUMNS])
    name = f"usage-{report.first_day.isoformat()}-{report.last_day.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _cell(value: Any) -> Any:
    """A user name a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
