"""A bad config file in one line a person can act on: the file, the key, what is allowed.

pydantic's ValidationError (a 55-line traceback when left to fly) and tomllib's syntax error
are turned into `ConfigError` with a message like

    config error in threadline.toml: documents.ocr_engine: 'tess' is not allowed;
    allowed: 'rapidocr', 'tesseract'

The CLI prints it alone and exits with 2 (`--debug` shows the traceback too).
"""

from __future__ import annotations

import tomllib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from threadline.settings import Settings, config_path


class ConfigError(Exception):
    """The settings cannot be built; `str()` is the one line to print."""


def explain(error: Exception) -> ConfigError:
    """`error` (from building `Settings`) as one line naming the file and the key."""
    where = _source()
    if isinstance(error, tomllib.TOMLDecodeError):
        return ConfigError(f"config error in {where}: not valid TOML: {error}")
    if isinstance(error, FileNotFoundError):
        return ConfigError(f"config error: {error}")
    if not isinstance(error, ValidationError):
        return ConfigError(f"config error in {where}: {error}")
    problems = [_problem(item) for item in error.errors()]
    return ConfigError(f"config error in {where}: " + "; ".join(problems))


def _source() -> str:
    try:
        path = config_path()
    except FileNotFoundError:
        path = None
    return f"{path} (or THREADLINE_* variables)" if path else "THREADLINE_* variables"


def _problem(item: Any) -> str:
    loc = [str(part) for part in item.get("loc", ())]
    key = ".".join(loc) or "(top level)"
    kind = item.get("type", "")
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        allowed = f"; allowed keys: {', '.join(known)}" if known else ""
        return f"{key}: not a known key{allowed}"
    if kind == "literal_error":
        expected = (item.get("ctx") or {}).get("expected", "")
        return f"{key}: {item.get('input')!r} is not allowed; allowed: {expected}"
    message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    if kind == "value_error":
        return f"{key}: {message}"
    return f"{key}: {message} (got {item.get('input')!r})"


def _known_keys(loc: list[str]) -> list[str]:
    """The field names of the table at `loc` (e.g. ["documents"]), when it is a model."""
    model: Any = Settings
    for part in loc:
        if typing.get_origin(model) is dict:  # `[models."name"]`: the name is any key
            model = typing.get_args(model)[1]
            continue
        if typing.get_origin(model) is list:  # `upstreams = [{...}]`: the part is an index
            model = typing.get_args(model)[0]
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []
