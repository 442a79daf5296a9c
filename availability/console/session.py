"""Who is using the console: a login that takes an API key, a server-side session, CSRF tokens.

- The login form takes an API key (the same keys as the API: `read` views, `rules`
  changes, `admin` everything). The session keeps the key's SHA-256, never the key, in a
  server-side store (Redis, beside the ledger, so any API replica can serve the next page);
  the browser holds only a random session id in a `Secure; HttpOnly; SameSite=Strict`
  cookie scoped to /console, which page scripts cannot read.
- The session id is renewed at login (`RenewingSessions`): whatever id the browser
  brought (an attacker may have planted one with a cookie of their own) is dropped with
  its data, and the logged-in session gets a fresh random id that was never in anyone
  else's hands (session fixation). An id the store does not hold is never adopted, and
  logout deletes the session server-side and expires the cookie.
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
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

from availability.api.security import KeyRing, Principal, RateLimiter
from availability.domain.errors import AvailabilityError
from availability.rules.keys_store import hash_api_key

SESSION_STORE = "console-sessions"
COOKIE = "av_console"
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "_csrf"
CSRF_HEADER = "x-csrf-token"

#: scope keys of the session backend below: "renew at this response", the id it renewed
#: to, and the session as it was loaded (to skip writing back an unchanged one)
_RENEW = "availability.console.renew_session"
_RENEWED_ID = "availability.console.renewed_session_id"
_LOADED = "availability.console.loaded_session"


class LoginRequired(AvailabilityError):
    status = 401
    slug = "login-required"


class ConsoleForbidden(AvailabilityError):
    status = 403
    slug = "forbidden"


class RenewingSessions(ServerSideSessionBackend):
    """Litestar's server-side sessions, with a new session id at login.

    Litestar keys the stored session by whatever id the request's cookie carries, and
    keeps using it when the data changes: a login would authenticate an id chosen before
    it, by anyone who could set a cookie in the planner's browser. Here a response whose
    handler called `renew_session` deletes the old id's data and stores the session under
    a new random id. Two more changes of behaviour, both to keep the store honest: an
    anonymous visit with nothing in its session stores nothing (no id is handed out before
    login), and a session that did not change is not written back (its expiry is renewed
    on read, `renew_on_access`), which saves a Redis write per page.
    """

    def get_session_id(self, connection: ASGIConnection) -> str:
        renewed = connection.scope.get(_RENEWED_ID)  # type: ignore[call-overload]
        return renewed if isinstance(renewed, str) else super().get_session_id(connection)

    async def load_from_connection(self, connection: ASGIConnection) -> dict[str, Any]:
        if session_id := connection.cookies.get(self.config.key):
            store = self.config.get_store_from_app(connection.scope["app"])
            data = await self.get(session_id, store=store)
            if data is not None:
                connection.scope[_LOADED] = data  # type: ignore[literal-required]
                return self.deserialize_data(data)
        return {}

    async def store_in_message(self, scope_session: ScopeSession, message: Message, connection: ASGIConnection) -> None:
        scope = connection.scope
        if scope.get(_RENEW) and scope_session is not Empty:  # type: ignore[call-overload]
            old = connection.cookies.get(self.config.key)
            if old:
                await self.delete(old, store=self.config.get_store_from_app(scope["app"]))
            scope[_RENEWED_ID] = self.generate_session_id()  # type: ignore[literal-required]
        elif scope_session is not Empty:
            if not scope_session and _LOADED not in scope:
                return  # anonymous and empty: nothing to keep, no id to hand out
            if _LOADED in scope and self.serialize_data(scope_session, scope) == scope[_LOADED]:  # type: ignore[literal-required]
                # unchanged: only the cookie goes out again (its Max-Age follows the renewed expiry)
                await self._send_cookie(message, connection)
                return
        await super().store_in_message(scope_session, message, connection)

    async def _send_cookie(self, message: Message, connection: ASGIConnection) -> None:
        params = dict(extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys()))
        MutableScopeHeaders.from_message(message).add(
            "Set-Cookie", Cookie(value=self.get_session_id(connection), key=self.config.key, **params).to_header(header="")
        )


class ConsoleSessionConfig(ServerSideSessionConfig):
    _backend_class = RenewingSessions


def renew_session(request: Request) -> None:
    """Store this request's session under a new id when the response goes out (login)."""
    request.scope[_RENEW] = True  # type: ignore[literal-required]


def session_config() -> ServerSideSessionConfig:
    return ConsoleSessionConfig(
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
        renew_session(request)
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
