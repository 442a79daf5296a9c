"""`availability` command line. Thin: parse arguments, build settings, call one function.

Each area registers its own sub-commands (serve, consume, publish, dlq, rules, sim, ...)
from an `availability/<area>/commands.py` module with `register(subparsers)`; this file
only assembles them.
"""

from __future__ import annotations

import argparse
import logging
import importlib
import sys

from availability import logs, logthrottle, progress
from availability.config import Settings
from availability.correlation import current_correlation_id, new_correlation_id
from availability.embedded_redis import EmbeddedRedisError

COMMAND_MODULES = (
    "availability.ledger.commands",
    "availability.rules.commands",
    "availability.ingest.commands",
    "availability.api.commands",
    "availability.flows.inventory.commands",
    "availability.flows.orders.commands",
    "availability.flows.returns.commands",  # adds `flows returns` to the order flow's `flows`
    "availability.demo.commands",
    "availability.migrations.commands",
    "adapters.shopify.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability",
        description="Real-time inventory availability: stock ledger, ATS rules, reservation API and Shopify push.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    # Commands take what they need (open_runtime, the embedded server) from the
    # composition root handed to them here, never by importing bootstrap from below.
    from availability.bootstrap import CommandRoot  # noqa: PLC0415

    parser.set_defaults(root=CommandRoot())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name.startswith(exc.name or '\0'):
                continue  # that area has no commands yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ours = not logging.getLogger().handlers  # else a host (pytest) owns logging: leave its handlers be
    settings = Settings()
    logs.configure(args.log_level, settings.log_format)
    progress.configure(settings.progress_every_s)
    if ours:
        logthrottle.install()
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    # one correlation id per command run, on its every log line (a flow's push sets its own)
    token = current_correlation_id.set(new_correlation_id())
    try:
        return int(args.handler(args, settings) or 0)
    except EmbeddedRedisError as exc:
        # e.g. the data dir's owner (a running `serve`) does not answer: say so, apply nothing
        print(f"availability: {exc}", file=sys.stderr)
        return 1
    finally:
        current_correlation_id.reset(token)


if __name__ == "__main__":
    sys.exit(main())
