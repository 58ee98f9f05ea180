"""Prometheus metrics, in a registry of the app's own (several apps can live in one
process, as in the tests)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from threadline.domain.entities import AiRecord


class Metrics:
    def __init__(
        self, active_runs: Callable[[], float], redis_up: Callable[[], float] | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
