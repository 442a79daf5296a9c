"""API keys with scopes, a per-key rate limit, and the gate that applies both to each route.

Keys come from `Settings.api_keys` (a JSON list of {"key", "scopes", "name"?}), from the
rule store's `api_keys` table (`ApiKeyStore.add_api_key`; re-read every
`api_keys_refresh_seconds`), and, when neither has any key and reads are not public, from
a development admin key that `ensure_dev_admin_key` keeps in `data_dir/dev-admin-key`.

A presented key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) is hashed with
SHA-256 and compared with every known hash in constant time (`hmac.compare_digest`, no
early exit), so neither a key nor its hash leaks through timing. The lookup fast path
(`KeyRing.principal_of_key`) looks the digest up in a dict instead, which costs the same
whatever the number of keys: the timing of a lookup by SHA-256 digest says nothing about
the key, since a caller cannot choose digest bits.

Scopes: read, reserve, events, rules, flows (work the flows' exception queue), admin (admin implies every other). Each route names
the scope it needs in its `opt={"scope": ...}`; routes without one (health, metrics, the
OpenAPI docs) are open. With `public_read` the read scope needs no key at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from litestar.types import ASGIApp, Receive, Scope, Send

from availability.api.problems import Forbidden, RateLimited, Unauthorized

if TYPE_CHECKING:
    from availability.api.ratelimit import SharedRateLimiter
    from availability.config import Settings

log = logging.getLogger("availability.api")

SCOPES = ("read", "reserve", "events", "rules", "flows", "admin")  # flows: work the exception queue
DEV_KEY_FILE = "dev-admin-key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name (recorded as the actor of rule changes) and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal("anonymous", frozenset({"read"}))
#: scope["state"] key under which in-process callers (the console) pass an authenticated Principal
INTERNAL_PRINCIPAL = "internal_principal"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_settings_keys(raw: str | None) -> list[tuple[bytes, Principal]]:
    """`Settings.api_keys` -> [(sha256 digest, principal)]. Raises ValueError naming the problem."""
    if not raw or not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"AVAILABILITY_API_KEYS is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ValueError('AVAILABILITY_API_KEYS must be a JSON list of {"key": ..., "scopes": [...]}')
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise ValueError(f"AVAILABILITY_API_KEYS[{index}] needs a non-empty string `key`")
        scopes = item.get("scopes", [])
        if isinstance(scopes, str):
            scopes = [scopes]
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ValueError(
                f"AVAILABILITY_API_KEYS[{index}]: unknown scope(s) {unknown}; scopes are {', '.join(SCOPES)}"
            )
        digest = _digest(item["key"])
        name = item.get("name") or f"key-{digest.hex()[:8]}"
        out.append((digest, Principal(str(name), frozenset(scopes))))
    return out


def ensure_dev_admin_key(data_dir: str | Path) -> str:
    """The development admin key in data_dir/dev-admin-key, created (0600) on first use."""
    path = Path(data_dir) / DEV_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    key = "dev-" + secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


class KeyRing:
    """Every key the API accepts, as SHA-256 digests."""

    def __init__(self, static: Iterable[tuple[bytes, Principal]] = ()) -> None:
        self._static = list(static)
        self._stored: list[tuple[bytes, Principal]] = []
        self._all = list(self._static)
        self._index()
        self.dev_key_path: Path | None = None

    def _index(self) -> None:
        # the first of equal digests wins, as in authenticate_digest
        by_digest: dict[bytes, Principal] = {}
        for digest, principal in self._all:
            by_digest.setdefault(digest, principal)
        self._by_digest = by_digest

    @property
    def configured(self) -> bool:
        return bool(self._all)

    def add(self, key: str, principal: Principal) -> None:
        self._static.append((_digest(key), principal))
        self._all = self._static + self._stored
        self._index()

    def set_stored(self, rows: Iterable[tuple[str, str, list[str]]]) -> None:
        """Replace the keys that come from the rule store: (hex sha256, name, scopes)."""
        stored = []
        for key_hash, name, scopes in rows:
            try:
                stored.append((bytes.fromhex(key_hash), Principal(name, frozenset(scopes))))
            except ValueError:
                log.warning("ignoring stored API key %r: its hash is not hex SHA-256", name)
        self._stored = stored
        self._all = self._static + self._stored
        self._index()

    async def refresh(self, store: Any) -> None:
        self.set_stored(await store.keys.api_keys())

    def authenticate(self, presented: str) -> Principal | None:
        return self.authenticate_digest(_digest(presented))

    def principal_of_key(self, presented: str) -> Principal | None:
        """`authenticate`'s answer by one dict lookup on the digest (the lookup fast path's)."""
        return self._by_digest.get(_digest(presented))

    def authenticate_digest(self, digest: bytes) -> Principal | None:
        """The principal of a key known by its SHA-256 (the console's session keeps only that)."""
        found = None
        for known, principal in self._all:
            # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(known, digest) and found is None:
                found = principal
        return found


class RateLimiter:
    """Token bucket per caller, in process memory: `rate` requests per second, bursts of `rate`.

    Per process: with N workers a caller gets up to N x rate in total. The default limit is
    shared through Redis (availability/api/ratelimit.py, `rate_limit_shared`), which falls
    back to this one while Redis cannot be reached.
    """

    __slots__ = ("rate", "burst", "_buckets", "_max_buckets")

    def __init__(self, rate: float, burst: float | None = None, *, max_buckets: int = 100_000) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._buckets: dict[str, list[float]] = {}
        self._max_buckets = max_buckets

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def admit(self, who: str) -> float:
        """The gate's call (the shared limiter's is a coroutine): 0.0 if allowed, else the wait."""
        return self.take(who)

    def take(self, who: str, now: float | None = None) -> float:
        """0.0 if allowed, else the seconds until one request would be."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._prune(now)
            self._buckets[who] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        # Buckets that have refilled completely carry no state worth keeping.
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_buckets:
            self._buckets.clear()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class Gate:
    """Per-route ASGI middleware: authenticate, check the route's scope, take a rate-limit token.

    Plain ASGI on purpose: it runs on every hot-path request, so no Request object, no DI.
    The caller's `Principal` is left in `scope["state"]["principal"]` for the route.
    """

    def __init__(self, app: ASGIApp, keys: KeyRing, limiter: "RateLimiter | SharedRateLimiter", public_read: bool) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.public_read = public_read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        required = scope["route_handler"].opt.get("scope")  # type: ignore[typeddict-item]
        if required is None:
            await self.app(scope, receive, send)
            return
        internal = scope["state"].get(INTERNAL_PRINCIPAL)
        if internal is not None:
            # An in-process call from the console for a logged-in planner (console/dispatch.py).
            # Only server code can put this in a scope's state: a client controls headers, not state.
            if not internal.allows(required):
                raise Forbidden(f"{internal.name!r} lacks the {required!r} scope", required_scope=required)
            scope["state"]["principal"] = internal
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if key is None:
            if not (self.public_read and required == "read"):
                raise Unauthorized("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
            principal = ANONYMOUS
            client = scope.get("client")
            bucket = f"ip:{client[0] if client else '?'}"
        else:
            found = self.keys.authenticate(key)
            if found is None:
                raise Unauthorized("unknown or revoked API key")
            principal = found
            bucket = f"key:{principal.name}"
            if not principal.allows(required):
                raise Forbidden(
                    f"API key {principal.name!r} lacks the {required!r} scope",
                    required_scope=required,
                    scopes=sorted(principal.scopes),
                )
        if self.limiter.enabled:
            wait = await self.limiter.admit(bucket)
            if wait:
                retry = max(1, math.ceil(wait))
                raise RateLimited(
                    f"rate limit of {self.limiter.rate:g} requests per second exceeded",
                    headers={"Retry-After": str(retry)},
                    retry_after_seconds=retry,
                )
        scope["state"]["principal"] = principal
        await self.app(scope, receive, send)


def principal_of(scope: Scope) -> Principal:
    return scope.get("state", {}).get("principal", ANONYMOUS)


def keyring_from_settings(settings: "Settings") -> KeyRing:
    return KeyRing(parse_settings_keys(settings.api_keys))
