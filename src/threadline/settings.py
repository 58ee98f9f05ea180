"""Settings: one pydantic-settings object, built once and passed down.

Sources, strongest first: arguments to `Settings(...)`, environment variables prefixed
`THREADLINE_` (nested with `__`), the TOML config file (`THREADLINE_CONFIG` or
`--config`, else `./threadline.toml` when present), then the defaults below.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from threadline import __version__
from threadline.providers.bundled import BUNDLED
from threadline.providers.registry import PROVIDERS, provider
from threadline.settings_documents import DocumentSettings, EmbeddingConfig, RerankConfig
from threadline.settings_routing import CircuitConfig, RetryConfig, TimeoutConfig, UpstreamConfig

DEFAULT_MODEL_NAME = "smollm2-135m"
EXAMPLE_MODEL_NAMES = ("gpt-4o-mini",)
"""The model names the API documents' examples use. Without an `[aliases]` table they are
aliases of `default_model` (unless configured as models), so the examples run verbatim."""


class Credits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_1k: float = Field(0, ge=0)
    output_per_1k: float = Field(0, ge=0)
    per_image: float = Field(0, ge=0)  # image models: credits per image made (total rounded up)


# Image models: 1min.ai's aspect ratios -> the upstream's `size`. The defaults are the sizes of
# OpenAI's GPT image models (generations) and of its variations endpoint.
DEFAULT_IMAGE_SIZES = {"1:1": "1024x1024", "3:2": "1536x1024", "2:3": "1024x1536"}
DEFAULT_VARIATION_SIZES = {"1:1": "1024x1024"}
IMAGE_ONLY_KEYS = (
    "image_sizes",
    "variation_sizes",
    "max_images",
    "image_request",
)
CHAT_ONLY_KEYS = (
    "vision",
    "context_window",
    "max_output_tokens",
    "replies",
    "fallbacks",
    "continue_on_failure",
)
_RATIO = re.compile(r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$")
_SIZE = re.compile(r"^([1-9][0-9]{1,4}x[1-9][0-9]{1,4}|auto)$")


ROUTING_SETTINGS = frozenset({"upstreams", "retry", "timeout", "circuit", "continue_on_failure"})


class ModelConfig(BaseModel):
    """One entry of `[models."name"]` in the config file."""

    model_config = ConfigDict(extra="forbid")

    provider: str  # a name in providers/registry.py: local, openai-compatible, fake
    # "chat": /api/chat-with-ai and friends; "images": IMAGE_GENERATOR / IMAGE_VARIATOR,
    # served by an OpenAI-compatible `/images/generations` and `/images/variations`.
    kind: Literal["chat", "images"] = "chat"
    credits: Credits = Credits()
    vision: bool = False
    context_window: int = Field(2048, ge=256)
    max_output_tokens: int = Field(512, ge=1)
    # openai-compatible
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    timeout_seconds: float = Field(60.0, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    # routing (providers/router.py): several servers of one model, and what to do when one
    # fails; `fallbacks` are other models of the catalog, tried in order when all failed
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list)
    retry: RetryConfig = RetryConfig()
    timeout: TimeoutConfig = TimeoutConfig()
    circuit: CircuitConfig = CircuitConfig()
    continue_on_failure: bool = False  # mid-stream: go on on the next upstream or fallback
    # local
    gguf_path: str | None = None
    # a bundled model by name (providers/bundled.py: "smollm2-135m", "gemma3-270m"); unset:
    # the default one. Ignored when gguf_path is set.
    bundled: str | None = None
    threads: int | None = Field(None, ge=1)
    parallel: int = Field(4, ge=1)
    # fake: canned replies, used in turn ("echo" repeats the prompt)
    replies: list[str] = Field(default_factory=list)
    # kind = "images"
    image_sizes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_IMAGE_SIZES))
    variation_sizes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VARIATION_SIZES))
    max_images: int = Field(4, ge=1, le=10)  # images of one request (num_outputs, n)
    # Which parameter asks the upstream for base64 images: "response_format" sends
    # response_format="b64_json" (DALL-E-style servers); "output_format" sends the wanted
    # format instead (GPT image models, which always answer base64 and refuse the former).
    image_request: Literal["response_format", "output_format"] = "response_format"

    @property
    def is_routed(self) -> bool:
        """Whether the model goes through the router (providers/router.py): it names
        several upstreams, or any routing setting."""
        return bool(self.model_fields_set & ROUTING_SETTINGS)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, name: str) -> str:
        provider(name)  # an unknown name fails, naming the known ones
        return name

    @field_validator("bundled")
    @classmethod
    def _known_bundled(cls, name: str | None) -> str | None:
        if name is not None and name not in BUNDLED:
            raise ValueError(f"no bundled model {name!r}; bundled models: {', '.join(BUNDLED)}")
        return name

    @model_validator(mode="after")
    def _check_provider_fields(self) -> ModelConfig:
        spec = provider(self.provider)
        if not spec.serves(self.kind):
            kinds = " and ".join(spec.kinds)
            raise ValueError(
                f'the {self.provider} provider serves {kinds} models only, not kind = "{self.kind}"'
            )
        if self.upstreams and self.base_url:
            raise ValueError("give base_url (one upstream) or upstreams (several), not both")
        if self.upstreams and "base_url" not in spec.requires:
            raise ValueError(f"the {self.provider} provider takes no upstreams (no base_url)")
        for key in spec.requires:
            if not getattr(self, key) and not (key == "base_url" and self.upstreams):
                raise ValueError(f"an {self.provider} model needs {key} (or upstreams)")
        if self.vision and not spec.vision:
            takes = ", ".join(name for name, p in PROVIDERS.items() if p.vision)
            raise ValueError(
                f"vision = true needs a model that takes images ({takes}); "
                f"the {self.provider} provider reads text only"
            )
        return self

    @model_validator(mode="after")
    def _check_kind_fields(self) -> ModelConfig:
        """Keys of the other kind would be silently ignored: they are errors."""
        wrong = IMAGE_ONLY_KEYS if self.kind == "chat" else CHAT_ONLY_KEYS
        given = [key for key in wrong if key in self.model_fields_set]
        if given:
            verb = "does" if len(given) == 1 else "do"
            kind = "a chat model" if self.kind == "chat" else 'an image model (kind = "images")'
            raise ValueError(f"{', '.join(given)} {verb} not apply to {kind}")
        if self.kind == "images":
            streaming = ("first_token_seconds", "idle_seconds")
            given = [key for key in streaming if key in self.timeout.model_fields_set]
            if given:
                raise ValueError(
                    f"timeout.{given[0]} does not apply to an image model (nothing streams); "
                    "timeout_seconds is how long its upstream may take"
                )
            for ratio, size in {**self.image_sizes, **self.variation_sizes}.items():
                if not _RATIO.match(ratio) or not _SIZE.match(size):
                    raise ValueError(
                        f"image size {ratio!r} = {size!r}: keys are aspect ratios like "
                        '"16:9", values upstream sizes like "1792x1024" (or "auto")'
                    )
        return self


class FetchSettings(BaseModel):
    """`[fetch]`: the SSRF-safe fetcher of untrusted URLs, and the links read from prompts."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(15.0, gt=0)  # the whole fetch, redirects included
    connect_timeout_seconds: float = Field(5.0, gt=0)
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)  # body cap (decoded)
    max_redirects: int = Field(5, ge=0, le=10)
    user_agent: str = f"Threadline/{__version__} (link reader)"
    # FOR TESTS ONLY: "host:port" entries ("127.0.0.1:8765", "[::1]:8765") that may resolve
    # to private or loopback addresses. Empty in any real deployment.
    allow_private_hosts: list[str] = Field(default_factory=list)
    max_links: int = Field(3, ge=0, le=10)  # links of one prompt that are read
    max_words_per_link: int = Field(1000, ge=50)  # words of a page given to the model

    @model_validator(mode="after")
    def _check_hosts(self) -> FetchSettings:
        for entry in self.allow_private_hosts:
            host, sep, port = entry.rpartition(":")
            if not (sep and host and port.isdigit()):
                raise ValueError(
                    f"allow_private_hosts entry {entry!r} is not host:port "
                    "(e.g. 127.0.0.1:8765 or [::1]:8765)"
                )
        return self


