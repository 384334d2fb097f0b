"""Prometheus metrics of one server (``GET /metrics``): requests, tokens, queue depth, latencies.

Each app gets its own registry, so several servers in one process (tests, benchmarks) never share
counters. ``MetricsMiddleware`` counts every HTTP request by endpoint and status and times it to its
last byte (so a streamed response counts its whole stream).
"""

from __future__ import annotations

import time
from typing import Any, Callable

ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServeMetrics:
    """The server's counters, gauges and histograms, in a registry of their own."""

    def __init__(self, queue_depth: Callable[[], int], running: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        reg = {"registry": self.registry}
        self.requests = Counter("llmtune_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], **reg)
        self.prompt_tokens = Counter("llmtune_prompt_tokens", "Prompt tokens of finished generation requests.", **reg)
        self.completion_tokens = Counter("llmtune_completion_tokens", "Tokens generated.", **reg)
        self.queue_depth = Gauge("llmtune_queue_depth", "Requests waiting for a batch slot.", **reg)
        self.queue_depth.set_function(queue_depth)
        self.running = Gauge("llmtune_running_sequences", "Sequences being generated in the batch.", **reg)
        self.running.set_function(running)
        self.latency = Histogram("llmtune_request_latency_seconds", "Time from request to last byte.",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, **reg)
        self.first_token = Histogram("llmtune_time_to_first_token_seconds",
                                     "Time from a generation request to its first text.", buckets=_LATENCY_BUCKETS, **reg)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: count and time every HTTP request by endpoint and status."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_and_watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            endpoint = scope.get("path", "") if scope.get("path") in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
