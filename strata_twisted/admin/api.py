"""
The JSON API under ``/api/v1`` (#13), served by Klein in the server's reactor.

Each route authenticates the request (an API key in ``Authorization: Bearer``, or the session
cookie of a browser login), hands the caller to an operation of L{strata_twisted.core.admin}
and turns its result into JSON, or its error into ``{"error": {...}}`` (L{as_api_error}).  A
cookie-authenticated request that changes state must carry the session's CSRF token in an
``X-CSRF-Token`` header and must not come from another origin; a key needs neither, since a
browser never sends it on its own.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from strata_twisted.admin.http import (
    ApiError,
    as_api_error,
    client_ip,
    read_json,
    send_json,
)
from strata_twisted.admin.openapi import document
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller

SESSION_COOKIE: Final = b"strata_session"
CSRF_HEADER: Final = b"x-csrf-token"

Answer: TypeAlias = tuple[int, Any]
Handler: TypeAlias = Callable[..., Awaitable[Answer]]

log = Logger()


def _same_origin(request: IRequest, secure: bool) -> bool:
    """Whether a browser request comes from this site: ``Origin`` (when sent) is our scheme and
    host, and ``Sec-Fetch-Site`` (when sent) is not cross-site."""
    site = request.getHeader(b"sec-fetch-site")
    if site is not None and site.lower() not in (b"same-origin", b"none"):
        return False
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host") or b""
    scheme = b"https" if secure else b"http"
    return hmac.compare_digest(origin.lower(), scheme + b"://" + host.lower())


class AdminAPI:
    """The API's routes over one L{AdminContext}; ``resource()`` is what the site serves."""

    app = Klein()

    def __init__(self, ctx: AdminContext, sessions: Any, *, secure: bool) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.secure = secure
        self._document = document()

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing

    async def caller(self, request: IRequest, *, write: bool) -> Caller:
        """The authenticated caller, or L{ApiError} 401 (403 for a failed CSRF check)."""
        from strata_twisted.core.admin.auth import authenticate_key

        ip = client_ip(request)
        authorization = request.getHeader(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "use Authorization: Bearer KEY")
            caller: Caller = await authenticate_key(self.ctx, token.strip(), ip)
            return caller
        cookie = request.getCookie(SESSION_COOKIE)
        session = self.sessions.lookup(cookie.decode("latin-1")) if cookie else None
        if session is None:
            raise ApiError(
                401, "unauthorized", "log in (POST /api/v1/session) or send an API key"
            )
        if write:
            token_header = request.getHeader(CSRF_HEADER)
            if not _same_origin(request, self.secure):
                raise ApiError(403, "csrf", "refused: the request comes from another site")
            if token_header is None or not self.sessions.check_csrf(
                session, token_header.decode("latin-1")
            ):
                raise ApiError(403, "csrf", "refused: the X-CSRF-Token header is missing or wrong")
        found: Caller = session.caller_from(ip) if hasattr(session, "caller_from") else session.caller
        return found

    def answer(self, request: IRequest, status: int, value: Any) -> bytes:
        if status == 204:
            request.setResponseCode(204)
            return b""
        return send_json(request, value, status)

    def fail(self, request: IRequest, error: BaseException) -> bytes:
        api_error = as_api_error(error)
        if api_error.status >= 500:
            log.failure(
                "admin API {method} {path} failed",
                Failure(error),
                method=request.method.decode("ascii", "replace"),
                path=request.path.decode("ascii", "replace"),
            )
        if api_error.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="strata"')
        return send_json(request, api_error.body(), api_error.status)

    async def run(
        self, request: IRequest, handler: Handler, *, write: bool, **kwargs: Any
    ) -> bytes:
        try:
            caller = await self.caller(request, write=write)
            status, value = await handler(caller, **kwargs)
        except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
            return self.fail(request, e)
        return self.answer(request, status, value)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return send_json(
            request, ApiError(404, "not_found", "no such resource").body(), 404
        )

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        return send_json(
            request, ApiError(405, "method_not_allowed", "method not allowed").body(), 405
        )

    # -- the document

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return send_json(request, self._document)
