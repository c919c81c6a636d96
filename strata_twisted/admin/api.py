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
from dataclasses import replace
from typing import Any, Final, TypeAlias, cast

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from strata_twisted.admin.http import (
    ApiError,
    as_api_error,
    bad_input,
    client_ip,
    cursor_arg,
    int_field,
    limit_arg,
    only_fields,
    query_arg,
    read_json,
    send_json,
    string_field,
    string_list,
)
from strata_twisted.admin.openapi import document
from strata_twisted.core.admin import accounts, apikeys
from strata_twisted.core.admin.apikeys import authenticate_key
from strata_twisted.core.admin.auth import (
    AdminLogin,
    Passwords,
    Session,
    SessionStore,
    check_csrf,
)
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import VIA_PANEL, Caller
from strata_twisted.model import Role, Scope

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

    def __init__(
        self,
        ctx: AdminContext,
        sessions: SessionStore,
        login: AdminLogin,
        passwords: Passwords,
        *,
        secure: bool,
        metrics: IResource,
    ) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.sessions = sessions
        self.login = login
        self.passwords = passwords
        self.secure = secure
        self._document = document()

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing

    async def caller(self, request: IRequest, *, write: bool) -> Caller:
        """The authenticated caller, or L{ApiError} 401 (403 for a failed CSRF check)."""
        ip = client_ip(request)
        authorization = request.getHeader(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "use Authorization: Bearer KEY")
            caller: Caller = await authenticate_key(self.ctx, token.strip(), ip)
            return caller
        session = await self._session(request)
        if session is None:
            raise ApiError(401, "unauthorized", "log in (POST /api/v1/session) or send an API key")
        if write:
            token_header = request.getHeader(CSRF_HEADER)
            if not _same_origin(request, self.secure):
                raise ApiError(403, "csrf", "refused: the request comes from another site")
            token = token_header.decode("latin-1") if token_header is not None else None
            if not check_csrf(session, token):
                raise ApiError(403, "csrf", "refused: the X-CSRF-Token header is missing or wrong")
        return replace(session.caller, source=ip)

    async def _session(self, request: IRequest) -> Session | None:
        cookie = request.getCookie(SESSION_COOKIE)
        if not cookie:
            return None
        found: Session | None = await self.sessions.resolve(self.ctx, cookie.decode("latin-1"))
        return found

    def _set_cookie(self, request: IRequest, value: str, *, expire: bool = False) -> None:
        # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it;
        # Secure under TLS.  No Max-Age: it ends with the browser, and idle expiry is ours.
        cast(HTTPRequest, request).addCookie(
            SESSION_COOKIE,
            value.encode("latin-1"),
            path=b"/",
            httpOnly=True,
            secure=self.secure,
            sameSite=b"strict",
            **({"max_age": b"0"} if expire else {}),
        )

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
        return send_json(request, ApiError(404, "not_found", "no such resource").body(), 404)

    @app.handle_errors(MethodNotAllowed)
    def not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        return send_json(
            request, ApiError(405, "method_not_allowed", "method not allowed").body(), 405
        )

    # -- metrics

    @app.route("/metrics", methods=["GET"])
    async def metrics_page(self, request: IRequest) -> Any:
        """Prometheus's scrape: an operator's key (any scope) or session.  The figures name
        every domain of the installation, so no tenant below the operator reads them."""
        try:
            caller = await self.caller(request, write=False)
            if not caller.is_operator:
                raise ApiError(404, "not_found", "no such resource")
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        return self.metrics

    # -- the document

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return send_json(request, self._document)

    # -- session (browser login)

    @app.route("/api/v1/session", methods=["POST"])
    async def session_login(self, request: IRequest) -> bytes:
        try:
            if not _same_origin(request, self.secure):
                raise ApiError(403, "csrf", "refused: the login comes from another site")
            body = read_json(request)  # JSON only: no other site's form can send it
            only_fields(body, {"name", "password", "totp"})
            name = string_field(body, "name", required=True) or ""
            password = string_field(body, "password", required=True) or ""
            totp = string_field(body, "totp")
            caller = await self.login.authenticate_password(
                self.ctx, name, password, totp, client_ip(request), via=VIA_PANEL
            )
            session_id, csrf = await self.sessions.start(self.ctx, caller)
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        self._set_cookie(request, session_id)
        return send_json(request, {"admin": caller.name, "role": caller.role, "csrf_token": csrf})

    @app.route("/api/v1/session", methods=["GET"])
    async def session_show(self, request: IRequest) -> bytes:
        session = await self._session(request)
        if session is None:
            return self.fail(request, ApiError(401, "unauthorized", "not logged in"))
        return send_json(
            request,
            {
                "admin": session.caller.name,
                "role": session.caller.role,
                "csrf_token": session.csrf_token,
            },
        )

    @app.route("/api/v1/session", methods=["DELETE"])
    async def session_logout(self, request: IRequest) -> bytes:
        async def logout(caller: Caller) -> Answer:
            cookie = request.getCookie(SESSION_COOKIE)
            if cookie:
                self.sessions.end(cookie.decode("latin-1"))
            self._set_cookie(request, "", expire=True)
            return 204, None

        return await self.run(request, logout, write=True)

    # -- admin accounts

    @app.route("/api/v1/admins", methods=["GET"])
    async def admins_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            found = await accounts.list_admins(self.ctx, caller)
            return 200, {"admins": [a.as_json() for a in found]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/admins", methods=["POST"])
    async def admins_add(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"name", "role", "reseller", "customer", "password"})
            added = await accounts.add_admin(
                self.ctx,
                caller,
                string_field(body, "name", required=True) or "",
                cast(Role, string_field(body, "role", required=True) or ""),
                string_field(body, "password", required=True) or "",
                reseller=string_field(body, "reseller") or "",
                customer=string_field(body, "customer") or "",
                passwords=self.passwords,
            )
            return 201, added.as_json()

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/admins/<string:name>", methods=["GET"])
    async def admins_show(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            return 200, (await accounts.show_admin(self.ctx, caller, name)).as_json()

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/admins/<string:name>", methods=["DELETE"])
    async def admins_remove(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await accounts.remove_admin(self.ctx, caller, name)
            self.sessions.end_account(name)
            return 204, None

        return await self.run(request, handler, write=True)

    # -- API keys

    @app.route("/api/v1/api-keys", methods=["GET"])
    async def keys_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            found = await apikeys.list_api_keys(self.ctx, caller, query_arg(request, "admin"))
            return 200, {"api_keys": [k.as_json() for k in found]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/api-keys", methods=["POST"])
    async def keys_create(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"admin", "scope", "expires_days", "allow_ip"})
            key_text, key = await apikeys.create_api_key(
                self.ctx,
                caller,
                string_field(body, "admin", required=True) or "",
                cast(Scope, string_field(body, "scope", required=True) or ""),
                expires_days=int_field(body, "expires_days", 1, 3650),
                allow_ip=tuple(string_list(body, "allow_ip") or ()),
            )
            return 201, {**key.as_json(), "key": key_text}

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/api-keys", methods=["DELETE"])
    async def keys_revoke_query(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            key_id = query_arg(request, "id")
            if not key_id:
                raise bad_input("id is required: the key to revoke", "id")
            await apikeys.revoke_api_key(self.ctx, caller, key_id)
            return 204, None

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/api-keys/<string:key_id>", methods=["DELETE"])
    async def keys_revoke(self, request: IRequest, key_id: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await apikeys.revoke_api_key(self.ctx, caller, key_id)
            return 204, None

        return await self.run(request, handler, write=True)

    # -- audit

    @app.route("/api/v1/audit", methods=["GET"])
    async def audit_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            limit = limit_arg(request)
            records = await self.ctx.auditor.records(caller, cursor_arg(request), limit)
            more = len(records) == limit and records[-1].id > 1
            return 200, {
                "records": [r.as_json() for r in records],
                "next": str(records[-1].id) if more else None,
            }

        return await self.run(request, handler, write=False)
