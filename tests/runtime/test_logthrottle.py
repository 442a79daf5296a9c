"""A failing dependency is logged once per interval per kind, with the count held back."""

from __future__ import annotations

import logging
import time

from availability.logthrottle import RepeatedFailureFilter


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _fail(log: logging.Logger, exc: Exception, msg: str = "poll failed on %s") -> None:
    try:
        raise exc
    except Exception:
        log.exception(msg, "p0")


def test_repeats_are_held_back_and_counted_and_other_kinds_still_show():
    handler = _Collect()
    handler.addFilter(RepeatedFailureFilter(interval=0.2))
    log = logging.getLogger("test.logthrottle")
    log.propagate = False
    log.addHandler(handler)
    try:
        for _ in range(100):
            _fail(log, ConnectionError("refused"))
        _fail(log, ValueError("bad"))  # another kind: shown at once
        log.warning("no exception: never held back")
        log.warning("no exception: never held back")
        assert handler.lines == ["poll failed on p0", "poll failed on p0",
                                 "no exception: never held back", "no exception: never held back"]
        time.sleep(0.25)
        _fail(log, ConnectionError("refused"))
        assert handler.lines[-1].startswith("poll failed on p0 [99 more like this in the last")
    finally:
        log.removeHandler(handler)
