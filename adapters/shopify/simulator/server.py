"""Serving the simulator: :func:`run_simulator` (blocking, uvicorn), :class:`SimulatorServer`
(a background thread on a free port, for tests and demos) and the command line
(``python -m adapters.shopify.simulator``; ``availability sim shopify`` uses
:func:`config_from_args`)."""

from __future__ import annotations

import argparse
import logging
import threading
import time

import uvicorn

from .app import create_app
from .config import COST_MODELS, PLANS, FaultConfig, SimulatorConfig
from .state import SimulatorState

log = logging.getLogger("adapters.shopify.simulator")


def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve the simulator with uvicorn until interrupted (blocking)."""
    app = create_app(config)
    limits = config.limits()
    log.warning(
        "Shopify simulator on http://%s:%d/admin/api/%s/graphql.json (token %s, plan %s: %.0f pts/s, bucket %.0f, cost model %s)",
        host,
        port,
        config.api_version,
        config.access_token,
        config.plan,
        limits.restore_rate,
        limits.bucket_size,
        config.cost_model,
    )
    if config.catalog_items:
        log.warning(
            "seeded %d items x %d locations (available %d)", config.catalog_items, config.catalog_locations, config.catalog_available
        )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


class SimulatorServer:
    """Run the simulator in a background thread on a free port (for tests and demos).

    ``with SimulatorServer(config) as sim:`` starts it and yields the server, which
    exposes ``base_url`` (e.g. ``http://127.0.0.1:54321``), ``state``
    (:class:`SimulatorState`) and ``graphql_url(version)``. ``start()`` returns the base
    URL for callers that do not use the context manager.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state: SimulatorState | None = None,
    ) -> None:
        self.config = config or (state.config if state else SimulatorConfig())
        self.state = state or SimulatorState(self.config)
        self.host = host
        self.port = port
        self.app = create_app(self.config, self.state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    @property
    def webhooks_pending(self) -> int:
        """Webhook deliveries scheduled or in flight (0 once all have been attempted)."""
        return self.app.state.webhooks.pending

    def wait_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until every scheduled webhook delivery is done; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.webhooks_pending:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self, timeout: float = 10.0) -> str:
        if self._thread is not None:
            return self.base_url
        uv = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(uv)
        thread = threading.Thread(target=server.run, name="shopify-simulator", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("Shopify simulator failed to start")
            time.sleep(0.01)
        sock = server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self.state.bulk.base_url = self.base_url
        self._server, self._thread = server, thread
        return self.base_url

    def graphql_url(self, version: str | None = None) -> str:
        return f"{self.base_url}/admin/api/{version or self.config.api_version}/graphql.json"

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (see :meth:`stop`)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down and wait for the server thread to end."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(min(timeout, 2.0))
        if self._thread.is_alive():
            # Requests may still be sleeping in a timeout fault: stop waiting for them.
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_simulator_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every simulator option on ``p`` (``python -m adapters.shopify.simulator`` uses it;
    a host CLI such as ``availability sim shopify`` can too, then
    :func:`config_from_args`)."""
    d = SimulatorConfig()
    f = FaultConfig()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--plan", choices=sorted(PLANS), default="standard")
    p.add_argument("--cost-model", choices=sorted(COST_MODELS), default=d.cost_model)
    p.add_argument("--mutation-entry-cost", type=float, default=None, help="points per mutation entry (overrides --cost-model)")
    p.add_argument("--restore-rate", type=float, default=None, help="points/s (overrides --plan)")
    p.add_argument("--bucket-size", type=float, default=None, help="bucket size (overrides --plan)")
    p.add_argument("--token", default=d.access_token, help="accepted X-Shopify-Access-Token")
    p.add_argument("--api-version", default=d.api_version, help="version announced in webhooks")
    p.add_argument("--shop-domain", default=d.shop_domain)
    p.add_argument("--throttle-status", type=int, choices=[200, 429], default=200)
    p.add_argument("--webhook-url", default=None, help="where webhooks go")
    p.add_argument("--webhook-secret", default=d.webhook_secret)
    p.add_argument("--no-echo-api-writes", action="store_true", help="do not announce the app's own writes")
    p.add_argument("--seed-items", type=int, default=0, help="seed N items stocked at every location")
    p.add_argument("--seed-locations", type=int, default=2)
    p.add_argument("--initial-available", type=int, default=10)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument("--timeout-rate", type=float, default=0.0)
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.add_argument("--external-writer-interval", type=float, default=0.0, help="seconds between external changes")
    p.add_argument("--buyer-rate", type=float, default=f.buyer_rate_per_s, help="background checkouts per second")
    p.add_argument("--buyer-max-quantity", type=int, default=f.buyer_max_quantity)
    p.add_argument("--webhook-delay-ms", type=float, default=f.webhook_delay_ms)
    p.add_argument("--webhook-delay-jitter-ms", type=float, default=f.webhook_delay_jitter_ms)
    p.add_argument("--webhook-duplicate-rate", type=float, default=f.webhook_duplicate_rate)
    p.add_argument("--webhook-reorder-rate", type=float, default=f.webhook_reorder_rate)
    p.add_argument("--seed", type=int, default=0, help="RNG seed for faults")
    return p


def _build_arg_parser() -> argparse.ArgumentParser:
    return add_simulator_arguments(
        argparse.ArgumentParser(
            prog="python -m adapters.shopify.simulator",
            description="Local simulator of the Shopify GraphQL Admin API (inventory, orders, bulk operations).",
        )
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """A config from parsed arguments; options a caller's parser lacks keep their defaults."""
    d, f = SimulatorConfig(), FaultConfig()

    def arg(name: str, default: object) -> object:
        return getattr(args, name, default)

    return SimulatorConfig(
        access_token=args.token,
        plan=args.plan,
        cost_model=arg("cost_model", d.cost_model),
        mutation_entry_cost=arg("mutation_entry_cost", None),
        restore_rate=args.restore_rate,
        bucket_size=args.bucket_size,
        throttle_http_status=args.throttle_status,
        shop_domain=args.shop_domain,
        api_version=args.api_version,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        echo_api_writes=not args.no_echo_api_writes,
        seed=args.seed,
        catalog_items=args.seed_items,
        catalog_locations=args.seed_locations,
        catalog_available=args.initial_available,
        faults=FaultConfig(
            error_rate=args.error_rate,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            timeout_rate=args.timeout_rate,
            timeout_s=args.timeout_s,
            external_writer_interval_s=args.external_writer_interval,
            buyer_rate_per_s=arg("buyer_rate", f.buyer_rate_per_s),
            buyer_max_quantity=arg("buyer_max_quantity", f.buyer_max_quantity),
            webhook_delay_ms=arg("webhook_delay_ms", f.webhook_delay_ms),
            webhook_delay_jitter_ms=arg("webhook_delay_jitter_ms", f.webhook_delay_jitter_ms),
            webhook_duplicate_rate=arg("webhook_duplicate_rate", f.webhook_duplicate_rate),
            webhook_reorder_rate=arg("webhook_reorder_rate", f.webhook_reorder_rate),
        ),
    )


def main(argv: list[str] | None = None) -> None:
    args = _build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_simulator(args.host, args.port, config_from_args(args))
