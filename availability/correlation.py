"""The correlation id of the unit of work a task is doing, for every log line
(availability/logs.py reads it): an HTTP request (api/correlation.py), a consumer batch
(ingest/consumer.py, or the events' own id: ingest/pipeline.py), a Shopify push (flows),
else the CLI command run (cli.py). A contextvar: free to read, set once per unit of work."""

from __future__ import annotations

import contextvars
import os
import re

current_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "availability_correlation_id", default=None
)

#: what a caller may hand us as an id: short, printable, no spaces or quotes (it goes into
#: log lines and a response header verbatim)
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_correlation_id() -> str:
    # 32 random hex digits, as uuid4().hex gave, for a third of its cost (every lookup makes one)
    return os.urandom(16).hex()


def sane(value: str | bytes | None) -> str | None:
    """`value` when it is fit to log and echo, else None (the caller makes a new one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if _SANE.fullmatch(value) else None
