"""`documents.parser_warm_start`: the sandboxed parser's children start with the server (the
first upload finds one ready), or, when it is off, only on the first upload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import Fakes, make_settings
from threadline.container import create_app
from threadline.settings import DocumentSettings


def parser_children() -> list[int]:
    """This process's children that are parser children (by their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"threadline.ingestion.child" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("warm", [True, False])
async def test_parser_children_start_with_the_server_only_when_warm(
    tmp_path: Path, warm: bool
) -> None:
    before = set(parser_children())
    settings = make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'db'}",
        documents=DocumentSettings(parser_warm_start=warm),
    )
    app = create_app(settings, model_factory=Fakes().factory)
    async with app.router.lifespan_context(app):
        started = set(parser_children()) - before
        assert len(started) == (app.state.container.parser.pool_size if warm else 0)
