"""Schemathesis against the live server's own `/openapi.json`, every operation, on SQLite and
PostgreSQL: generated requests (valid and invalid, boundary values from the schema's
coverage phase) sent over real HTTP with a real key. It holds the API to what its schema
says:

- no request is a server error (5xx);
- every status an operation answers is declared in its OpenAPI entry, with a body in the
  declared shape (the owning dialect's error shape for errors);
- the schema and the server agree: what the schema calls valid is not refused as malformed
  (400), what it calls invalid is refused (4xx).

It runs schemathesis's own engine (the phases of `st run`: the schema's examples, boundary
values from its coverage phase, then fuzzing) with a bounded budget: a few examples per
operation, derandomized, so each run sends the same requests. On PostgreSQL the coverage
phase sends only its valid boundary values (`POSTGRES_PHASES`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import Status, events

from tests.helpers import Fakes, make_settings
from tests.live_server import LiveServer
from threadline.container import create_app

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)

# Why each setting:
# - allow-x00 false: a NUL in any string is refused everywhere (400, see README and
#   test_unrepresentable_input.py); the schema does not repeat that rule in every string's
#   pattern, so generated "valid" strings leave NUL out (lone surrogates are already out:
#   strings are generated as UTF-8).
# - 422 is a valid request's answer where the dialect uses it for "well-formed, but this
#   server cannot serve it": a model name not in the catalog, a chat model asked to draw.
#   The catalog is configuration, not schema.
# - the checks left out: stateful ones (use_after_free, ensure_resource_availability: the
#   stateful phase is off), auth probes (ignored_auth, object_level_authorization: org scope
#   and keys have their own tests), and the method/header probes (unsupported_method,
#   allow_header_conformance, missing_required_header): a 405 is answered before any
#   dialect (api/fallback.py, tested in test_first_hour.py; its `Allow` names every method
#   of the path), but a `{id:path}` route takes other routes' paths with its own method
#   (DELETE /api/assets/x/content is the asset "x/content"), so the probes' premise fails.
EXPECTED_FOR_VALID = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
CONFIG: dict[str, Any] = {
    "generation": {"allow-x00": False, "deterministic": True, "max-examples": 6},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        "positive_data_acceptance": {"enabled": True, "expected-statuses": EXPECTED_FOR_VALID},
    },
    "request-timeout": 30,
}
# On PostgreSQL the coverage phase sends its valid boundary values only (every operation
# still, ~1,100 cases instead of ~3,700: half the time). Its invalid ones test the request
# validation, which is the same code on both databases and runs in full on SQLite: one the
# validation let through would be accepted there, which `negative_data_rejection` reports.
POSTGRES_PHASES: dict[str, Any] = {"coverage": {"generation": {"mode": "positive"}}}


@pytest.fixture(params=["sqlite", "postgres"])
def live_api(
    request: pytest.FixtureRequest, tmp_path: Path, fakes: Fakes
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The live server's base URL, the admin key, and the phases' settings for its database."""
    if request.param == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'threadline.db'}"
    else:
        db_url = str(
            request.getfixturevalue("postgres").create_database(f"t_st_{os.urandom(4).hex()}")
        )
    settings = make_settings(tmp_path, db_url, rate_limit_per_minute=1_000_000)
    app = create_app(settings, model_factory=fakes.factory)
    server = LiveServer(app)
    server.start()
    try:
        key = server.call(app.state.container.bootstrap()).secret
        phases = POSTGRES_PHASES if request.param == "postgres" else {}
        yield server.base_url, key, phases
    finally:
        server.stop()


def run_schemathesis(
    base_url: str, key: str, phases: dict[str, Any] | None = None
) -> tuple[list[str], int]:
    """Every failed check as `<operation>: <failure> <request>`, and the count of cases."""
    config = schemathesis.Config.from_dict(
        {
            **CONFIG,
            "phases": {**CONFIG["phases"], **(phases or {})},
            "headers": {"Authorization": f"Bearer {key}"},
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    problems: list[str] = []
    cases = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_id, nodes in event.recorder.checks.items():
                for node in nodes:
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        problems.append(
                            _describe(event.label, node.failure_info, event.recorder, case_id)
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"{getattr(event, 'label', '')}: error {event.info.message}")
    return sorted(set(problems)), cases


def _describe(label: str | None, info: Any, recorder: Any, case_id: str) -> str:
    response = recorder.find_response(case_id=case_id)
    answer = f"{response.status_code} {response.text[:300]}" if response else "no response"
    request = info.code_sample.splitlines()[-1].strip()
    return f"{label}: {info.failure.title}\n    {request}\n    -> {answer}"


@pytest.mark.timeout(300)  # ~50 s alone; a generous bound for a loaded machine
def test_the_api_agrees_with_its_schema(live_api: tuple[str, str, dict[str, Any]]) -> None:
    problems, cases = run_schemathesis(*live_api)
    assert cases > 200, cases  # every operation was exercised
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
