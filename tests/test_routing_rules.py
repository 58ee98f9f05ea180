"""The rules of model routing (domain/routing.py) on their own, and the configuration shape
(settings.py): the balancer's shares, the circuit's states under a fake clock, which
failures are worth another attempt, the overlap a continuation repeats, and one-line
configuration errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from threadline.config_errors import explain
from threadline.domain.errors import ModelError, ModelTimeout
from threadline.domain.ports import ChatMessage, ModelRequest
from threadline.domain.routing import (
    CONTINUE_INSTRUCTION,
    Balancer,
    Circuit,
    CircuitState,
    OverlapTrimmer,
    backoff_seconds,
    continuation,
    retryable,
)
from threadline.settings import ModelConfig, Settings


def test_a_thousand_sequential_picks_over_weights_3_to_1_land_75_25():
    balancer = Balancer([3, 1])
    picks = [balancer.pick([0, 1], [0, 0]) for _ in range(1000)]
    share = picks.count(0) / 1000
    assert 0.70 <= share <= 0.80, share
    assert picks.count(0) == 750  # smooth round robin: exact over whole rounds


def test_concurrent_picks_balance_by_load_per_weight():
    """1,000 requests that stay in flight: each pick goes to the least loaded per weight."""
    balancer = Balancer([3, 1])
    loads = [0, 0]
    for _ in range(1000):
        loads[balancer.pick([0, 1], loads)] += 1
    assert abs(loads[0] / 1000 - 0.75) <= 0.05, loads


def test_the_least_busy_upstream_is_preferred_whatever_its_weight():
    balancer = Balancer([1, 1, 10])
    assert balancer.pick([0, 1, 2], [0, 5, 100]) == 0
    assert balancer.pick([1, 2], [0, 5, 100]) == 1  # 5/1 < 100/10


def test_the_circuit_opens_after_failures_in_a_row_then_one_probe_decides():
    now = [0.0]
    circuit = Circuit(failures=3, open_seconds=30, clock=lambda: now[0])
    circuit.failed()
    circuit.succeeded()  # a success resets the streak
    for _ in range(2):
        circuit.failed()
    assert circuit.state is CircuitState.CLOSED and circuit.available()
    circuit.failed()
    assert circuit.state is CircuitState.OPEN and not circuit.available()
    now[0] = 29.9
    assert not circuit.available() and circuit.seconds_to_probe() == pytest.approx(0.1)
    now[0] = 30.0
    assert circuit.state is CircuitState.HALF_OPEN and circuit.available()
    circuit.admit()  # the probe goes out: nobody else meanwhile
    assert not circuit.available()
    circuit.failed()  # the probe failed: open again for 30 s
    assert circuit.state is CircuitState.OPEN
    now[0] = 60.0
    circuit.admit()
    circuit.succeeded()
    assert circuit.state is CircuitState.CLOSED and circuit.streak == 0


def test_a_probe_abandoned_by_its_caller_lets_the_next_one_through():
    now = [100.0]
    circuit = Circuit(failures=1, open_seconds=1, clock=lambda: now[0])
    circuit.failed()
    now[0] = 101.0
    circuit.admit()
    circuit.released()
    assert circuit.available()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_statuses_worth_another_attempt(status):
    assert retryable(ModelError(f"{status}", retryable=True))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_the_callers_and_the_configurations_errors_are_not_retried(status):
    from threadline.providers.upstream import Upstream, UpstreamErrors

    up = Upstream.at("http://127.0.0.1:9/v1", None, "model 'm'")
    errors = UpstreamErrors.for_model(up, "m", ModelConfig(provider="fake"))
    assert not retryable(errors.status(status, b"{}"))
    assert retryable(errors.status(503, b"{}", retry_after="2"))
    assert errors.status(429, b"{}", retry_after="2").upstream_retry_after == 2.0


def test_transport_errors_and_timeouts_are_retried():
    assert retryable(ModelError("connection refused"))
    assert retryable(ModelTimeout("no answer"))


def test_backoff_doubles():
    assert [backoff_seconds(200, n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]


def test_a_continuation_asks_to_go_on_from_the_text_so_far():
    request = ModelRequest([ChatMessage("user", "count")], max_tokens=100, temperature=0.3)
    asked = continuation(request, "one two three four")
    assert [m.role for m in asked.messages] == ["user", "assistant", "user"]
    assert asked.messages[1].content == "one two three four"
    assert asked.messages[2].content == CONTINUE_INSTRUCTION
    assert asked.max_tokens == 96 and asked.temperature == 0.3


def _trimmed(previous: str, pieces: list[str]) -> str:
    trimmer = OverlapTrimmer(previous)
    return "".join(trimmer.feed(p) for p in pieces) + trimmer.close()


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["four", " five", " six", " seven"], " six seven"),  # repeats two words
        ([" four five six"], " six"),
        (["five", " six"], " six"),  # the last word only
        ([" six", " seven"], " six seven"),  # no overlap
        (["fivefold", " more"], "fivefold more"),  # a longer word is not a repeat
        (["four", " five"], ""),  # all repeat, then the end
        (["thr", "ee four", " five", " and six"], " and six"),  # across pieces
    ],
)
def test_the_overlap_a_continuation_repeats_is_cut(pieces, expected):
    assert _trimmed("one two three four five", pieces) == expected


def test_nothing_is_held_when_there_is_no_text_before():
    trimmer = OverlapTrimmer("")
    assert trimmer.feed("Hello") == "Hello"


# ---- configuration


def _settings(**model: object) -> Settings:
    models = {
        "a": {"provider": "openai-compatible", **model},
        "b": {"provider": "fake"},
        "pics": {"provider": "fake", "kind": "images"},
    }
    return Settings(models=models, default_model="b")  # type: ignore[arg-type]


def test_the_issue_shape_is_valid_and_a_single_base_url_still_is():
    settings = _settings(
        upstreams=[
            {"base_url": "https://a.example/v1", "api_key_env": "A_KEY", "weight": 3},
            {"base_url": "http://vllm-1:8000/v1", "upstream_model": "q", "max_concurrency": 64},
        ],
        fallbacks=["b"],
        retry={"attempts": 2, "backoff_ms": 200},
        timeout={"first_token_seconds": 20, "idle_seconds": 30},
        circuit={"failures": 5, "open_seconds": 30},
        continue_on_failure=True,
    )
    config = settings.models["a"]
    assert config.is_routed and config.upstreams[0].weight == 3
    assert config.upstreams[1].max_concurrency == 64
    plain = _settings(base_url="http://x.example/v1").models["a"]
    assert not plain.is_routed


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"base_url": "http://x/v1", "upstreams": [{"base_url": "http://y/v1"}]},
            "models.a: give base_url (one upstream) or upstreams (several), not both",
        ),
        ({"upstreams": [{"base_url": "ftp://y"}]}, "models.a.upstreams.0.base_url:"),
        ({"upstreams": [{"base_url": "http://y", "weight": 0}]}, "upstreams.0.weight:"),
        (
            {"upstreams": [{"base_url": "http://y", "port": 1}]},
            "models.a.upstreams.0.port: not a known key; allowed keys: api_key_env, base_url,",
        ),
        (
            {"base_url": "http://y", "fallbacks": ["nope"]},
            "models.a.fallbacks: 'nope' is not another configured chat model (b)",
        ),
        (
            {"base_url": "http://y", "fallbacks": ["pics"]},
            "'pics' is not another configured chat model",
        ),
        ({"base_url": "http://y", "retry": {"attempts": 0}}, "models.a.retry.attempts:"),
        (
            {"base_url": "http://y", "circuit": {"failure": 3}},
            "models.a.circuit.failure: not a known key; allowed keys: failures, open_seconds",
        ),
    ],
)
def test_a_bad_routing_setting_is_one_line_naming_the_key(model, message):
    with pytest.raises(ValidationError) as caught:
        _settings(**model)
    line = str(explain(caught.value))
    assert "\n" not in line
    assert message in line, line
