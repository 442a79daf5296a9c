"""Who is using the console: a login that takes an API key, a server-side session, CSRF tokens.

- The login form takes an API key (the same keys as the API: `read` views, `rules`
  changes, `admin` everything). The session keeps the key's SHA-256, never the key, in a
  server-side store (Redis, beside the ledger, so any API replica can serve the next page);
  the browser holds only a random session id in a `Secure; HttpOnly; SameSite=Strict`
  cookie scoped to /console, which page scripts cannot read.
- Every page re-checks that digest against the API's `KeyRing`, so revoking a key ends
  its console sessions at the next click, as it does for the API.
- Every form and htmx request carries the session's CSRF token (a hidden field, or the
  `X-CSRF-Token` header htmx sends from `<body hx-headers>`); a POST without the right
  one is refused with 403 before anything is read or written. SameSite=Strict already
  keeps other sites' requests cookie-less; the token also covers same-site attackers.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Request
from litestar.middleware.session.server_side import ServerSideSessionConfig

from availability.api.security import KeyRing, Principal, RateLimiter
from availability.domain.errors import AvailabilityError
from availability.rules.keys_store import hash_api_key

SESSION_STORE = "console-sessions"
COOKIE = "av_console"
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(AvailabilityError):
    status = 401
    slug = "login-required"


class ConsoleForbidden(AvailabilityError):
    status = 403
    slug = "forbidden"


def session_config() -> ServerSideSessionConfig:
    return ServerSideSessionConfig(
        key=COOKIE,
        store=SESSION_STORE,
        max_age=SESSION_SECONDS,
        path="/console",
        secure=True,
        httponly=True,
        samesite="strict",
        renew_on_access=True,
    )


class Sessions:
    """Log in and out, and find the principal of a request's session."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        # Login attempts per client address: an online key-guessing loop gets 1 try/s after a burst.
        self.attempts = RateLimiter(1.0, burst=10)

    def login(self, request: Request, api_key: str) -> Principal | None:
        principal = self.keys.authenticate(api_key) if api_key else None
        if principal is None:
            return None
        digest = hash_api_key(api_key)
        request.set_session({"key": digest, "csrf": secrets.token_urlsafe(32), "name": principal.name, "draft": []})
        return principal

    def principal(self, request: Request) -> Principal:
        data = _session(request)
        digest = data.get("key")
        if not isinstance(digest, str):
            raise LoginRequired("log in with an API key")
        try:
            principal = self.keys.authenticate_digest(bytes.fromhex(digest))
        except ValueError:
            principal = None
        if principal is None:
            request.clear_session()
            raise LoginRequired("your API key is no longer valid: log in again")
        return principal

    def require(self, request: Request, scope: str) -> Principal:
        principal = self.principal(request)
        if not principal.allows(scope):
            raise ConsoleForbidden(
                f"API key {principal.name!r} lacks the {scope!r} scope this needs "
                f"(it has {', '.join(sorted(principal.scopes)) or 'none'})"
            )
        return principal

    async def check_csrf(self, request: Request, form: Any | None = None) -> None:
        """403 unless the request carries this session's CSRF token."""
        expected = _session(request).get("csrf")
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and form is not None:
            presented = form.get(CSRF_FIELD)
        if not isinstance(expected, str) or not isinstance(presented, str) or not hmac.compare_digest(
            expected.encode(), presented.encode()
        ):
            raise ConsoleForbidden("the form's CSRF token is missing or wrong: reload the page and try again")


def csrf_token(request: Request) -> str:
    token = _session(request).get("csrf")
    return token if isinstance(token, str) else ""


def draft_of(request: Request) -> list[dict[str, Any]]:
    draft = _session(request).get("draft")
    return list(draft) if isinstance(draft, list) else []


def save_draft(request: Request, draft: list[dict[str, Any]]) -> None:
    data = dict(_session(request))
    data["draft"] = draft
    request.set_session(data)


def _session(request: Request) -> dict[str, Any]:
    data = request.session
    return data if isinstance(data, dict) else {}
