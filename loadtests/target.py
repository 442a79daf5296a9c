"""Where a benchmark runs: the Redis at AVAILABILITY_REDIS_URL (writing only under its own
key prefixes), else an embedded server of its own in a temporary directory, which is also
the benchmark's scratch folder."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from availability.embedded_redis import EmbeddedRedis


@contextmanager
def bench_redis(prefix: str) -> Iterator[tuple[str, str]]:
    """Yields (redis_url, scratch_dir); stops the embedded server and removes the folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        redis_url = os.environ.get("AVAILABILITY_REDIS_URL")
        server = None if redis_url else EmbeddedRedis(scratch, appendonly=False).start()
        try:
            yield redis_url or server.url, scratch
        finally:
            if server:
                server.stop()
