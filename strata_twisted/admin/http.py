"""
JSON in and out for the admin API: request bodies, answers, errors, and paging cursors.

Errors are always ``{"error": {"code": ..., "message": ...}}`` (plus ``"field"`` when one input
field is at fault), with the HTTP status that says what went wrong: 400 bad input, 401 missing or
refused credentials (an expired key, a key used from an address it is not allowed from, a scope
too small), 403 a browser request without its CSRF token or from another origin, 404 what does
not exist or the caller may not see, 409 a name already taken.  A failure of ours is 503 with a
message that names no internals; nothing a client sends gives a 500.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Final, cast

from twisted.web.http import Request as HTTPRequest
from twisted.web.iweb import IRequest

from strata_twisted.core.admin.auth import SecondFactorRequired, Unauthorized
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.admin.identity import InsufficientScope
from strata_twisted.errors import (
    AlreadyExists,
    DomainExists,
    InvalidDomainName,
    NoSuchDomain,
    NoSuchEntry,
    NotFound,
    QueueStateError,
    StorageError,
    StrataError,
)

# Bodies larger than this are refused before they are parsed (a passwd-file upload has its own,
# larger limit).
MAX_JSON_BODY: Final = 1024 * 1024
JSON_TYPE: Final = b"application/json"
# The browser session's cookie: one login serves the panel and the API.
SESSION_COOKIE: Final = b"strata_session"


class ApiError(Exception):
    """An answer other than success: the status, a stable ``code`` and a sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}


def bad_input(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "invalid_input", message, field)


def as_api_error(error: BaseException) -> ApiError:
    """The answer for an error an operation raised."""
    if isinstance(error, ApiError):
        return error
    field = getattr(error, "field", None)
    if isinstance(error, InsufficientScope):
        # #13's contract: a key whose scope does not allow the operation is refused with 401.
        return ApiError(401, "insufficient_scope", str(error))
    if isinstance(error, NotFound | NoSuchDomain | NoSuchEntry):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, AlreadyExists | DomainExists):
        return ApiError(409, "conflict", str(error))
    if isinstance(error, InvalidDomainName):
        return ApiError(400, "invalid_input", str(error), field or "name")
    if isinstance(error, QueueStateError):
        return ApiError(409, "wrong_state", str(error))
    if isinstance(error, StorageError):
        return ApiError(503, "unavailable", "storage is unavailable; try again")
    if isinstance(error, SecondFactorRequired):
        return ApiError(401, "second_factor_required", str(error))
    if isinstance(error, Unauthorized):
        return ApiError(401, "unauthorized", str(error))
    if isinstance(error, Conflict):
        return ApiError(409, "conflict", str(error), field if isinstance(field, str) else None)
    if isinstance(error, InvalidInput):
        return ApiError(400, "invalid_input", error.message, error.field, error.details)
    if isinstance(error, StrataError) and isinstance(field, str):
        return ApiError(400, "invalid_input", str(error), field)
    if isinstance(error, StrataError | ValueError):
        return ApiError(400, "invalid_input", str(error))
    return ApiError(503, "unavailable", "the operation failed; try again")


def client_ip(request: IRequest) -> str:
    """The connecting client's address (no proxy header is trusted)."""
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else ""


def send_json(request: IRequest, value: object, status: int = 200) -> bytes:
    """Set the status and headers, and return the body to write."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def read_body(request: IRequest, limit: int) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    data: bytes = content.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"the request body is larger than {limit} bytes")
    return data


def read_json(request: IRequest) -> dict[str, Any]:
    """The request's JSON object body; 400 for anything else (415 when it is not JSON)."""
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    data = read_body(request, MAX_JSON_BODY)
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise bad_input("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_input("the body must be a JSON object")
    return value


def only_fields(body: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    """400 naming the first field the resource does not have (a typo must not be ignored)."""
    for key in body:
        if key not in allowed:
            raise bad_input(f"unknown field {key!r}", key)


def string_field(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise bad_input(f"{key} is required", key)
        return None
    if not isinstance(value, str):
        raise bad_input(f"{key} must be a string", key)
    return value


def int_field(body: dict[str, Any], key: str, minimum: int, maximum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise bad_input(f"{key} must be a whole number from {minimum} to {maximum}", key)
    return value


def number_field(body: dict[str, Any], key: str, minimum: float, maximum: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_input(f"{key} must be a number", key)
    if not minimum <= value <= maximum:
        raise bad_input(f"{key} must be from {minimum:g} to {maximum:g}", key)
    return float(value)


def bool_field(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_input(f"{key} must be true or false", key)
    return value


def string_list(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_input(f"{key} must be a list of strings", key)
    return list(value)


def query_arg(request: IRequest, name: str) -> str | None:
    """One query parameter (the last if repeated), decoded; None if absent."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        text: str = values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_input(f"{name} is not UTF-8", name) from None
    return text


def limit_arg(request: IRequest, default: int = 100, maximum: int = 1000) -> int:
    text = query_arg(request, "limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise bad_input(f"limit must be a whole number from 1 to {maximum}", "limit")
    return int(text)


def cursor_arg(request: IRequest) -> int | None:
    """The ``cursor`` of the page to read: the ``next`` of the page before (opaque to clients;
    here a decimal position)."""
    text = query_arg(request, "cursor")
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise bad_input("cursor is not one this API gave out", "cursor")
    return int(text)


def same_origin(request: IRequest, secure: bool) -> bool:
    """Whether a browser request comes from this site (the API's and the panel's CSRF check):
    ``Origin`` (when sent) is our scheme and host, and ``Sec-Fetch-Site`` (when sent) is not
    cross-site."""
    site = request.getHeader(b"sec-fetch-site")
    if site is not None and site.lower() not in (b"same-origin", b"none"):
        return False
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host") or b""
    scheme = b"https" if secure else b"http"
    return hmac.compare_digest(origin.lower(), scheme + b"://" + host.lower())


def set_cookie(
    request: IRequest,
    name: bytes,
    value: str,
    *,
    secure: bool,
    path: bytes = b"/",
    expire: bool = False,
) -> None:
    """Set one of the admin site's cookies (the session, the panel's login tokens): HttpOnly
    (no script reads it), SameSite=Strict (no other site's page sends it), Secure under TLS.
    No Max-Age: it ends with the browser, and idle expiry is the session store's."""
    cast(HTTPRequest, request).addCookie(
        name,
        value.encode("latin-1"),
        path=path,
        httpOnly=True,
        secure=secure,
        sameSite=b"strict",
        **({"max_age": b"0"} if expire else {}),
    )
