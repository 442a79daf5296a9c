"""Many calls of one Lua script in one pipeline, on one Redis or a Redis Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError


async def run_script_calls(redis: Any, script: Any, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Many (keys, args) calls of one registered script in one pipeline; replies in order.

    Not `await script(keys, args, client=pipe)`: awaiting a Redis Cluster pipeline
    re-initialises it and drops what was queued, so on a cluster those calls never ran.
    A server that lost the script (restart, failover to a replica) gets it loaded (SCRIPT
    LOAD reaches every primary of a cluster) and the calls go once more: every caller's
    script is safe to run twice."""
    if not calls:
        return []
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
        if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
            await redis.script_load(script.script)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
    raise AssertionError("unreachable")
