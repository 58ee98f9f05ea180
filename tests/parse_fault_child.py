"""A sandbox child whose text/plain extractor misbehaves on request, to test the parent.

Started by the tests as `python tests/parse_fault_child.py --memory-mb N` (the `command` seam
of `SandboxedParser`). The uploaded text file's content is the instruction:

    abort | sigkill | hang | memory | pid | env | limits | grandchild <pid file>
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from threadline.domain.documents import ParsedDocument, ParsedPage
from threadline.ingestion import child
from threadline.ingestion.formats import Extractor, Job, extractor_for


def misbehave(path: Path, job: Job) -> ParsedDocument:
    command, _, argument = path.read_text().strip().partition(" ")
    text = command
    if command == "abort":
        os.abort()
    elif command == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif command == "hang":
        time.sleep(600)
    elif command == "memory":
        hog = [bytearray(1024 * 1024) for _ in range(100_000)]
        text = str(len(hog))
    elif command == "pid":
        text = str(os.getpid())
    elif command == "env":
        text = json.dumps(dict(os.environ))
    elif command == "limits":
        names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE"]
        text = json.dumps({name: resource.getrlimit(getattr(resource, name)) for name in names})
    elif command == "grandchild":
        sleeper = subprocess.Popen(["sleep", "600"])
        Path(argument).write_text(str(sleeper.pid))
        time.sleep(600)
    return ParsedDocument(pages=(ParsedPage(0, text),))


def faulty_extractor_for(mime_type: str) -> Extractor:
    return misbehave if mime_type == "text/plain" else extractor_for(mime_type)


if __name__ == "__main__":
    child.extractor_for = faulty_extractor_for
    sys.exit(child.main())
