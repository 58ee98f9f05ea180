"""SQLite write transactions take turns: urgent ones first, without starving the others."""

from __future__ import annotations

import asyncio

from threadline.storage.database import URGENT_IN_A_ROW, WriteTurns


async def _queue(turns: WriteTurns, order: list[str], name: str, urgent: bool) -> None:
    await turns.acquire(urgent)
    order.append(name)
    await asyncio.sleep(0)
    turns.release()


async def test_urgent_turns_go_first_but_never_starve_the_others():
    turns, order = WriteTurns(), []
    await turns.acquire(False)  # someone is writing
    waiting = [asyncio.create_task(_queue(turns, order, f"n{i}", False)) for i in range(2)]
    waiting += [asyncio.create_task(_queue(turns, order, f"u{i}", True)) for i in range(6)]
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*waiting)
    urgent_first = [f"u{i}" for i in range(URGENT_IN_A_ROW)]
    assert order[:URGENT_IN_A_ROW] == urgent_first
    assert order[URGENT_IN_A_ROW] == "n0"  # then a normal one gets its turn
    assert sorted(order) == sorted(["n0", "n1"] + [f"u{i}" for i in range(6)])


async def test_a_cancelled_waiter_passes_its_turn_on():
    turns, order = WriteTurns(), []
    await turns.acquire(False)
    gone = asyncio.create_task(turns.acquire(True))
    after = asyncio.create_task(_queue(turns, order, "after", False))
    await asyncio.sleep(0)
    gone.cancel()
    turns.release()
    await after
    assert order == ["after"]
    await turns.acquire(True)  # free again
    turns.release()


async def test_cancelled_while_being_handed_the_turn():
    turns, order = WriteTurns(), []
    await turns.acquire(False)
    handed = asyncio.create_task(turns.acquire(True))
    after = asyncio.create_task(_queue(turns, order, "after", False))
    await asyncio.sleep(0)
    turns.release()  # hands the turn to `handed`...
    handed.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(handed, return_exceptions=True)
    await after
    assert order == ["after"]
