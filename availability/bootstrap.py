"""The composition root: the one place that turns `Settings` into running parts.

Entry points (CLI commands, the ASGI app factory, benchmarks) call `open_runtime()` and get
the Redis client, ledger, rule store and rule cache wired together; nothing else reads
configuration or builds clients by itself.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from availability.clusterclient import ServiceCluster
from availability.config import Settings
from availability.embedded_redis import DataDirOwned, EmbeddedRedis, own_or_join
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits, ReservationPolicy
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore

log = logging.getLogger("availability")


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    redis_url: str
    ledger: Ledger
    store: RuleStore
    rules: RuleCache
    embedded_redis: EmbeddedRedis | None = None
    #: data directory of the embedded server this runtime uses (owned here or joined), for
    #: /health/ready to report its owner's supervision state; None with AVAILABILITY_REDIS_URL
    embedded_dir: Path | None = None
    #: extra things to close, in reverse order, when the runtime closes
    closers: list = field(default_factory=list)
    #: the sibling ERP flows (AVAILABILITY_FLOWS) when this runtime was opened with
    #: flows=True; the webhook route hands order, customer, refund and return topics to
    #: their intakes (`erp_flows.webhook_intakes()`)
    erp_flows: "ErpFlows | None" = None


def make_redis(url: str, *, cluster: bool = False, max_connections: int = 64) -> Redis:
    """The one way a process gets its Redis client. `cluster`: `url` names any node of a
    Redis Cluster, and the client routes each command (EVALSHA by its first key) to the
    slot's primary, follows MOVED/ASK and reloads the slot map after a failover."""
    if cluster:
        # max_connections is per node, and the cluster client raises beyond it instead of
        # queueing; the retries span a failover (node timeout + election, a few seconds).
        return ServiceCluster.from_url(
            url, max_connections=max_connections * 4, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 10)
        )
    # A blocking pool makes bursts queue for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30)
    return Redis(connection_pool=pool)


def embedded_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "redis"


def start_embedded_redis(settings: Settings, *, port: int = 0, wait_seconds: float = 15.0) -> EmbeddedRedis:
    """Start and own the data directory's server. A live owner (a CLI command finishing)
    is waited for up to `wait_seconds`, then DataDirOwned is raised."""
    data_dir = embedded_dir(settings)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            server = EmbeddedRedis(data_dir, port=port, binary=settings.redis_server).start()
            break
        except DataDirOwned as owned:
            if time.monotonic() > deadline:
                url = f" at {owned.owner.url}" if owned.owner else ""
                raise DataDirOwned(owned.data_dir, owned.owner, hint=(
                    f"stop it, or set AVAILABILITY_REDIS_URL to use its server{url}")) from None
            time.sleep(0.2)
    log.info("embedded server %s on %s (data in %s, owned by pid %d)", server.binary, server.url, data_dir, os.getpid())
    return server


