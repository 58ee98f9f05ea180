"""What `threadline serve` prints when it starts: where you are and what is switched on.

The version, the data dir, the database (password hidden), each model with what it can do
and its aliases, and one line per optional feature saying whether it is on and, when off,
the setting that turns it on. On the first start, the admin key once, then the two lines to
paste (`export TL_URL=...`, `export TL_KEY=...`) that the README's examples use. Pure text
from the settings: nothing here touches the network or the database.
"""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit, urlunsplit

from threadline import __version__
from threadline.settings import Settings


def base_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine answers locally
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def summary(settings: Settings) -> list[str]:
    """The lines printed before the server starts listening."""
    lines = [
        f"Threadline {__version__}",
        f"  data dir     {settings.data_dir.resolve()}",
        f"  database     {hide_password(settings.resolved_database_url)}",
        f"  console      {base_url(settings)}/console (sign in with an API key)",
    ]
    aliases = settings.model_aliases()
    for name, config in settings.models.items():
        can = "makes images" if config.kind == "images" else "chat, streaming"
        if config.kind == "chat" and config.vision:
            can += ", vision"
        extra = " (default)" if name == settings.default_model else ""
        named = sorted(alias for alias, target in aliases.items() if target == name)
        also = f"; also answers to {', '.join(named)}" if named else ""
        lines.append(f"  model        {name}: {config.provider}, {can}{extra}{also}")
    lines.append("Optional features:")
    lines.extend(f"  {line}" for line in features(settings))
    return lines


def features(settings: Settings) -> list[str]:
    """One line per optional feature: on, or off and how to turn it on."""
    docs = settings.documents
    if not docs.ocr:
        ocr = "off; [documents] ocr = true turns it on"
    elif docs.ocr_engine == "tesseract":
        found = "installed" if shutil.which("tesseract") else "NOT installed: apt-get install"
        ocr = f"on, tesseract ({found} tesseract-ocr)"
    else:
        ocr = 'on, rapidocr (from pip); [documents] ocr_engine = "tesseract" for tesseract'
    embedder = settings.embeddings
    embeddings = (
        'off (full-text search only); [embeddings] provider = "local" turns them on'
        if embedder.provider == "none"
        else f"on, {embedder.provider}"
    )
    rerank = settings.rerank
    if rerank.provider == "none":
        reranking = 'off; [rerank] provider = "cohere-compatible" (a rerank server) turns it on'
    elif docs.rerank == "off":
        reranking = f"off (documents.rerank = off; {rerank.provider} {rerank.model} is configured)"
    else:
        reranking = f"on, {rerank.provider} {rerank.model} (documents.rerank = {docs.rerank})"
    search = (
        f"on, {settings.search.provider}"
        if settings.search.provider
        else 'off; [search] provider = "ddgs" (or searxng, brave, tavily) turns it on'
    )
    images = [name for name, config in settings.models.items() if config.kind == "images"]
    image_models = (
        f"on, {', '.join(images)}"
        if images
        else 'off; a [models."name"] with kind = "images" turns them on'
    )
    vision = [name for name, config in settings.models.items() if config.vision]
    seeing = (
        f"on, {', '.join(vision)}"
        if vision
        else "off (images go to models as facts and OCR text); vision = true on a model"
    )
    youtube = "on" if settings.youtube.enabled else "off; [youtube] enabled = true"
    worker = (
        "in this process"
        if docs.embedded_worker
        else "not in this process (documents.embedded_worker = false): run `threadline worker`"
    )
    return [
        f"OCR          {ocr}",
        f"embeddings   {embeddings}",
        f"reranking    {reranking}",
        f"web search   {search}",
        f"image models {image_models}",
        f"vision       {seeing}",
        f"YouTube      {youtube}",
        f"memories     on, {settings.memories.extractor} extractor",
        f"job worker   {worker}",
    ]


def first_key(secret: str, settings: Settings) -> list[str]:
    """Shown once, on the first start: the admin key and the two lines to paste."""
    return [
        "",
        "First start: an admin API key was created. It is shown only once; keep it:",
        "",
        f"  {secret}",
        "",
        "Paste these two lines into your shell; the README's examples use them:",
        "",
        f"  export TL_URL={base_url(settings)}",
        f"  export TL_KEY={secret}",
        "",
    ]


def hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
