"""Fetch the documents of the twins set (`bench/twins.json`) into a cache directory.

The set's PDFs come from Debian documentation packages (`*-doc`, no TeX Live ones). They
are not ours to commit, so this script brings them at bench set-up time: `apt-get
download <package>` (the ordinary client; run `apt-get update` once first) into the cache,
`dpkg-deb -x` to unpack it, gunzip where the PDF is compressed, and, when the set says so,
the PDF cut to its first pages (so a run ingests ~1,000 pages, not ~3,000). Each document
lands as `<cache>/<name>`, the file name a user would upload. Nothing is fetched when the
files are already there.

    python bench/fetch_docs.py                    # into ~/.cache/threadline-bench/twins
    python bench/fetch_docs.py --cache /tmp/twins
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pypdf

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "bench" / "twins.json"
DEFAULT_CACHE = Path.home() / ".cache" / "threadline-bench" / "twins"


def load_set(path: Path = TWINS) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fetch(cache: Path, spec: dict[str, Any]) -> dict[str, Path]:
    """Every document of the set as a PDF in `cache`: name -> path."""
    cache.mkdir(parents=True, exist_ok=True)
    documents = spec["documents"]
    missing = [d for d in documents if not (cache / d["name"]).exists()]
    packages = sorted({d["package"] for d in missing})
    if packages:
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        for package in packages:
            if not list(debs.glob(f"{package}_*.deb")):
                _run(["apt-get", "download", package], cwd=debs)
        with tempfile.TemporaryDirectory(prefix="twins-") as tmp:
            root = Path(tmp)
            for package in packages:
                [deb] = sorted(debs.glob(f"{package}_*.deb"))[-1:]
                _run(["dpkg-deb", "-x", str(deb), str(root)])
            for document in missing:
                _place(root / document["path"], cache / document["name"], document)
    return {d["name"]: cache / d["name"] for d in documents}


def _place(source: Path, target: Path, document: dict[str, Any]) -> None:
    if not source.exists():
        sys.exit(f"{document['package']} has no {document['path']}")
    partial = target.with_suffix(".part")
    if source.suffix == ".gz":
        with gzip.open(source) as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out)
    else:
        shutil.copyfile(source, partial)
    max_pages = document.get("max_pages")
    if max_pages:
        _truncate(partial, int(max_pages))
    partial.replace(target)


def _truncate(path: Path, max_pages: int) -> None:
    """Keep the first `max_pages` pages, with the document's metadata and the outline
    entries that point into them (pypdf; PDFium's page import drops both)."""
    reader = pypdf.PdfReader(path)
    if len(reader.pages) <= max_pages:
        return
    writer = pypdf.PdfWriter()
    writer.append(reader, pages=(0, max_pages), import_outline=True)
    if reader.metadata:
        writer.add_metadata(dict(reader.metadata))
    with path.with_suffix(".cut").open("wb") as out:
        writer.write(out)
    path.with_suffix(".cut").replace(path)


def _run(command: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    paths = fetch(args.cache, load_set())
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
