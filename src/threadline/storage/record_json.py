"""How an aiRecord's citations and sources are kept in their JSON columns.

Why it exists: the record carries them as domain objects (domain/events.py `Citation`,
domain/sources.py); the columns hold plain JSON. The citations column keeps the keys it has
always had (`sourceId`, `title`, `excerpt`, `page`, `url`), so records stored before the core
spoke in objects read back the same. The sources column (revision 0008) holds each kind the
reply read, as the dataclass's own field names; a kind it did not read is left out.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from uuid import UUID

from threadline.domain.events import Citation
from threadline.domain.sources import ImageSource, PageSource, RecalledMemory, ReplySources


def citations_json(citations: tuple[Citation, ...]) -> list[dict[str, Any]]:
    return [
        {
            "sourceId": c.source_id,
            "title": c.title,
            "excerpt": c.excerpt,
            "page": c.page,
            "url": c.url,
        }
        for c in citations
    ]


def citations_from(rows: list[dict[str, Any]] | None) -> tuple[Citation, ...]:
    return tuple(
        Citation(
            source_id=row["sourceId"],
            title=row.get("title") or "",
            excerpt=row.get("excerpt") or "",
            page=row.get("page"),
            url=row.get("url"),
        )
        for row in rows or ()
    )


def sources_json(sources: ReplySources) -> dict[str, Any] | None:
    if sources.empty:
        return None
    kept: dict[str, Any] = {}
    for kind in ("links", "search", "images"):
        entries = getattr(sources, kind)
        if entries is not None:
            kept[kind] = [asdict(entry) for entry in entries]
    if sources.memories is not None:
        kept["memories"] = [{"id": str(m.id), "content": m.content} for m in sources.memories]
    return kept


def sources_from(kept: dict[str, Any] | None) -> ReplySources:
    if not kept:
        return ReplySources()

    def pages(kind: str) -> tuple[PageSource, ...] | None:
        rows = kept.get(kind)
        return None if rows is None else tuple(PageSource(**row) for row in rows)

    images = kept.get("images")
    memories = kept.get("memories")
    return ReplySources(
        links=pages("links"),
        search=pages("search"),
        images=None if images is None else tuple(ImageSource(**row) for row in images),
        memories=None
        if memories is None
        else tuple(RecalledMemory(UUID(row["id"]), row["content"]) for row in memories),
    )
