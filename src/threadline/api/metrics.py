"""Prometheus metrics, in a registry of the app's own (several apps can live in one
process, as in the tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from threadline.domain.entities import AiRecord

CIRCUIT_STATES = ("closed", "half_open", "open")

Upstreams = Callable[[], list[dict[str, Any]]]


class UpstreamCollector(Collector):
    """Per upstream of each routed model (providers/router.py), read when scraped:
    requests, failures, in flight, first-token latency (p50), and the circuit's state
    (one gauge per state, 1 for the current one)."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Any]:
        labels = ["model", "upstream"]
        requests = CounterMetricFamily(
            "threadline_upstream_requests", "Requests sent to an upstream", labels=labels
        )
        failures = CounterMetricFamily(
            "threadline_upstream_failures", "Requests an upstream failed", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "threadline_upstream_in_flight", "Requests at an upstream now", labels=labels
        )
        latency = GaugeMetricFamily(
            "threadline_upstream_first_token_seconds",
            "Median time to the first token (last 1,000 requests)",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            "threadline_upstream_circuit",
            "Circuit state of an upstream (1 for the current state)",
            labels=[*labels, "state"],
        )
        for model in self._upstreams():
            for up in model["upstreams"]:
                names = [model["model"], up["name"]]
                requests.add_metric(names, up["requests"])
                failures.add_metric(names, up["failures"])
                in_flight.add_metric(names, up["in_flight"])
                if up["first_token_p50_ms"] is not None:
                    latency.add_metric(names, up["first_token_p50_ms"] / 1000)
                for state in CIRCUIT_STATES:
                    circuit.add_metric([*names, state], 1.0 if up["circuit"] == state else 0.0)
        yield from (requests, failures, in_flight, latency, circuit)

    def describe(self) -> Iterator[Any]:
        return iter(())


class Metrics:
    def __init__(
        self,
        active_runs: Callable[[], float],
        upstreams: Upstreams | None = None,
        redis_up: Callable[[], float] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if upstreams is not None:
            self.registry.register(UpstreamCollector(upstreams))
        self.requests = Counter(
            "threadline_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "threadline_http_request_duration_seconds",
            "Time to the end of the response body",
            ["method", "route"],
            registry=self.registry,
        )
        self.replies = Counter(
            "threadline_replies_total",
            "Finished replies",
            ["model", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "threadline_tokens_total", "Tokens by model", ["model", "kind"], registry=self.registry
        )
        self.credits = Counter(
            "threadline_credits_charged_total", "Credits charged", ["model"], registry=self.registry
        )
        gauge = Gauge("threadline_runs_active", "Replies being produced", registry=self.registry)
        gauge.set_function(active_runs)
        if redis_up is not None:  # only with `redis_url`
            up = Gauge(
                "threadline_redis_up",
                "1 while Redis is reachable (full mode), 0 in degraded mode",
                registry=self.registry,
            )
            up.set_function(redis_up)

    def observe_record(self, record: AiRecord) -> None:
        self.replies.labels(record.model, record.status.value).inc()
        self.tokens.labels(record.model, "input").inc(record.input_tokens)
        self.tokens.labels(record.model, "output").inc(record.output_tokens)
        self.credits.labels(record.model).inc(record.credits)

    def render(self) -> bytes:
        return generate_latest(self.registry)
