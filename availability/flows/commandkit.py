"""What every flow's CLI commands do the same way: feed webhook files to an intake, run or
drain a worker, work exception ids, print JSON lines. The flows' `commands.py` modules
parse their arguments and build their parts; this runs them."""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
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


async def show_document(store: Any, key: str, what: str) -> int:
    """One document with its history as JSON; 1 when there is none."""
    import sys  # noqa: PLC0415

    doc = await store.get(key)
    if doc is None:
        print(f"no {what} {key}", file=sys.stderr)
        return 1
    print_json({"document": doc.as_dict(), "history": await store.history(key)})
    return 0


def add_exception_commands(sub, *, name: str, dest: str, help: str, retry_help: str,
                           open_parts: Callable[[Any, Any], AbstractAsyncContextManager[dict]], actions: str,
                           key: str = "reference") -> None:
    """A flow's `exceptions list|retry|resolve` subcommands: every flow's queue is worked the
    same way, so the arguments and the handlers are these. `open_parts(args, settings)`
    opens the flow's parts (a dict with its `store` and `queue`; no ERP needed); `actions`
    names the flow's module with `retry_exception(store, queue, id, by=)` and
    `resolve_exception(store, id, by=, note=)` (imported when a command runs, so the CLI
    starts without loading every flow); `key` is the row's document field printed beside
    the id."""

    async def retry(parts: dict, exception_id: int, by: str) -> dict:
        return await importlib.import_module(actions).retry_exception(parts["store"], parts["queue"], exception_id,
                                                                      by=by)

    async def resolve(parts: dict, exception_id: int, by: str, note: str) -> dict:
        return await importlib.import_module(actions).resolve_exception(parts["store"], exception_id, by=by, note=note)

    exc = sub.add_parser(name, help=help)
    xsub = exc.add_subparsers(dest=dest, metavar="EXCEPTIONS_COMMAND", required=True)
    p = xsub.add_parser("list", help="exceptions (JSON lines)")
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.add_argument("--reason")
    p.set_defaults(handler=_command(open_parts, lambda parts, args: _list(parts["store"], args)))
    p = xsub.add_parser("retry", help=retry_help)
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.set_defaults(handler=_command(open_parts, lambda parts, args: _work(
        args.ids, lambda i: retry(parts, i, args.by), "retrying", key)))
    p = xsub.add_parser("resolve", help="close the exception without posting (handled elsewhere)")
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.add_argument("--note", default="")
    p.set_defaults(handler=_command(open_parts, lambda parts, args: _work(
        args.ids, lambda i: resolve(parts, i, args.by, args.note), "resolved", key)))


def _command(open_parts: Callable, act: Callable[[dict, Any], Awaitable[int]]) -> Callable[[Any, Any], int]:
    def handler(args, settings) -> int:
        async def run() -> int:
            async with open_parts(args, settings) as parts:
                return await act(parts, args)

        return asyncio.run(run())

    return handler


async def _list(store: Any, args) -> int:
    for row in await store.list_exceptions(status=None if args.all else "open", reason=args.reason):
        print_json(row)
    return 0


async def _work(ids: Sequence[int], act: Callable[[int], Awaitable[dict]], outcome: str, key: str) -> int:
    """Retry or resolve exceptions by id; one JSON line each; 1 if any id is unknown."""
    missing = 0
    for exception_id in ids:
        try:
            row = await act(exception_id)
            print_json({"id": exception_id, key: row[key], "outcome": outcome})
        except KeyError:
            missing += 1
            print_json({"id": exception_id, "outcome": "not found"})
    return 1 if missing else 0