def embedded_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The owner's server when the data directory has a live owner, else one started
    (and owned, for the caller to stop) here."""
    url, server = own_or_join(embedded_dir(settings), binary=settings.redis_server)
    if server is None:
        log.info("using the embedded server of this data directory's owner at %s", url)
    else:
        log.info("embedded server %s on %s (data in %s)", server.binary, url, server.data_dir)
    return url, server


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, embedded: EmbeddedRedis | None = None, check_layout: bool = True, flows: bool = False
) -> AsyncIterator[Runtime]:
    """Build everything from settings; close it all on exit (the embedded Redis last).
    `flows`: also build the ERP flows named in AVAILABILITY_FLOWS (`serve` does)."""
    owned_redis = None
    served_dir = None
    if settings.redis_url:
        redis_url = settings.redis_url
    elif embedded is not None:
        redis_url, served_dir = embedded.url, embedded.data_dir
    else:
        redis_url, owned_redis = embedded_redis_url(settings)
        embedded, served_dir = owned_redis, embedded_dir(settings)
    if settings.redis_cluster and not settings.redis_url:
        raise ValueError("AVAILABILITY_REDIS_CLUSTER=true needs AVAILABILITY_REDIS_URL naming a node of the cluster")
    redis = make_redis(redis_url, cluster=settings.redis_cluster)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = RuleStore(settings.resolved_database_url())
    try:
        await store.start()
        rules = RuleCache(store, refresh_interval=settings.rules_refresh_seconds)
        await rules.start()
        ledger = Ledger(
            redis,
            keys=KeyLayout(settings.key_prefix, settings.ledger_partitions),
            limits=LedgerLimits(
                idempotency_window_ms=settings.idempotency_window_seconds * 1000,
                journal_cap=settings.journal_cap,
                delta_log_cap=settings.delta_log_cap,
                oversell_cap=settings.oversell_cap,
                idempotency_buckets=settings.idempotency_buckets,
                count_lag_ms={source: int(s * 1000) for source, s in settings.count_lag_seconds.items()} or None,
            ),
            reservations=ReservationPolicy(
                default_ttl_ms=settings.reservation_default_ttl_seconds * 1000,
                lease_ms=int(settings.reservation_lease_seconds * 1000),
                retention_ms=settings.reservation_retention_seconds * 1000,
                group_max=settings.reservation_group_max,
                debug_pause_at=settings.debug_reserve_pause_at,
                debug_pause_seconds=settings.debug_reserve_pause_seconds,
            ),
        )
        await ledger.load_scripts()
        if check_layout:  # the migration opens a runtime on a ledger still in the old layout
            # the ingest streams' names too, when they are Redis streams (keys.py)
            await ledger.check_layout(settings.partitions if settings.broker == "redis" else 0)
        runtime = Runtime(settings, redis, redis_url, ledger, store, rules, embedded, served_dir)
        try:
            async with AsyncExitStack() as stack:
                if flows and settings.flows:
                    # a node that does not run the "flows" service (an API-only node) needs
                    # the intakes (the webhook route), not the ERP or Shopify clients
                    with_erp = settings.services is None or "flows" in settings.services
                    runtime.erp_flows = await stack.enter_async_context(
                        open_erp_flows(settings, redis, with_erp=with_erp, runtime=runtime))
                yield runtime
        finally:
            for closer in reversed(runtime.closers):
                await closer()
            await rules.stop()
    finally:
        await store.close()
        await redis.aclose()
        if owned_redis is not None:
            owned_redis.stop()


# --- the sibling ERP flows (availability/flows/{orders,customers,fulfilment,returns,finance}) ---

#: the flows AVAILABILITY_FLOWS may name
ERP_FLOWS = ("orders", "customers", "fulfilment", "returns", "finance")


@dataclass
class FlowParts:
    """One sibling flow's parts: its store and work queue, the intake the webhook route and
    `flows ... feed` hand payloads to (none for finance: payouts are polled), and what the
    `flows` service runs (`run(stop)`; built only with the ERP)."""

    store: Any
    queue: Any
    intake: Any = None
    worker: Any = None


@dataclass
class ErpFlows:
    """The ERP flows' parts, built once here: the order flow's intake (the webhook route and
    `flows orders feed` use it) and worker, and the customers, fulfilment, returns and
    finance flows named in AVAILABILITY_FLOWS, the ERP client (and the embedded Tryton when
    this process started it)."""

    names: list[str]
    order_store: Any
    order_queue: Any
    order_intake: Any
    erp: Any = None
    order_worker: Any = None
    fulfilment: Any = None  # availability.flows.fulfilment.flow.FulfilmentParts
    customers: FlowParts | None = None
    returns: FlowParts | None = None
    finance: FlowParts | None = None  # worker: the payout poller (FinanceFlow)
    erp_server: Any = None

    @property
    def workers(self) -> list:
        """What `serve`'s flows service runs (each has `run(stop)`)."""
        out = []
        if "orders" in self.names and self.order_worker is not None:
            out.append(self.order_worker)
        if self.fulfilment is not None and self.fulfilment.worker is not None:
            out.append(self.fulfilment.worker)
            if self.fulfilment.watcher is not None:
                out.append(self.fulfilment.watcher)
        for parts in (self.customers, self.returns, self.finance):
            if parts is not None and parts.worker is not None:
                out.append(parts.worker)
        return out

    def webhook_intakes(self) -> dict[str, tuple[str, Any, tuple[type[Exception], ...]]]:
        """Shopify topic -> (flow, its intake's `enqueue(topic, payload, headers)`, the
        errors meaning "this payload is not one the flow can take"), for the flows named."""
        from availability.flows.customers.flow import CUSTOMER_TOPICS, InvalidCustomer  # noqa: PLC0415
        from availability.flows.orders.mapping import ORDER_TOPICS, InvalidOrder  # noqa: PLC0415
        from availability.flows.returns.mapping import REFUND_TOPICS, RETURN_TOPICS, InvalidRefund  # noqa: PLC0415

        out: dict[str, tuple[str, Any, tuple[type[Exception], ...]]] = {}
        if "orders" in self.names:
            out |= {t: ("orders", self.order_intake.enqueue_order_webhook, (InvalidOrder,)) for t in ORDER_TOPICS}
        if self.customers is not None:
            out |= {t: ("customers", self.customers.intake.enqueue_customer_webhook, (InvalidCustomer,))
                    for t in CUSTOMER_TOPICS}
        if self.returns is not None:
            out |= {t: ("returns", self.returns.intake.enqueue_webhook, (InvalidRefund,))
                    for t in REFUND_TOPICS + RETURN_TOPICS}
        return out


