"""Checks on an Office (OOXML) package before any XML in it is parsed.

An Office file is a ZIP of XML parts, which makes it a vehicle for two old attacks: the
decompression bomb (a few kilobytes that unpack to gigabytes) and the XML entity tricks
(billion laughs; external entities that pull in `/etc/passwd`). OOXML forbids DTDs outright
(ECMA-376 Part 2, Open Packaging Conventions), so a part that declares one is refused before
python-docx, python-pptx or openpyxl see it, and a package whose parts claim to unpack to more
than the child's memory could hold is refused without unpacking. (The sizes come from the
central directory; Python's zipfile never yields more than a member's declared size, so a
lie there only truncates the member.) The memory limit of the sandbox stays the backstop.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.parsers import expat

from threadline.domain.documents import ParseFailed
from threadline.ingestion.formats.job import Job

MiB = 1024 * 1024
UNPACKED_PER_MEMORY = 2
"""A package may unpack to at most this many times the child's memory limit."""
MAX_PROLOG_BYTES = 64 * 1024
"""An XML part must reach its root element within this many bytes."""
XML_SUFFIXES = (".xml", ".rels", ".vml")

DAMAGED = "the file is damaged: it is not a readable Office document"


class _RootReached(Exception):
    pass


class _DtdFound(Exception):
    pass


def check_package(path: Path, job: Job) -> None:
    """Raise `ParseFailed` for a ZIP bomb, a DTD in any XML part, or a broken archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            unpacked = sum(member.file_size for member in members)
            if unpacked > UNPACKED_PER_MEMORY * job.memory_mb * MiB:
                raise job.memory_failure(f"it unpacks to {unpacked // MiB} MB")
            for member in members:
                if member.filename.lower().endswith(XML_SUFFIXES):
                    _check_prolog(archive, member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError):
        raise ParseFailed(DAMAGED) from None


def _check_prolog(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """Feed the part to expat until its root element starts; a DTD before it is refused."""
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler = _stop_at_root
    seen = 0
    with archive.open(member) as part:
        while seen <= MAX_PROLOG_BYTES:
            chunk = part.read(4096)
            seen += len(chunk)
            try:
                parser.Parse(chunk, not chunk)
            except _RootReached:
                return
            except _DtdFound:
                raise ParseFailed(
                    "the file is not a valid Office document: its XML declares a DTD, which"
                    " Office files never do (an XML entity bomb or attack?)"
                ) from None
            except expat.ExpatError:
                return  # malformed XML: the format's own parser will judge it
            if not chunk:
                return
    raise ParseFailed(DAMAGED)


def _refuse_dtd(*_: object) -> None:
    raise _DtdFound


def _stop_at_root(*_: object) -> None:
    raise _RootReached
