"""`availability` command line. Thin: parse arguments, build settings, call one function.

Each area registers its own sub-commands (serve, consume, publish, dlq, rules, sim, ...)
from an `availability/<area>/commands.py` module with `register(subparsers)`; this file
only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from availability.config import Settings

COMMAND_MODULES = (
    "availability.ledger.commands",
    "availability.rules.commands",
    "availability.ingest.commands",
    "availability.api.commands",
    "availability.flows.commands",
    "availability.flows.orders.commands",
    "availability.demo.commands",
    "adapters.shopify.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability",
        description="Real-time inventory availability: stock ledger, ATS rules, reservation API and Shopify push.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
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
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return int(args.handler(args, Settings()) or 0)


if __name__ == "__main__":
    sys.exit(main())