def start_embedded_erp(settings: Settings):
    """Start the embedded Tryton of the data dir (set up by `availability erp init`), the way
    the embedded Redis starts when no URL is configured. Raises SystemExit when none is set up."""
    from adapters.erp.tryton.server import ErpHome, TrytonServer  # noqa: PLC0415

    home = ErpHome(settings.data_dir)
    if not home.initialised():
        raise SystemExit(f"no ERP configured and none set up in {home.dir}: run `availability erp init`, or set "
                         "AVAILABILITY_ERP_URL (+ _LOGIN, _PASSWORD) for an existing Tryton")
    server = TrytonServer(settings.data_dir).start()
    log.info("embedded Tryton on %s (database %s)", server.url, home.database)
    return server


def erp_client(settings: Settings):
    """(client, embedded server or None): the configured Tryton, else the embedded one."""
    from adapters.erp.tryton.client import TrytonErp  # noqa: PLC0415

    if settings.erp_url:
        if not settings.erp_password:
            raise SystemExit("AVAILABILITY_ERP_PASSWORD is required with AVAILABILITY_ERP_URL")
        return TrytonErp(settings.erp_url, settings.erp_login, settings.erp_password), None
    server = start_embedded_erp(settings)
    return TrytonErp(server.url, server.login, server.password()), server


def order_worker_config(settings: Settings, config_class: Any = None, **extra: Any) -> Any:
    """The order flow's worker settings (AVAILABILITY_ORDERS_*), which the returns worker
    shares (its config class extends the order worker's)."""
    from availability.flows.orders.flow import WorkerConfig  # noqa: PLC0415

    return (config_class or WorkerConfig)(
        lease_ms=int(settings.orders_lease_seconds * 1000), retry_cap_s=settings.orders_retry_cap_seconds,
        erp_down_exception_after=settings.orders_erp_down_exception_after, **extra)


