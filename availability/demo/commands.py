"""`availability demo`: the whole product on one machine with seeded data and traffic."""

from __future__ import annotations

import asyncio

from availability.config import Settings


def register(sub) -> None:
    p = sub.add_parser("demo", help="run everything (embedded Redis, API, consumer, publisher, Shopify simulator) "
                                    "over a seeded catalogue with synthetic traffic")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--skus", type=int, default=10_000, help="catalogue size (20 locations each; default 10,000)")
    p.add_argument("--rate", type=float, default=20.0, help="synthetic requests per second (default 20)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--plan", default="plus", help="Shopify plan the simulator enforces (default plus: 1,000 points/s)")
    p.set_defaults(handler=run)


def run(args, settings: Settings) -> int:
    from availability.demo.run import run_demo

    try:
        return asyncio.run(run_demo(settings, host=args.host, port=args.port, skus=args.skus, rate=args.rate,
                                    duration=args.duration, plan=args.plan))
    except KeyboardInterrupt:
        return 0