class ChatImageSettings(BaseModel):
    """`[chat_images]`: images sent *in* a chat request (1min.ai's `attachments.images`,
    `imageList`, OpenAI `image_url` parts). Image generation is configured per model
    (`kind = "images"`), not here."""

    model_config = ConfigDict(extra="forbid")

    max_per_request: int = Field(10, ge=1, le=50)  # images one request may name
    max_bytes: int = Field(5 * 1024 * 1024, ge=1024)  # per image, asset or fetched URL


class SearchSettings(BaseModel):
    """`[search]`: the web search provider behind 1min.ai's `webSearch` (none by default)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["searxng", "brave", "tavily", "ddgs"] | None = None
    # searxng: the instance (required); brave / tavily: overrides the vendor's URL
    base_url: str | None = None
    api_key_env: str | None = None  # brave / tavily: the variable holding the API key
    timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _check_provider_fields(self) -> SearchSettings:
        if self.provider == "searxng" and not self.base_url:
            raise ValueError('[search] provider "searxng" needs base_url (your instance)')
        if self.provider in ("brave", "tavily") and not self.api_key_env:
            raise ValueError(
                f"[search] provider {self.provider!r} needs api_key_env: the environment "
                "variable that holds its API key"
            )
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("[search] base_url must be an http:// or https:// URL")
        return self


class YouTubeSettings(BaseModel):
    """`[youtube]`: transcripts of the YouTube videos a prompt links to."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_videos: int = Field(3, ge=1, le=10)  # videos of one prompt that are read
    max_words: int = Field(3000, ge=50)  # words of one transcript given to the model
    languages: list[str] = Field(default_factory=lambda: ["en"])  # preferred, in order
    timeout_seconds: float = Field(15.0, gt=0)  # the whole transcript, all requests
    # Where "https://www.youtube.com" is reached. FOR TESTS ONLY: a fake YouTube on
    # 127.0.0.1. Leave it alone in any real deployment.
    base_url: str = "https://www.youtube.com"

    @model_validator(mode="after")
    def _check_base_url(self) -> YouTubeSettings:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("[youtube] base_url must be an http:// or https:// URL")
        return self


