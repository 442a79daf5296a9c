"""Log output for every entry point: text (default) or JSON lines, one setting
(`AVAILABILITY_LOG_FORMAT=json`).

A JSON line carries time (UTC, ISO 8601), level, logger, message, the correlation id of
the unit of work being done (always present, null outside one; who sets it:
availability/correlation.py) and the exception when there is one. The same logging
configuration is handed to uvicorn (`log_config`), so its own loggers and every worker
process write the same format.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from availability.correlation import current_correlation_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: attributes every LogRecord has; anything else was passed in `extra=` and is kept (but
#: uvicorn's `color_message`, the message again with terminal colour codes)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}


def correlation_id() -> str | None:
    return current_correlation_id.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": correlation_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def log_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one stderr handler on the root logger, uvicorn's
    loggers propagating to it (instead of uvicorn's own text handlers)."""
    formatter = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {
            name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger, unless something already did (like logging.basicConfig:
    a test runner's capture handlers, an embedding application)."""
    if logging.getLogger().handlers:
        return
    logging.config.dictConfig(log_config(level, fmt))