@asynccontextmanager
async def open_erp_flows(settings: Settings, redis: Redis, *, names: list[str] | None = None,
                         with_erp: bool = True, shopify: Any = None, runtime: Runtime | None = None
                         ) -> AsyncIterator[ErpFlows]:
    """Build the ERP flows over a Redis client: the order flow always (its store holds the
    orders the fulfilment flow ships and the returns flow credits), the others when named.
    `with_erp=False` builds intakes and stores only (an API-only node, CLI feed, status,
    exceptions). `shopify`: a Shopify Admin client for the fulfilment flow (default: the
    configured shop's). `runtime`: the returns worker's ledger, event publisher and
    location map (required for it)."""
    from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker  # noqa: PLC0415
    from availability.flows.orders.mapping import default_shop  # noqa: PLC0415
    from availability.flows.orders.store import OrderStore  # noqa: PLC0415

    names = list(settings.flows if names is None else names)
    unknown = sorted(set(names) - set(ERP_FLOWS))
    if unknown:
        raise SystemExit(f"AVAILABILITY_FLOWS names unknown flow(s) {', '.join(unknown)} (known: {', '.join(ERP_FLOWS)})")
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    # queues of a deployment from before the flows' hash tag (flows/keymoves.py): idempotent,
    # a few commands when there is nothing to move, so every start checks
    from availability.flows.keymoves import move_legacy_flow_keys  # noqa: PLC0415

    moved = await move_legacy_flow_keys(redis, settings.key_prefix, dict.fromkeys(["orders", *names]))
    if moved["moved"] or moved["merged"]:
        log.info("ERP flows' queue keys moved to their hash-tagged names: %s", moved)
    async with AsyncExitStack() as stack:
        store = await OrderStore(settings.resolved_database_url()).open()
        stack.push_async_callback(store.close)
        queue = OrderQueue(redis, settings.key_prefix)
        shop = default_shop(settings.erp_shop, settings.shopify_url, settings.shopify_shop_domain)
        flows = ErpFlows(names, store, queue, OrderIntake(store, queue, shop=shop))
        if with_erp:
            erp, server = erp_client(settings)
            stack.push_async_callback(erp.aclose)
            if server is not None:
                stack.callback(server.stop)
            flows.erp, flows.erp_server = erp, server
            flows.order_worker = OrderWorker(store, queue, erp, config=order_worker_config(
                settings, guest_party=settings.guest_party, phone_region=settings.customer_phone_region,
                warehouses=dict(settings.erp_warehouses)))
        if "customers" in names:
            flows.customers = _customer_flow(settings, redis, store, flows.erp, shop)
        if "fulfilment" in names:
            from availability.flows.fulfilment.flow import build_fulfilment  # noqa: PLC0415

            flows.fulfilment = await stack.enter_async_context(
                build_fulfilment(settings, redis, orders=store, erp=flows.erp, shopify=shopify, with_erp=with_erp))
        if "returns" in names:
            flows.returns = await _returns_flow(stack, settings, redis, store, flows.erp, shop, runtime)
        if "finance" in names:
            flows.finance = await _finance_flow(stack, settings, redis, flows.erp, shop)
        yield flows


def _customer_flow(settings: Settings, redis: Redis, orders: Any, erp: Any, shop: str) -> FlowParts:
    from availability.flows.customers.flow import CustomerIntake, CustomerQueue, CustomerWorker  # noqa: PLC0415
    from availability.flows.customers.identity import CustomerIdentity  # noqa: PLC0415
    from availability.flows.customers.store import CustomerStore  # noqa: PLC0415

    store = CustomerStore(orders.engine)  # the identity map lives beside the order documents
    queue = CustomerQueue(redis, settings.key_prefix)
    parts = FlowParts(store, queue, CustomerIntake(store, queue, shop=shop))
    if erp is not None:
        identity = CustomerIdentity(store, erp, guest_party=settings.guest_party,
                                    default_region=settings.customer_phone_region)
        parts.worker = CustomerWorker(identity, queue, lease_ms=int(settings.orders_lease_seconds * 1000))
    return parts


