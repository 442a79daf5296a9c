"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists
below: edit here, then run `python deploy/grafana/generate.py`. The JSON is committed
(Grafana provisions files, not Python); tests/deploy/test_dashboards.py checks that it
matches this file and that every metric a panel uses exists in the service's /metrics
(redis_* ones come from redis_exporter)."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# (title, unit, [(expr, legend), ...]); None starts a new row named by the next string
Panel = tuple[str, str, list[tuple[str, str]]]


def p99(metric: str, by: str = "", q: str = "0.99") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[$__rate_interval])))"


LOOKUP = 'route="/v1/availability/{sku}"'
RESERVE = 'route=~"/v1/reservations.*"'

DASHBOARDS: dict[str, tuple[str, list]] = {
    "availability-ingest": (
        "Availability: ingestion",
        [
            "Throughput",
            ("Events applied by type", "ops", [
                ("sum by (type) (rate(availability_ingest_events_applied_total[$__rate_interval]))", "{{type}}"),
            ]),
            ("Events applied by source", "ops", [
                ("sum by (source) (rate(availability_ingest_events_applied_total[$__rate_interval]))", "{{source}}"),
            ]),
            ("Ledger outcomes", "ops", [
                ("sum by (status) (rate(availability_ingest_events_total[$__rate_interval]))", "{{status}}"),
            ]),
            ("Published to the streams by source", "ops", [
                ("sum by (source) (rate(availability_ingest_published_total[$__rate_interval]))", "{{source}}"),
            ]),
            "Lag per partition",
            ("Lag (undelivered entries) per partition", "short", [
                ("max by (partition) (availability_ingest_lag)", "partition {{partition}}"),
            ]),
            ("Pending (unacknowledged) per partition", "short", [
                ("max by (partition) (availability_ingest_pending)", "partition {{partition}}"),
            ]),
            ("Stream behind its group (redis_exporter)", "s", [
                (
                    '(max by (stream) (redis_stream_last_generated_id{stream=~".+:events:[{]p[0-9]+[}]"})'
                    ' - on (stream) max by (stream) (redis_stream_group_last_delivered_id{group="ledger", stream=~".+:events:[{]p[0-9]+[}]"})) / 1000',
                    "{{stream}}",
                ),
            ]),
            ("Batch apply time p50 / p99", "s", [
                (p99("availability_ingest_apply_seconds", q="0.5"), "p50"),
                (p99("availability_ingest_apply_seconds"), "p99"),
            ]),
            ("Entries per batch p50 / p99", "short", [
                (p99("availability_ingest_batch_size", q="0.5"), "p50"),
                (p99("availability_ingest_batch_size"), "p99"),
            ]),
            "Exceptions",
            ("Dead letters by reason", "ops", [
                ("sum by (reason) (rate(availability_ingest_dead_letters_total[$__rate_interval]))", "{{reason}}"),
            ]),
            ("Duplicates and late events", "ops", [
                ("sum(rate(availability_ingest_duplicates_total[$__rate_interval]))", "duplicates"),
                ("sum by (status) (rate(availability_ingest_late_events_total[$__rate_interval]))", "late: {{status}}"),
            ]),
            ("Reclaimed from stopped consumers", "ops", [
                ("sum by (partition) (rate(availability_ingest_reclaimed_total[$__rate_interval]))", "partition {{partition}}"),
            ]),
            ("Unknown SKUs and locations", "ops", [
                ("sum(rate(availability_ingest_unknown_location_events_total[$__rate_interval]))", "unknown location"),
                ("sum(rate(availability_ingest_unknown_sku_events_total[$__rate_interval]))", "unknown SKU"),
            ]),
            ("HTTP intake and Shopify webhooks", "reqps", [
                ("sum by (endpoint, outcome) (rate(availability_ingest_intake_requests_total[$__rate_interval]))", "{{endpoint}} {{outcome}}"),
                ("sum by (topic, outcome) (rate(availability_ingest_shopify_webhooks_total[$__rate_interval]))", "webhook {{topic}} {{outcome}}"),
            ]),
        ],
    ),
    "availability-api": (
        "Availability: lookups and reservations",
        [
            "Lookups",
            ("Lookup latency p50 / p99 (GET /v1/availability/{sku})", "s", [
                (p99("availability_http_request_duration_seconds", q="0.5").replace("_bucket[", f"_bucket{{{LOOKUP}}}["), "p50"),
                (p99("availability_http_request_duration_seconds").replace("_bucket[", f"_bucket{{{LOOKUP}}}["), "p99"),
            ]),
            ("Requests by route", "reqps", [
                ("sum by (route) (rate(availability_http_request_duration_seconds_count[$__rate_interval]))", "{{route}}"),
            ]),
            ("Responses by status", "reqps", [
                ("sum by (status) (rate(availability_http_request_duration_seconds_count[$__rate_interval]))", "{{status}}"),
            ]),
            ("Server errors (5xx) share", "percentunit", [
                (
                    'sum(rate(availability_http_request_duration_seconds_count{status=~"5.."}[$__rate_interval]))'
                    " / sum(rate(availability_http_request_duration_seconds_count[$__rate_interval]))",
                    "5xx",
                ),
            ]),
            "Reservations",
            ("Reservation latency p50 / p99", "s", [
                (p99("availability_http_request_duration_seconds", by="route", q="0.5").replace("_bucket[", f"_bucket{{{RESERVE}}}["), "p50 {{route}}"),
                (p99("availability_http_request_duration_seconds", by="route").replace("_bucket[", f"_bucket{{{RESERVE}}}["), "p99 {{route}}"),
            ]),
            ("Reservation outcomes", "reqps", [
                ("sum by (outcome) (rate(availability_api_reservations_total[$__rate_interval]))", "{{outcome}}"),
            ]),
            ("Holds waiting to expire", "short", [
                ("max(availability_reservations_pending_expiry)", "pending expiry"),
            ]),
            ("Oversell exceptions by channel", "short", [
                ("sum by (channel) (increase(availability_oversell_exceptions_total[$__range]))", "{{channel}}"),
            ]),
            "Events and rules",
            ("POST /v1/events by mode and outcome", "ops", [
                ("sum by (mode, outcome) (rate(availability_api_events_total[$__rate_interval]))", "{{mode}} {{outcome}}"),
            ]),
            ("Rules version and rule-change marking", "short", [
                ("max(availability_rules_version)", "rules version"),
                ("max(availability_rules_dirty_pending)", "changes being marked"),
            ]),
        ],
    ),
    "availability-shopify": (
        "Availability: Shopify push and flows",
        [
            "Freshness",
            ("Push freshness p50 / p99 (dirty to confirmed)", "s", [
                (p99("availability_shopify_push_lag_seconds", q="0.5"), "p50"),
                (p99("availability_shopify_push_lag_seconds"), "p99"),
            ]),
            ("Levels waiting", "short", [
                ("max(availability_dirty_pairs)", "dirty (SKU, location) pairs"),
                ("max(availability_shopify_pending_marks)", "marks waiting for the publisher"),
            ]),
            "Calls and coalescing",
            ("GraphQL calls by operation and outcome", "reqps", [
                ("sum by (operation, outcome) (rate(availability_shopify_calls_total[$__rate_interval]))", "{{operation}} {{outcome}}"),
            ]),
            ("Coalescing: marks per pushed quantity", "short", [
                ("max(availability_shopify_coalescing_ratio)", "marks per quantity"),
            ]),
            ("Quantities pushed, unchanged; marks claimed", "ops", [
                ("sum(rate(availability_shopify_quantities_pushed_total[$__rate_interval]))", "pushed"),
                ("sum(rate(availability_shopify_quantities_unchanged_total[$__rate_interval]))", "unchanged"),
                ("sum by (path) (rate(availability_shopify_marks_claimed_total[$__rate_interval]))", "claimed ({{path}})"),
            ]),
            ("Cost budget", "short", [
                ("min(availability_shopify_points_available)", "points available"),
                ("sum(rate(availability_shopify_points_used_total[$__rate_interval]))", "points used / s"),
            ]),
            ("Throttled and stale", "ops", [
                ("sum(rate(availability_shopify_throttled_total[$__rate_interval]))", "throttled"),
                ("sum(rate(availability_shopify_stale_total[$__rate_interval]))", "stale (compare-and-set)"),
            ]),
            ("Drift detected and repaired", "ops", [
                ("sum by (source) (rate(availability_shopify_drift_detected_total[$__rate_interval]))", "detected ({{source}})"),
                ("sum by (source) (rate(availability_shopify_drift_repaired_total[$__rate_interval]))", "repaired ({{source}})"),
            ]),
            ("Unmapped and parked", "short", [
                ("max(availability_shopify_unmapped_skus)", "unmapped SKUs"),
                ("sum(increase(availability_shopify_unmapped_marks_total[$__rate_interval]))", "unmapped marks dropped"),
                ("sum(increase(availability_shopify_parked_skipped_total[$__rate_interval]))", "parked levels skipped"),
            ]),
            "Flows (shared machinery)",
            ("Dead letters waiting per flow", "short", [
                ("max by (flow) (availability_flow_dlq_size)", "{{flow}}"),
                ("max(availability_shopify_dlq_size)", "shopify push"),
            ]),
            ("Dead-lettered by reason", "ops", [
                ("sum by (flow, reason) (rate(availability_flow_dead_letters_total[$__rate_interval]))", "{{flow}} {{reason}}"),
            ]),
            ("Retries, exhausted retries, outbox resends", "ops", [
                ("sum by (flow, kind) (rate(availability_flow_retries_total[$__rate_interval]))", "retry {{flow}} {{kind}}"),
                ("sum by (flow) (rate(availability_flow_gave_up_total[$__rate_interval]))", "gave up {{flow}}"),
                ("sum by (flow) (rate(availability_flow_outbox_recovered_total[$__rate_interval]))", "outbox resent {{flow}}"),
            ]),
        ],
    ),
    "availability-redis": (
        "Availability: Redis (redis_exporter)",
        [
            "Memory",
            ("Memory used and limit", "bytes", [
                ("max(redis_memory_used_bytes)", "used"),
                ("max(redis_memory_max_bytes)", "maxmemory"),
            ]),
            ("Memory used / maxmemory", "percentunit", [
                ("max(redis_memory_used_bytes / (redis_memory_max_bytes > 0))", "used share"),
            ]),
            ("Evicted keys (must stay 0: noeviction)", "short", [
                ("sum(increase(redis_evicted_keys_total[$__rate_interval]))", "evicted"),
            ]),
            ("Ingest stream lengths", "short", [
                ('max by (stream) (redis_stream_length{stream=~".+:events:[{]p[0-9]+[}]"})', "{{stream}}"),
            ]),
            "Ops",
            ("Commands per second", "ops", [
                ("sum(rate(redis_commands_processed_total[$__rate_interval]))", "commands"),
            ]),
            ("Commands by type", "ops", [
                ("topk(10, sum by (cmd) (rate(redis_commands_total[$__rate_interval])))", "{{cmd}}"),
            ]),
            ("Time per command (avg)", "s", [
                (
                    "sum by (cmd) (rate(redis_commands_duration_seconds_total[$__rate_interval]))"
                    " / sum by (cmd) (rate(redis_commands_total[$__rate_interval]))",
                    "{{cmd}}",
                ),
            ]),
            ("Clients", "short", [
                ("max(redis_connected_clients)", "connected"),
                ("sum(increase(redis_rejected_connections_total[$__rate_interval]))", "rejected"),
            ]),
            ("Up", "short", [
                ("max(redis_up)", "redis_up"),
            ]),
        ],
    ),
}


def build(uid: str, title: str, items: list) -> dict:
    panels: list[dict] = []
    y = 0
    x = 0
    for item in items:
        if isinstance(item, str):
            if x:
                y += 8
                x = 0
            panels.append({
                "type": "row", "title": item, "collapsed": False, "id": len(panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
            })
            y += 1
            continue
        name, unit, queries = item
        panels.append({
            "type": "timeseries",
            "id": len(panels) + 1,
            "title": name,
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(queries)
            ],
        })
        x = 12 - x
        if x == 0:
            y += 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["availability"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(build(uid, title, items), indent=2) + "\n"
        for uid, (title, items) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
