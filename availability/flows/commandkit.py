"""What every flow's CLI commands do the same way: feed webhook files to an intake, run or
drain a worker, work exception ids, print JSON lines. The flows' `commands.py` modules
(orders, returns) parse their arguments and build their parts; this runs them."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, default=str, sort_keys=True))


async def feed_files(enqueue: Callable[[str, dict, dict], Awaitable[dict]], files: Sequence[str], *, topic: str,
                     webhook_id: str | None, shop: str | None, rejected: tuple[type[BaseException], ...]) -> int:
    """Hand each JSON file to the intake as one webhook; one JSON line per file; 1 if any
    was rejected. With several files the webhook id gets a per-file suffix."""
    failed = 0
    for i, name in enumerate(files):
        headers = {}
        if webhook_id:
            headers["X-Shopify-Webhook-Id"] = webhook_id if len(files) == 1 else f"{webhook_id}-{i}"
        if shop:
            headers["X-Shopify-Shop-Domain"] = shop
        try:
            payload = json.loads(Path(name).read_text())
            print_json({"file": name, **await enqueue(topic, payload, headers)})
        except (*rejected, ValueError, OSError) as exc:
            failed += 1
            print_json({"file": name, "outcome": "rejected", "reason": str(exc)})
    return 1 if failed else 0


async def run_worker(worker: Any, counts: Callable[[], Awaitable[dict]] | None = None, *, once: bool) -> int:
    """`--once`: drain, print the document counts (when given); else run until SIGINT/SIGTERM."""
    if once:
        await worker.drain(timeout=600)
        if counts is not None:
            print_json(await counts())
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)
    return 0


async def work_exceptions(ids: Sequence[int], act: Callable[[int], Awaitable[dict]], outcome: str,
                          key: str = "reference") -> int:
    """Retry or resolve exceptions by id; one JSON line each; 1 if any id is unknown."""
    missing = 0
    for exception_id in ids:
        try:
            row = await act(exception_id)
            print_json({"id": exception_id, key: row["reference"], "outcome": outcome})
        except KeyError:
            missing += 1
            print_json({"id": exception_id, "outcome": "not found"})
    return 1 if missing else 0


async def show_document(store: Any, key: str, what: str) -> int:
    """One document with its history as JSON; 1 when there is none."""
    import sys  # noqa: PLC0415

    doc = await store.get(key)
    if doc is None:
        print(f"no {what} {key}", file=sys.stderr)
        return 1
    print_json({"document": doc.as_dict(), "history": await store.history(key)})
    return 0


async def list_exceptions(store: Any, *, include_resolved: bool, reason: str | None) -> int:
    for row in await store.list_exceptions(status=None if include_resolved else "open", reason=reason):
        print_json(row)
    return 0


def add_exception_commands(sub, *, name: str, dest: str, help: str, retry_help: str,
                           handlers: tuple[Callable, Callable, Callable]) -> None:
    """A flow's `exceptions list|retry|resolve` subcommands (every flow's queue is worked
    the same way); `handlers` are the flow's (list, retry, resolve)."""
    list_handler, retry_handler, resolve_handler = handlers
    exc = sub.add_parser(name, help=help)
    xsub = exc.add_subparsers(dest=dest, metavar="EXCEPTIONS_COMMAND", required=True)
    p = xsub.add_parser("list", help="exceptions (JSON lines)")
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.add_argument("--reason")
    p.set_defaults(handler=list_handler)
    p = xsub.add_parser("retry", help=retry_help)
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.set_defaults(handler=retry_handler)
    p = xsub.add_parser("resolve", help="close the exception without posting (handled elsewhere)")
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.add_argument("--note", default="")
    p.set_defaults(handler=resolve_handler)