async def _returns_flow(stack: AsyncExitStack, settings: Settings, redis: Redis, orders: Any, erp: Any, shop: str,
                        runtime: Runtime | None) -> FlowParts:
    from availability.flows.returns.flow import (  # noqa: PLC0415
        ReturnsIntake, ReturnsQueue, ReturnsWorker, SaleLookup, StreamSink, WorkerConfig,
    )
    from availability.flows.returns.store import ReturnStore  # noqa: PLC0415

    store = await ReturnStore(settings.resolved_database_url()).open()
    stack.push_async_callback(store.close)
    queue = ReturnsQueue(redis, settings.key_prefix)
    parts = FlowParts(store, queue, ReturnsIntake(store, queue, shop=shop))
    if erp is not None:
        from availability.flows.inventory.shops import configured_shops  # noqa: PLC0415
        from availability.ingest.publisher import EventPublisher  # noqa: PLC0415
        from availability.ingest.shopify_webhooks import ShopLocations  # noqa: PLC0415

        if runtime is None:
            raise SystemExit("the returns worker books restocks in the ledger: build it with the runtime")
        shops = configured_shops(settings)
        if not shops:
            raise SystemExit("the returns flow needs a Shopify shop (its location map): AVAILABILITY_SHOPIFY_SHOPS "
                             "or AVAILABILITY_SHOPIFY_SHOP_DOMAIN")
        # restocks go to the ingest stream like every source's events (the consumer applies them)
        publisher = EventPublisher(runtime)
        await publisher.start()
        stack.push_async_callback(publisher.close)
        parts.worker = ReturnsWorker(store, queue, erp, StreamSink(publisher, runtime.ledger),
                                     SaleLookup(engine=orders.engine), ShopLocations(runtime, shops[0]).get,
                                     config=order_worker_config(settings, WorkerConfig))
    return parts


async def _finance_flow(stack: AsyncExitStack, settings: Settings, redis: Redis, erp: Any, shop: str) -> FlowParts:
    from availability.flows.finance.flow import FinanceConfig, FinanceFlow, finance_queue  # noqa: PLC0415
    from availability.flows.finance.store import FinanceStore  # noqa: PLC0415

    store = await FinanceStore(settings.resolved_database_url()).open()
    stack.push_async_callback(store.close)
    parts = FlowParts(store, finance_queue(redis, settings.key_prefix))
    if erp is not None:
        from adapters.shopify.client import ShopifyAdminClient  # noqa: PLC0415
        from adapters.shopify.payments import ShopifyPayments  # noqa: PLC0415

        if not (settings.shopify_url and settings.shopify_token):
            raise SystemExit("the finance flow polls Shopify Payments: set AVAILABILITY_SHOPIFY_URL and "
                             "AVAILABILITY_SHOPIFY_TOKEN (scope shopify_payments_payouts)")
        client = ShopifyAdminClient(settings.shopify_url, settings.shopify_token, settings.shopify_api_version,
                                    timeout=settings.shopify_timeout_seconds)
        stack.push_async_callback(client.aclose)
        parts.worker = FinanceFlow(store, parts.queue, erp, ShopifyPayments(client), shop=shop, config=FinanceConfig(
            # a payout's listing and entry take longer than a sale: twice the order flow's lease
            lease_ms=int(settings.orders_lease_seconds * 2000), retry_cap_s=settings.orders_retry_cap_seconds,
            erp_down_exception_after=settings.orders_erp_down_exception_after,
            poll_interval_s=settings.finance_poll_seconds))
    return parts


class CommandRoot:
    """What CLI commands take from the composition root. availability/cli.py hands one to
    every command (as `args.root`), so an area's commands.py never imports this module
    from below."""

    open_runtime = staticmethod(open_runtime)
    make_redis = staticmethod(make_redis)
    start_embedded_redis = staticmethod(start_embedded_redis)
    start_embedded_erp = staticmethod(start_embedded_erp)
    erp_client = staticmethod(erp_client)
    open_erp_flows = staticmethod(open_erp_flows)
