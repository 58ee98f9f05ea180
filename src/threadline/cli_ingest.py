"""`threadline ingest` and `threadline worker`: document ingestion from the command line.

`ingest` uploads files as the CLI's admin (see cli_chat), optionally into a conversation,
then runs the ingestion jobs in-process with a progress bar and prints each document's
outcome. `worker` runs the job worker on its own, for deployments that keep ingestion
out of the API processes (`documents.embedded_worker = false`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from threadline.cli_tables import print_table
from threadline.domain.documents import Asset, Document, DocumentState
from threadline.domain.errors import ThreadlineError
from threadline.services.documents import Upload

if TYPE_CHECKING:
    from threadline.container import Container

console = Console()


def expand(paths: Sequence[Path]) -> list[Path]:
    """Files as given, and the files under directories (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


async def run_ingest(container: Container, paths: Sequence[Path], conversation: str | None) -> int:
    caller = await container.accounts.operator()
    conversation_id = None
    if conversation is not None:
        try:
            conversation_id = (await container.conversations.get(caller, UUID(conversation))).id
        except (ValueError, ThreadlineError):
            console.print(f"[red]error:[/] conversation {conversation} not found")
            return 1
    files = expand(paths)
    documents: list[tuple[Asset, Document]] = []
    failures = 0
    with _progress() as progress:
        task = progress.add_task("ingesting", total=len(files))
        for path in files:
            progress.update(task, description=path.name)
            with path.open("rb") as handle:
                [outcome] = await container.documents.add(
                    caller, [Upload(path.name, None, handle)], conversation_id=conversation_id
                )
            if outcome.document is None:
                failures += 1
                progress.console.print(f"[red]refused[/] {path}: {outcome.reason}")
                progress.advance(task)
                continue
            await container.worker.run_until_idle()
            document = await container.documents.get_document(caller, outcome.document.id)
            assert outcome.asset is not None  # a document is always of an asset
            documents.append((outcome.asset, document))
            failures += document.state is DocumentState.FAILED
            progress.advance(task)
    _summary(documents)
    return 1 if failures else 0


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<40.40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _summary(documents: Sequence[tuple[Asset, Document]]) -> None:
    """Each file's asset uuid and key (what `fileList` and `attachments.files` take), and
    how its ingestion ended."""
    columns = ("uuid", "key", "name", "state", "pages", "characters", "reason")
    rows = [
        (
            str(a.id),
            a.key,
            d.name,
            d.state.value,
            str(d.page_count),
            str(d.char_count),
            d.reason or "",
        )
        for a, d in documents
    ]
    print_table(console, columns, rows)
    if documents:
        console.print(
            "Use the uuid or the key in fileList or attachments.files "
            "(GET /api/assets lists them).",
            highlight=False,
            soft_wrap=True,
        )


async def run_worker(container: Container) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    container.worker.start()
    console.print(f"worker {container.worker.name} running; Ctrl-C stops it")
    await stop.wait()
    return 0
