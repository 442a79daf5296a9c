"""Every error the API answers with, as RFC 9457 `application/problem+json`, mapped in one place.

    {"type": "urn:availability:problem:insufficient-stock", "title": "Insufficient stock",
     "status": 409, "detail": "not enough stock for ...", "instance": "/v1/reservations",
     "short_lines": [...]}

- Domain errors (`AvailabilityError` subclasses) carry their own `status`, `slug`, `detail`
  and `extra`; extras become top-level members of the problem.
- Litestar's HTTP exceptions (unknown route, wrong method, body too large, body that does
  not fit the schema) get a slug from their status.
- Anything else is a bug: logged with its traceback, answered as a 500 problem without
  internals. Malformed input never gets here: decoding and validation raise 4xx first.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from availability.domain.errors import AvailabilityError

log = logging.getLogger("availability.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:availability:problem:"

_encoder = msgspec.json.Encoder()

#: slugs for errors raised by the framework rather than by us
_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-body",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}


class ApiError(AvailabilityError):
    """An error of the HTTP layer itself (auth, limits, input shape), with optional headers."""

    headers: dict[str, str] = {}

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(detail, **extra)
        if headers:
            self.headers = headers


class Unauthorized(ApiError):
    status = 401
    slug = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="availability"'}


class Forbidden(ApiError):
    status = 403
    slug = "forbidden"


class RateLimited(ApiError):
    status = 429
    slug = "rate-limited"


class InvalidInput(ApiError):
    """A request that parses but asks for something that cannot be answered (too many SKUs, bad SKU)."""

    status = 422
    slug = "invalid-input"


class MalformedBody(ApiError):
    status = 400
    slug = "malformed-body"


class NotReady(ApiError):
    status = 503
    slug = "not-ready"


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": _title(slug, status),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if extra:
        for key, value in extra.items():
            body.setdefault(key, value)
    return Response(content=_encoder.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _title(slug: str, status: int) -> str:
    if slug in _STATUS_SLUGS.values():
        try:
            return HTTPStatus(status).phrase
        except ValueError:
            pass
    return slug.replace("-", " ").capitalize()


def domain_error_handler(request: Request, exc: AvailabilityError) -> Response[bytes]:
    return problem_response(
        exc.status,
        exc.slug,
        exc.detail,
        instance=request.scope.get("path"),
        extra=_jsonable(exc.extra),
        headers=getattr(exc, "headers", None) or None,
    )


def http_error_handler(request: Request, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    detail = exc.detail or HTTPStatus(status).phrase
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException):
        # Litestar names the failing field(s). A value that parses but is not acceptable
        # (wrong type, out of bounds, unknown field) is 422; a body that is not JSON stays 400.
        errors = exc.extra if isinstance(exc.extra, list) else []
        messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict)]
        if messages:
            extra["errors"] = [_clean_error(e) for e in errors if isinstance(e, dict)]
            detail = "; ".join(m for m in messages if m) or detail
        if not _is_syntax(messages + [str(exc.detail)]):
            status = 422
    elif status == 413:
        detail = "request body too large"
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(
        status,
        _STATUS_SLUGS.get(status, "http-error"),
        str(detail),
        instance=request.scope.get("path"),
        extra=extra,
        headers=headers,
    )


def internal_error_handler(request: Request, exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.scope.get("path"), exc_info=exc)
    return problem_response(
        500,
        "internal-error",
        "the server failed to answer; the error has been logged",
        instance=request.scope.get("path"),
    )


def unavailable_handler(request: Request, exc: Exception) -> Response[bytes]:
    log.warning("Redis unavailable on %s %s: %s", request.method, request.scope.get("path"), exc)
    return problem_response(
        503,
        "unavailable",
        "the stock ledger (Redis) is unavailable; retry shortly",
        instance=request.scope.get("path"),
        headers={"Retry-After": "1"},
    )


EXCEPTION_HANDLERS = {
    AvailabilityError: domain_error_handler,
    HTTPException: http_error_handler,
    ConnectionError: unavailable_handler,
    RedisConnectionError: unavailable_handler,
    RedisTimeoutError: unavailable_handler,
    Exception: internal_error_handler,
}


def _is_syntax(messages: list[str]) -> bool:
    return any("malformed" in m.lower() or "truncated" in m.lower() for m in messages)


def _clean_error(error: dict) -> dict:
    return {k: v for k, v in error.items() if k in ("message", "key", "source") and v is not None}


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    return msgspec.to_builtins(extra, str_keys=True, enc_hook=str)


def problem_responses(*statuses: int) -> dict[int, Any]:
    """OpenAPI `responses` entries documenting problem+json answers for these statuses (and
    400/422, which any route answers to input it cannot take)."""
    from litestar.openapi.datastructures import ResponseSpec  # noqa: PLC0415

    from availability.api.schemas import Problem  # noqa: PLC0415

    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description=_describe(status),
            generate_examples=False,
        )
        for status in sorted({400, 422, *statuses})
    }


def _describe(status: int) -> str:
    try:
        return f"{HTTPStatus(status).phrase} (application/problem+json)"
    except ValueError:
        return "problem (application/problem+json)"
