"""Small helpers shared by the simulator's modules."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gid(type_name: str, n: int) -> str:
    return f"gid://shopify/{type_name}/{n}"


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def user_error(code: str, field_path: list[str] | None, message: str) -> dict[str, Any]:
    return {"code": code, "field": field_path, "message": message}
