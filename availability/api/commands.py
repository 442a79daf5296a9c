"""`availability serve`: the HTTP API and the background services, under uvicorn or Granian.

    availability serve [--host H] [--port P] [--workers N] [--server uvicorn|granian] [--access-log]

Host, port and workers default to AVAILABILITY_HOST / _PORT / _WORKERS, the server to
AVAILABILITY_SERVER (default granian). Both run the same app with its lifespan: Granian on
its RSGI interface (api/rsgi.py: the two lookup routes answered from Granian's request
object, everything else handed to Litestar as ASGI), uvicorn on ASGI. Granian is the
default because the lookup path measured several times faster under it in bench_api
(docs/performance.md, "Lookups"); uvicorn stays selectable. Either server's own loggers
(granian.access / uvicorn.access) write through the same log configuration. Each worker runs
the API and the background services (expiry sweeper, rules-dirty marker, and the
consumer and publisher when installed); the services coordinate through Redis.

With no AVAILABILITY_REDIS_URL the embedded server is started here, in the parent, which
owns the data directory (var/redis) for as long as it runs: the workers, and any CLI
command run beside it on the same AVAILABILITY_DATA_DIR, connect to that one server. If
the server dies, it is restarted on the same data within seconds; if it cannot be, serve
exits non-zero (for a supervisor to restart it) and /health/ready says which. With more than one worker Prometheus multiprocess mode is
switched on (a fresh directory under data_dir) so /metrics aggregates every worker.

With AVAILABILITY_FLOWS (orders, fulfilment) and no AVAILABILITY_ERP_URL, the embedded
Tryton under data_dir/erp (`availability erp init`) is started here the same way, and its
URL handed to the workers through the environment; each worker runs the flows' loops.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
from pathlib import Path

from availability.config import Settings
from availability.logs import log_config

log = logging.getLogger("availability.api")

ASGI_FACTORY = "availability.api.app:create_asgi_app"
RSGI_FACTORY = "availability.api.rsgi:create_rsgi_app"
SERVERS = ("granian", "uvicorn")
DEFAULT_SERVER = "granian"
#: seconds a uvicorn worker may take to answer its supervisor's health ping (see _run_uvicorn)
WORKER_HEALTHCHECK_S = 60


def default_server() -> str:
    """AVAILABILITY_SERVER, else granian (read here: the server is chosen before Settings matter)."""
    chosen = os.environ.get("AVAILABILITY_SERVER", "").strip().lower() or DEFAULT_SERVER
    if chosen not in SERVERS:
        raise SystemExit(f"AVAILABILITY_SERVER={chosen!r}: choose one of {', '.join(SERVERS)}")
    return chosen


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API with the consumer, publisher and other background services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="bind address (default AVAILABILITY_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default AVAILABILITY_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default AVAILABILITY_WORKERS or 1)")
    parser.add_argument("--server", choices=SERVERS, help="HTTP server (default AVAILABILITY_SERVER or granian)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    server = getattr(args, "server", None) or default_server()
    host = args.host or settings.host
    port = args.port or settings.port
    workers = max(1, args.workers or settings.workers)
    embedded = None
    if not settings.redis_url:
        embedded = args.root.start_embedded_redis(settings)
        embedded.supervise(on_failure=_stop_serving)
    erp_server = None
    runs_flows = settings.services is None or "flows" in settings.services
    if settings.flows and not settings.erp_url and runs_flows:
        # Like the embedded Redis: started here, in the parent, so every worker process
        # (whose Settings come from the environment) posts to this one Tryton.
        erp_server = args.root.start_embedded_erp(settings)
        os.environ["AVAILABILITY_ERP_URL"] = erp_server.url
        os.environ["AVAILABILITY_ERP_LOGIN"] = erp_server.login
        os.environ["AVAILABILITY_ERP_PASSWORD"] = erp_server.password()
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_dir(Path(settings.data_dir) / "prometheus-multiproc"))
    log.info(
        "serving the availability API on http://%s:%s with %d %s worker(s); docs at /schema", host, port, workers, server
    )
    level = logging.getLevelName(logging.getLogger().level or logging.INFO)
    try:
        if server == "granian":
            _run_granian(host, port, workers, args.access_log, level, settings)
        else:
            _run_uvicorn(host, port, workers, args.access_log, level, settings)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        if erp_server is not None:
            erp_server.stop()
        if embedded is not None:
            embedded.stop()
    if embedded is not None and embedded.failed.is_set():
        log.critical("serve stops: its embedded server could not be kept running")
        return 1
    return 0


def _run_uvicorn(host: str, port: int, workers: int, access_log: bool, level: str, settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415

    # uvicorn re-raises SIGTERM once it has shut down; as SystemExit it lets `finally` stop Redis.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        ASGI_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        access_log=access_log,
        log_level=level.lower(),
        timeout_graceful_shutdown=15,
        # uvicorn kills and respawns a worker that does not answer its supervisor's ping within
        # this (default 5 s). A spawned worker answers only once it has re-imported the CLI, and
        # on a loaded host that takes longer: every worker was killed before it could serve,
        # forever. A hung worker is still replaced, a minute later.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        log_config=log_config(level, settings.log_format),
    )


def _run_granian(host: str, port: int, workers: int, access_log: bool, level: str, settings: Settings) -> None:
    from granian import Granian  # noqa: PLC0415
    from granian.constants import Interfaces  # noqa: PLC0415

    if workers > 1:
        # Granian forks its workers from this process, which may have imported prometheus_client
        # before PROMETHEUS_MULTIPROC_DIR was set: pick the multiprocess value class now, or each
        # worker would count in its own memory and /metrics would show nothing of the others.
        from prometheus_client import values  # noqa: PLC0415

        values.ValueClass = values.get_value_class()
    # Granian handles SIGINT/SIGTERM itself and returns from serve(), so `finally` stops Redis.
    # One runtime thread per worker (Granian's default): the app is one asyncio loop; scale with --workers.
    Granian(
        RSGI_FACTORY,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        log_level=level.lower(),
        log_access=access_log,
        log_dictconfig=log_config(level, settings.log_format),
        workers_kill_timeout=15,
    ).serve()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop_serving(reason: str) -> None:
    # From the supervisor thread: shut the server down as on SIGTERM; serve then exits 1.
    os.kill(os.getpid(), signal.SIGTERM)


def _fresh_dir(path: Path) -> Path:
    # Multiprocess files of a previous run would be summed into this one's counters.
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
