"""Credit reservations in SQL (implements `ports.CreditStore`; see services/credits.py).

Why a row and a column: `users.reserved_credit` is what makes a reservation atomic. One
conditional UPDATE adds to it only while `credit_limit - used_credit - reserved_credit` still
covers the request; concurrent reservations of one user queue on that row (PostgreSQL
re-checks the condition against the row as the previous one left it; SQLite has one writer),
so no two of them can both take the last credits. The `credit_reservations` row (the run's id,
the credits, when) says which run holds what, so that exactly one party gives them back:

- the run, when it settles: the row is deleted and its credits leave `reserved_credit` in the
  same transaction that charges the real cost and stores the reply (`settle`);
- a server starting: rows older than its start belong to runs a stopped process left behind
  (as `RecordStore.fail_unfinished` fails their records) and are released (`release_stale`).

Deleting the row is the claim: on PostgreSQL the settle is one statement whose DELETE takes
the row's lock and releases only what it deleted, so two parties never both release it.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    DateTime,
    Uuid,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.storage.database import Database, utcnow
from threadline.storage.prepared import Prepared, PreparedQuery
from threadline.storage.tables import credit_reservations, nodes, users

_OWNER = (users.c.org_id == bindparam("c_org_id"), users.c.id == bindparam("c_user_id"))
_CREDITS = bindparam("c_credits", type_=BigInteger)
_ID = bindparam("c_id", type_=Uuid)

# Reserve: take `c_credits` when at least `c_need` are left (`need` is the credits, or 1 for a
# free request: a user with nothing left runs nothing). Subtraction, never an addition that
# could pass BIGINT's range.
_TAKE = (
    update(users)
    .where(
        *_OWNER,
        users.c.credit_limit - users.c.used_credit - users.c.reserved_credit
        >= bindparam("c_need", type_=BigInteger),
    )
    .values(reserved_credit=users.c.reserved_credit + _CREDITS)
    .returning(users.c.id)
)
_ROW = {
    "id": _ID,
    "org_id": bindparam("c_org_id", type_=Uuid),
    "user_id": bindparam("c_user_id", type_=Uuid),
    "credits": _CREDITS,
    "created_at": bindparam("c_now", type_=DateTime(timezone=True)),
    "node_id": bindparam("c_node", type_=Uuid),
}
_INSERT_ROW = Prepared(insert(credit_reservations).values(**_ROW))
# PostgreSQL: both in one statement (a round trip saved on a run's start).
_TAKE_QUERY = PreparedQuery(_TAKE)
_taken = _TAKE.cte("taken")
_TAKE_AND_RECORD = (
    insert(credit_reservations)
    .from_select(list(_ROW), select(*_ROW.values()).select_from(_taken))
    .returning(credit_reservations.c.id)
)

# Settle: charge `c_charge`, release what the run's row holds, delete the row.
_held = (
    select(func.coalesce(func.sum(credit_reservations.c.credits), 0))
    .where(credit_reservations.c.id == _ID)
    .scalar_subquery()
)
_CHARGE = bindparam("c_charge", type_=BigInteger)
_SETTLE_SQLITE = Prepared(
    update(users)
    .where(*_OWNER)
    .values(
        used_credit=users.c.used_credit + _CHARGE,
        reserved_credit=users.c.reserved_credit - _held,
    )
)
_DELETE_ROW = Prepared(delete(credit_reservations).where(credit_reservations.c.id == _ID))
_released = (
    delete(credit_reservations)
    .where(credit_reservations.c.id == _ID)
    .returning(credit_reservations.c.credits)
    .cte("released")
)
_SETTLE_PG = (
    update(users)
    .where(*_OWNER)
    .values(
        used_credit=users.c.used_credit + _CHARGE,
        reserved_credit=users.c.reserved_credit
        - select(func.coalesce(func.sum(_released.c.credits), 0)).scalar_subquery(),
    )
    .add_cte(_released)
)


class SqlCreditStore:
    def __init__(self, db: Database, node_id: UUID | None = None) -> None:
        """`node_id`: the process whose runs take the reservations (storage/nodes.py)."""
        self._db = db
        self._node_id = node_id

    async def reserve(self, org_id: UUID, user_id: UUID, run_id: UUID, credits: int) -> bool:
        """Hold `credits` for run `run_id` if they fit what the user has left (True)."""
        values = {
            "c_org_id": org_id,
            "c_user_id": user_id,
            "c_id": run_id,
            "c_credits": credits,
            "c_need": max(credits, 1),
            "c_now": utcnow(),
            "c_node": self._node_id,
        }
        take = partial(_take, credits, self._db.is_sqlite, values)
        return await self._db.run_claim(take, urgent=True) is not None

    async def release(self, org_id: UUID, user_id: UUID, run_id: UUID) -> None:
        """Give back what run `run_id` holds, charging nothing (a run that could not be
        stored). Nothing happens when it holds nothing (any more)."""
        async with self._db.write(batched=True) as conn:
            await settle(conn, self._db.is_sqlite, org_id, user_id, run_id, 0)

    async def release_stale(self, before: datetime) -> int:
        """Release the reservations taken before `before` whose process is gone (as
        `RecordStore.fail_unfinished` decides). Returns how many there were."""
        node = credit_reservations.c.node_id
        async with self._db.write() as conn:
            stale = and_(
                credit_reservations.c.created_at < before,
                or_(node.is_(None), node.not_in(select(nodes.c.id))),
            )
            rows = (
                await conn.execute(
                    delete(credit_reservations)
                    .where(stale)
                    .returning(
                        credit_reservations.c.org_id,
                        credit_reservations.c.user_id,
                        credit_reservations.c.credits,
                    )
                )
            ).all()
            held: dict[tuple[UUID, UUID], int] = {}
            for org_id, user_id, credits in rows:
                held[(org_id, user_id)] = held.get((org_id, user_id), 0) + credits
            for (org_id, user_id), credits in held.items():
                await conn.execute(
                    update(users)
                    .where(users.c.org_id == org_id, users.c.id == user_id)
                    .values(reserved_credit=users.c.reserved_credit - credits)
                )
        return len(rows)


async def settle(
    conn: AsyncConnection,
    is_sqlite: bool,
    org_id: UUID,
    user_id: UUID,
    run_id: UUID,
    charge: int,
) -> None:
    """Inside the caller's transaction: charge `charge` and release what run `run_id` holds
    (nothing if it holds nothing). SQLite has one writer, so its two statements cannot
    interleave with another release; PostgreSQL's one statement claims the row by deleting it."""
    await conn.run_sync(settle_rows, is_sqlite, org_id, user_id, run_id, charge)


def settle_rows(
    conn: Connection, is_sqlite: bool, org_id: UUID, user_id: UUID, run_id: UUID, charge: int
) -> None:
    """`settle` on a plain connection (in `Database.run_write`'s work)."""
    values: dict[str, Any] = {
        "c_org_id": org_id,
        "c_user_id": user_id,
        "c_id": run_id,
        "c_charge": charge,
    }
    if is_sqlite:
        _SETTLE_SQLITE.run_sync(conn, values)
        _DELETE_ROW.run_sync(conn, values)
    else:
        conn.execute(_SETTLE_PG, values)


def _take(credits: int, is_sqlite: bool, values: dict[str, Any], conn: Connection) -> bool:
    """`reserve`'s transaction (in `Database.run_claim`; on SQLite the take guards the
    record of who holds the credits: one trip with the commit)."""
    if credits and not is_sqlite:
        return conn.execute(_TAKE_AND_RECORD, values).first() is not None
    if not _TAKE_QUERY.guard(conn, values):
        return False
    if credits:
        _INSERT_ROW.run_sync(conn, values)
    return True