class MemorySettings(BaseModel):
    """`[memories]`: facts remembered about a user across conversations (`withMemories`)."""

    model_config = ConfigDict(extra="forbid")

    extractor: Literal["rules", "model"] = "rules"  # how facts are found in a message
    model: str | None = None  # extractor = "model": which configured model reads messages
    max_per_user: int = Field(200, ge=1, le=10_000)  # past it, the oldest memories go
    top_k: int = Field(5, ge=1, le=50)  # memories given to the model per reply

    @model_validator(mode="after")
    def _check_model(self) -> MemorySettings:
        if self.extractor == "model" and not self.model:
            raise ValueError('[memories] extractor = "model" needs model = "<a configured model>"')
        return self


def _default_models() -> dict[str, ModelConfig]:
    return {DEFAULT_MODEL_NAME: ModelConfig(provider="local")}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THREADLINE_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("data")
    database_url: str | None = None
    # Shared fast state for several processes on one database: rate-limit windows, cache
    # invalidation, live streams and run ownership (docs/scale-out.md). Unset: this process's
    # memory (one process works fully; several stay correct but lack these).
    redis_url: str | None = Field(
        None,
        pattern=r"^rediss?://",
        description="redis://host:6379/0; needs the `scale` extra",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = False

    default_model: str = DEFAULT_MODEL_NAME
    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    # `[aliases]` "gpt-4o-mini" = "smollm2-135m": another name a request may use for a model.
    # Unset: EXAMPLE_MODEL_NAMES -> default_model. `[aliases]` empty: no aliases.
    aliases: dict[str, str] | None = None

    rate_limit_per_minute: int = Field(600, ge=0, description="per API key; 0 turns it off")
    default_credit_limit: int = Field(1_000_000, ge=0)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    history_limit_max: int = Field(100, ge=1)
    page_size_max: int = Field(100, ge=1)
    sse_ping_seconds: float = Field(15.0, gt=0)
    stream_retention_seconds: float = Field(
        300.0,
        ge=0,
        description="how long a finished reply's events stay in memory for resumed streams "
        "(after that a resume is answered from the stored aiRecord)",
    )
    stream_checkpoint_seconds: float = Field(
        1.0,
        ge=0,
        description="a reply's text is saved to its aiRecord while it streams, at most this "
        "often (kill -9 keeps what was saved); 0 turns checkpoints off",
    )
    stream_checkpoint_chars: int = Field(
        4096,
        ge=1,
        le=10_000_000,
        description="save sooner once this many characters of a streaming reply are unsaved",
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="how long an authenticated key is cached; revocations and user changes "
        "made in another process take up to this long to apply here; 0 turns it off",
    )
    bootstrap_admin: bool = True
    blob_store: Literal["file", "database"] = Field(
        "file",
        description="where uploaded files and generated images are kept: files under the "
        "data dir (several machines need a shared mount), or chunks in the database, which "
        "every process on it reads",
    )
    node_lease_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="several processes on one database: a process whose heartbeat is older "
        "than this is taken for gone and its unfinished replies are failed by the others "
        "(it beats every third of it; one on the same host that died is seen at once)",
    )

    documents: DocumentSettings = DocumentSettings()
    embeddings: EmbeddingConfig = EmbeddingConfig()
    rerank: RerankConfig = RerankConfig()
    fetch: FetchSettings = FetchSettings()
    chat_images: ChatImageSettings = ChatImageSettings()
    search: SearchSettings = SearchSettings()
    youtube: YouTubeSettings = YouTubeSettings()
    memories: MemorySettings = MemorySettings()

    @field_validator("redis_url")
    @classmethod
    def _check_redis_client(cls, url: str | None) -> str | None:
        if url is not None and importlib.util.find_spec("redis") is None:
            raise ValueError("redis_url needs the Redis client: pip install 'threadline[scale]'")
        return url

    @model_validator(mode="after")
    def _check_default_model(self) -> Settings:
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not among the configured models "
                f"({', '.join(sorted(self.models)) or 'none'})"
            )
        return self

    @model_validator(mode="after")
    def _check_aliases(self) -> Settings:
        known = ", ".join(sorted(self.models)) or "none"
        for alias, target in (self.aliases or {}).items():
            if alias in self.models:
                raise ValueError(
                    f"[aliases] {alias!r} is a configured model itself; an alias is another name"
                )
            if target not in self.models:
                raise ValueError(
                    f"[aliases] {alias!r} = {target!r}: not a configured model ({known})"
                )
        return self

    def model_aliases(self) -> dict[str, str]:
        """Alias -> model: the `[aliases]` table, or the examples' names -> default_model."""
        if self.aliases is not None:
            return dict(self.aliases)
        return {name: self.default_model for name in EXAMPLE_MODEL_NAMES if name not in self.models}

    @model_validator(mode="after")
    def _check_memory_model(self) -> Settings:
        model = self.memories.model
        if model is not None and model not in self.models:
            raise ValueError(
                f"[memories] model {model!r} is not among the configured models "
                f"({', '.join(sorted(self.models)) or 'none'})"
            )
        return self

    @model_validator(mode="after")
    def _check_fallbacks(self) -> Settings:
        """A fallback is another configured model of the same kind."""
        for name, config in self.models.items():
            for fallback in config.fallbacks:
                other = self.models.get(fallback)
                if fallback == name or other is None or other.kind != config.kind:
                    same = sorted(n for n, c in self.models.items() if c.kind == config.kind)
                    same = [n for n in same if n != name]
                    raise ValueError(
                        f"models.{name}.fallbacks: {fallback!r} is not another configured "
                        f"{config.kind} model ({', '.join(same) or 'none'})"
                    )
        return self

    @model_validator(mode="after")
    def _check_rerank(self) -> Settings:
        """`documents.rerank = "on"` needs a reranker to run."""
        if self.documents.rerank == "on" and self.rerank.provider == "none":
            raise ValueError(
                'documents.rerank = "on" needs a reranker: set [rerank] provider (or use '
                '"auto", which reranks only when one is configured)'
            )
        return self

    @model_validator(mode="after")
    def _check_chat_roles(self) -> Settings:
        """The default model and the memory extractor chat: they cannot be image models."""
        chat = sorted(name for name, cfg in self.models.items() if cfg.kind == "chat")
        roles = (("default_model", self.default_model), ("[memories] model", self.memories.model))
        for role, name in roles:
            config = self.models.get(name) if name is not None else None
            if config is not None and config.kind != "chat":
                raise ValueError(
                    f"{role} {name!r} is an image model; chat models: {', '.join(chat) or 'none'}"
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.data_dir / 'threadline.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


def normalise_database_url(url: str) -> str:
    """Accept the usual spellings and pick the async driver."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url[len(plain) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def config_path() -> Path | None:
    explicit = os.environ.get("THREADLINE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} (THREADLINE_CONFIG) does not exist")
        return path
    default = Path("threadline.toml")
    return default if default.is_file() else None


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML config file named by THREADLINE_CONFIG (or ./threadline.toml)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = config_path()
        self._data: dict[str, Any] = tomllib.loads(path.read_text()) if path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)
