"""`flow_metrics`: the Prometheus metrics every sibling flow has, named one way.

Each flow (orders, fulfilment, returns, finance) has a latency histogram (its document
received to settled in the ERP or on Shopify), its ERP calls by operation and outcome, the
exceptions it opened by reason, its backlog by state and, for the flows fed by webhooks or
files, what its intake took in. The flows' `metrics.py` modules call this once (module
level: one set per process, in the default registry /metrics serves) and add what only
they have. Labels stay bounded: reason, state, operation, outcome, topic, source.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

#: seconds, from a webhook round trip to a quarter of an hour
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass(frozen=True)
class FlowMetrics:
    latency: Histogram
    erp_calls: Counter
    exceptions: Counter
    backlog: Gauge
    intake: Counter | None = None


def flow_metrics(name: str, *, latency: tuple[str, str], erp_calls: str, exceptions: str, backlog: str,
                 intake: tuple[str, str, list[str]] | None = None,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> FlowMetrics:
    """`availability_{name}_...`: `latency` is (metric name after the prefix, help), the other
    strings the help of `erp_operations_total`, `exceptions_total`, `backlog`; `intake` is
    (name after the prefix, help, labels)."""
    prefix = f"availability_{name}_"
    return FlowMetrics(
        latency=Histogram(prefix + latency[0], latency[1], buckets=buckets),
        erp_calls=Counter(prefix + "erp_operations_total", erp_calls, ["operation", "outcome"]),
        exceptions=Counter(prefix + "exceptions_total", exceptions, ["reason"]),
        backlog=Gauge(prefix + "backlog", backlog, ["state"]),
        intake=Counter(prefix + intake[0], intake[1], intake[2]) if intake is not None else None,
    )
