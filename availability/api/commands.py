"""`availability serve`: the HTTP API and the background services, under uvicorn.

    availability serve [--host H] [--port P] [--workers N] [--access-log]

Host, port and workers default to AVAILABILITY_HOST / _PORT / _WORKERS. Each worker runs
the API and the background services (expiry sweeper, rules-dirty marker, and the
consumer and publisher when installed); the services coordinate through Redis.

With no AVAILABILITY_REDIS_URL the embedded server is started here, in the parent, which
owns the data directory (var/redis) for as long as it runs: the workers, and any CLI
command run beside it on the same AVAILABILITY_DATA_DIR, connect to that one server. If
the server dies, it is restarted on the same data within seconds; if it cannot be, serve
exits non-zero (for a supervisor to restart it) and /health/ready says which. With more than one worker Prometheus multiprocess mode is
switched on (a fresh directory under data_dir) so /metrics aggregates every worker.
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
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn  # noqa: PLC0415

    host = args.host or settings.host
    port = args.port or settings.port
    workers = max(1, args.workers or settings.workers)
    embedded = None
    if not settings.redis_url:
        embedded = args.root.start_embedded_redis(settings)
        embedded.supervise(on_failure=_stop_serving)
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_fresh_dir(Path(settings.data_dir) / "prometheus-multiproc"))
    log.info("serving the availability API on http://%s:%s with %d worker(s); docs at /schema", host, port, workers)
    # uvicorn re-raises SIGTERM once it has shut down; as SystemExit it lets `finally` stop Redis.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            ASGI_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            lifespan="on",
            access_log=args.access_log,
            log_level=logging.getLevelName(logging.getLogger().level).lower() if logging.getLogger().level else "info",
            timeout_graceful_shutdown=15,
            log_config=log_config(logging.getLevelName(logging.getLogger().level or logging.INFO), settings.log_format),
        )
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        if embedded is not None:
            embedded.stop()
    if embedded is not None and embedded.failed.is_set():
        log.critical("serve stops: its embedded server could not be kept running")
        return 1
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop_serving(reason: str) -> None:
    # From the supervisor thread: shut uvicorn down as on SIGTERM; serve then exits 1.
    os.kill(os.getpid(), signal.SIGTERM)


def _fresh_dir(path: Path) -> Path:
    # Multiprocess files of a previous run would be summed into this one's counters.
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
