"""One log line per failing dependency per interval, not one per request or poll.

When Redis goes away every request, consumer poll and sweeper tick fails the same way; a
traceback each (10 KB a second, seen) buries the one line that says what happened. This
handler filter lets the first record of each kind through, then one per `interval`
seconds, and the one that passes says how many like it were held back. A kind is the
logger, the message template and the exception type, so different failures still show.
"""

from __future__ import annotations

import logging
import threading
import time

DEFAULT_INTERVAL_SECONDS = 10.0


class RepeatedFailureFilter(logging.Filter):
    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        #: kind -> (monotonic time it last passed, records held back since)
        self._seen: dict[tuple, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.exc_info or record.exc_info[0] is None:
            return True
        kind = (record.name, str(record.msg), record.exc_info[0])
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(kind, (None, 0))
            if last is not None and now - last < self.interval:
                self._seen[kind] = (last, held + 1)
                return False
            self._seen[kind] = (now, 0)
            if len(self._seen) > 10_000:  # bounded however many kinds appear
                self._seen.clear()
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f} s held back]"
        return True


def install(interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
    """Add the filter to every handler of the root logger (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatedFailureFilter) for f in handler.filters):
            handler.addFilter(RepeatedFailureFilter(interval))
