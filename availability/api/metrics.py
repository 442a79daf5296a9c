"""Prometheus metrics of the API: request latency per route template and status, plus
ledger and rule gauges read at scrape time.

`GET /metrics` serves, in one text page:
- this app's request histogram and counters;
- every metric registered in prometheus_client's default registry by other areas
  (ingestion, flows) running in the same process;
- gauges read when scraped: rules version, dirty (SKU, location) pairs waiting for the
  publisher, reservations pending expiry, rule-change marking pending.

With several uvicorn workers `availability serve` sets PROMETHEUS_MULTIPROC_DIR, and the
page aggregates every worker's files (prometheus_client multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

CONTENT_TYPE = "text/plain; version=0.0.4"

#: methods kept as a label value; anything else a client invents is counted as OTHER
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: sub-millisecond resolution: a cached lookup answers in a few hundred microseconds
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ApiMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # Per app, not the global registry: tests build many apps in one process.
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.registry = own
        self.latency = Histogram(
            "availability_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.reservations = Counter(
            "availability_api_reservations_total",
            "Reservation requests by outcome: held, replayed, short, rejected",
            ["outcome"],
            registry=own,
        )
        self.events = Counter(
            "availability_api_events_total",
            "Events received by POST /v1/events, by mode (direct, stream) and outcome",
            ["mode", "outcome"],
            registry=own,
        )
        self._children: dict[tuple[str, str, int], object] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)  # type: ignore[attr-defined]

    async def render(self, runtime: "Runtime", marker_pending: int | None = None) -> bytes:
        gauges = await read_gauges(runtime, marker_pending)
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_StaticCollector(gauges))
        if self.multiprocess:
            aggregate = CollectorRegistry()
            MultiProcessCollector(aggregate)
            parts = [generate_latest(aggregate)]
        else:
            parts = [generate_latest(self.registry), generate_latest(REGISTRY)]
        parts.append(generate_latest(scrape))
        return b"".join(parts)


class MetricsASGI:
    """Wraps the whole app (outside routing), so unknown routes and framework errors are timed too."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("path_template") or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.observe(method, route, status, time.perf_counter() - start)


async def read_gauges(runtime: "Runtime", marker_pending: int | None) -> list[GaugeMetricFamily]:
    keys = runtime.ledger.keys
    pipe = runtime.redis.pipeline(transaction=False)
    for p in keys.range():  # one set of each per ledger partition
        pipe.zcard(keys.dirty(p))
        pipe.zcard(keys.expiry(p))
    sizes = await pipe.execute()
    dirty, expiring = sum(sizes[0::2]), sum(sizes[1::2])
    out = [
        _gauge(
            "availability_rules_version",
            "Rule store version of the RuleBook this process answers with",
            runtime.rules.book.version,
        ),
        _gauge("availability_dirty_pairs", "(SKU, location) pairs waiting for the publisher", dirty),
        _gauge(
            "availability_reservations_pending_expiry",
            "Held reservations with a TTL not yet expired or settled",
            expiring,
        ),
    ]
    if marker_pending is not None:
        out.append(
            _gauge(
                "availability_rules_dirty_pending",
                "Rule changes whose (SKU, location) pairs are still being marked dirty (1 = a full pass)",
                marker_pending,
            )
        )
    return out


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], float(value))
    return family


class _StaticCollector:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
