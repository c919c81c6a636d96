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

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final, TypeAlias, cast
from urllib.parse import quote

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from strata_twisted.admin.http import (
    SESSION_COOKIE,
    ApiError,
    as_api_error,
    bad_input,
    bool_field,
    client_ip,
    cursor_arg,
    int_field,
    limit_arg,
    only_fields,
    query_arg,
    read_body,
    read_json,
    same_origin,
    send_json,
    set_cookie,
    string_field,
    string_list,
)
from strata_twisted.admin.openapi import QUEUE_ACTIONS, QUEUE_STATES, document
from strata_twisted.core.admin import (
    accounts,
    apikeys,
    branding,
    dashboard,
    dkim,
    domains,
    events,
    queue,
    status,
    tenants,
    users,
)
from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.apikeys import authenticate_key
from strata_twisted.core.admin.auth import (
    AdminLogin,
    Passwords,
    Session,
    SessionStore,
    check_csrf,
)
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import VIA_PANEL, Caller
from strata_twisted.core.admin.queue import QueueAction
from strata_twisted.core.branding import BrandingView
from strata_twisted.errors import StrataError
from strata_twisted.model import (
    EventFilter,
    QueueFilter,
    ResellerLogo,
    Role,
    Scope,
    normalize_domain,
)

CSRF_HEADER: Final = b"x-csrf-token"

Answer: TypeAlias = tuple[int, Any]
Handler: TypeAlias = Callable[..., Awaitable[Answer]]

log = Logger()


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
            if not same_origin(request, self.secure):
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
        set_cookie(request, SESSION_COOKIE, value, secure=self.secure, expire=expire)

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

    # -- public branding, outside the versioned API (#14)
    #
    # For pages nobody has logged in to yet: Roundcube (its strata_branding plugin asks, server
    # to server, for the host it is served under) and the panel's login page.  No credentials,
    # and nothing in the answers that is not printed on those pages anyway.

    @app.route("/branding", methods=["GET"])
    async def public_branding(self, request: IRequest) -> bytes:
        try:
            host = query_arg(request, "host") or ""
            view = await branding.branding_for_host(self.ctx, host)
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        if view is None:
            return send_json(request, ApiError(404, "not_found", "no branding").body(), 404)
        body = send_json(request, public_branding_json(view, host))
        request.setHeader(b"cache-control", b"public, max-age=60")
        return body

    @app.route("/branding/logo", methods=["GET"])
    async def public_branding_logo(self, request: IRequest) -> bytes:
        try:
            logo = await branding.logo_for_host(self.ctx, query_arg(request, "host") or "")
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        if logo is None:
            return send_json(request, ApiError(404, "not_found", "no logo").body(), 404)
        return send_logo(request, logo, public=True)

    # -- the document

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return send_json(request, self._document)

    # -- session (browser login)

    @app.route("/api/v1/session", methods=["POST"])
    async def session_login(self, request: IRequest) -> bytes:
        try:
            if not same_origin(request, self.secure):
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

    # -- domains

    @app.route("/api/v1/domains", methods=["GET"])
    async def domains_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            views = await domains.list_domains(self.ctx, caller)
            now = self.ctx.clock.seconds()
            return 200, {"domains": [domain_json(v, now) for v in views]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/domains", methods=["POST"])
    async def domains_add(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            name = string_field(body, "name", required=True) or ""
            customer = string_field(body, "customer")
            fields = domain_fields({k: v for k, v in body.items() if k not in ("name", "customer")})
            if "relay" not in fields:
                raise bad_input("relay is required: the primary's host[:port]", "relay")
            with api_field_names():
                added = await domains.add_domain(self.ctx, caller, name, fields, customer)
            view = await domains.show_domain(self.ctx, caller, added.name)
            return 201, domain_json(view, self.ctx.clock.seconds())

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/domains/<string:name>", methods=["GET"])
    async def domains_show(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            view = await domains.show_domain(self.ctx, caller, name)
            return 200, domain_json(view, self.ctx.clock.seconds())

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/domains/<string:name>", methods=["PATCH"])
    async def domains_update(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            fields = domain_fields(body)
            with api_field_names():
                await domains.update_domain(self.ctx, caller, name, fields)
            view = await domains.show_domain(self.ctx, caller, name)
            return 200, domain_json(view, self.ctx.clock.seconds())

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/domains/<string:name>", methods=["DELETE"])
    async def domains_remove(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await domains.remove_domain(self.ctx, caller, name)
            return 204, None

        return await self.run(request, handler, write=True)

    # -- users

    @app.route("/api/v1/domains/<string:name>/users", methods=["GET"])
    async def users_list(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            found = await users.list_users(self.ctx, caller, name)
            return 200, {"users": [{"address": u.address} for u in found]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/domains/<string:name>/users", methods=["POST"])
    async def users_add(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"address", "password", "password_hash"})
            address = string_field(body, "address", required=True) or ""
            await self._user_in(caller, name, address)
            password = string_field(body, "password")
            password_hash = string_field(body, "password_hash")
            if (password is None) == (password_hash is None):
                raise bad_input("give either password or password_hash", "password")
            change = await users.add_user(
                self.ctx, caller, address, password, password_hash=password_hash
            )
            return 201, {"address": change.address}

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/domains/<string:name>/users", methods=["PUT"])
    async def users_replace(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            merge = (query_arg(request, "merge") or "false").lower()
            if merge not in ("true", "false", "1", "0"):
                raise bad_input("merge must be true or false", "merge")
            data = read_body(request, MAX_PASSWD_FILE)
            result = await users.import_users(
                self.ctx, caller, name, data, merge=merge in ("true", "1")
            )
            change = result.change
            return 200, {
                "users": result.users,
                "merged": result.merged,
                "added": change.added,
                "updated": change.updated,
                "removed": change.removed,
                "unchanged": change.unchanged,
            }

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/domains/<string:name>/users/<string:address>", methods=["DELETE"])
    async def users_remove(self, request: IRequest, name: str, address: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await self._user_in(caller, name, address)
            await users.remove_user(self.ctx, caller, address)
            return 204, None

        return await self.run(request, handler, write=True)

    async def _user_in(self, caller: Caller, domain: str, address: str) -> None:
        """404 unless ``domain`` is one the caller sees and ``address`` is in it."""
        # Only the tenancy check: show_domain would read every domain's queue figures too.
        found = await self.ctx.tenancy.domain(caller, domain_name(domain))
        _, _, at = address.rpartition("@")
        try:
            same = normalize_domain(at) == found.name
        except (ValueError, StrataError):
            same = False
        if not same:
            raise ApiError(404, "not_found", f"{address!r} is not an address in {domain}")

    # -- queue

    @app.route("/api/v1/queue", methods=["GET"])
    async def queue_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            query = queue_filter(
                {
                    key: query_arg(request, key)
                    for key in ("domain", "state", "sender", "recipient", "older_than")
                },
                self.ctx.clock.seconds(),
                from_query=True,
            )
            page = await queue.list_queue(
                self.ctx, caller, query, query_arg(request, "cursor"), limit_arg(request)
            )
            return 200, {
                "entries": [e.as_json() for e in page.entries],
                "next": page.next_cursor,
            }

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/queue/actions", methods=["POST"])
    async def queue_actions(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"action", "ids", "filter"})
            action = string_field(body, "action", required=True) or ""
            if action not in QUEUE_ACTIONS:
                raise bad_input(f"action must be one of {', '.join(QUEUE_ACTIONS)}", "action")
            ids = string_list(body, "ids")
            raw_filter = body.get("filter")
            if raw_filter is not None and not isinstance(raw_filter, dict):
                raise bad_input("filter must be an object", "filter")
            if (ids is None) == (raw_filter is None):
                raise bad_input("give either ids or filter", "ids")
            query = (
                queue_filter(raw_filter, self.ctx.clock.seconds())
                if raw_filter is not None
                else None
            )
            report = await queue.queue_action(
                self.ctx, caller, cast(QueueAction, action), ids=ids, query=query
            )
            data = report.as_json()
            data["changed_count"] = len(report.changed)
            data["skipped_count"] = len(report.skipped)
            return 200, data

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/queue/<string:entry_id>", methods=["GET"])
    async def queue_show(self, request: IRequest, entry_id: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            shown = await queue.show_queue(self.ctx, caller, entry_id)
            return 200, shown.as_json()

        return await self.run(request, handler, write=False)

    # -- events and status

    @app.route("/api/v1/events", methods=["GET"])
    async def events_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            domain = query_arg(request, "domain")
            kind = query_arg(request, "kind")
            since = number_arg(request, "since")
            query = EventFilter(
                domains=(domain,) if domain else None,
                kinds=(kind,) if kind else None,
                since=since,
            )
            page = await events.list_events(
                self.ctx, caller, query, query_arg(request, "cursor"), limit_arg(request)
            )
            return 200, {"events": [e.as_json() for e in page.events], "next": page.next_cursor}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/status", methods=["GET"])
    async def status_show(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            report = await status.status(self.ctx, caller)
            return 200, {**report.as_json(), "time": self.ctx.clock.seconds()}

        return await self.run(request, handler, write=False)

    # -- the dashboard (#14): the panel's page polls these

    @app.route("/api/v1/dashboard", methods=["GET"])
    async def dashboard_show(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            board = await dashboard.dashboard(self.ctx, caller)
            return 200, board.as_json()

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/dashboard/series", methods=["GET"])
    async def dashboard_series(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            text = query_arg(request, "hours")
            hours = 24
            if text is not None:
                if not text.isdigit() or len(text) > 6:
                    raise bad_input(
                        f"hours must be a whole number from 1 to {dashboard.MAX_HOURS}", "hours"
                    )
                hours = int(text)
            chart = await dashboard.series(
                self.ctx, caller, hours=hours, domain=query_arg(request, "domain") or None
            )
            return 200, chart.as_json()

        return await self.run(request, handler, write=False)

    # -- resellers and customers

    @app.route("/api/v1/resellers", methods=["GET"])
    async def resellers_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            found = await tenants.list_resellers(self.ctx, caller)
            return 200, {"resellers": [r.as_json() for r in found]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/resellers", methods=["POST"])
    async def resellers_add(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"name", *tenants.BRANDING_FIELDS})
            name = string_field(body, "name", required=True) or ""
            branding = {k: v for k, v in body.items() if k != "name"}
            added = await tenants.add_reseller(self.ctx, caller, name, branding)
            return 201, added.as_json()

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/resellers/<string:name>", methods=["GET"])
    async def resellers_show(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            return 200, (await tenants.show_reseller(self.ctx, caller, name)).as_json()

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/resellers/<string:name>", methods=["PATCH"])
    async def resellers_update(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, set(tenants.BRANDING_FIELDS))
            updated = await tenants.update_reseller(self.ctx, caller, name, body)
            return 200, updated.as_json()

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/resellers/<string:name>", methods=["DELETE"])
    async def resellers_remove(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await tenants.remove_reseller(self.ctx, caller, name)
            return 204, None

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/resellers/<string:name>/logo", methods=["GET"])
    async def reseller_logo_show(self, request: IRequest, name: str) -> bytes:
        try:
            caller = await self.caller(request, write=False)
            logo = await branding.reseller_logo(self.ctx, caller, name)
            if logo is None:
                raise ApiError(404, "not_found", f"reseller {name} has no uploaded logo")
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        return send_logo(request, logo, public=False)

    @app.route("/api/v1/resellers/<string:name>/logo", methods=["PUT"])
    async def reseller_logo_set(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
            if kind not in LOGO_UPLOAD_TYPES:
                raise ApiError(
                    415, "unsupported_media_type", "send the logo as image/png, image/jpeg, "
                    "image/gif or image/webp",
                )  # fmt: skip
            data = read_body(request, branding.MAX_LOGO_BYTES)
            logo = await branding.set_reseller_logo(self.ctx, caller, name, data)
            return 200, {"content_type": logo.content_type, "size": len(logo.data)}

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/resellers/<string:name>/logo", methods=["DELETE"])
    async def reseller_logo_clear(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await branding.clear_reseller_logo(self.ctx, caller, name)
            return 204, None

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/branding", methods=["GET"])
    async def own_branding(self, request: IRequest) -> bytes:
        """The brand the caller's pages show (null: Strata's own), for the panel."""

        async def handler(caller: Caller) -> Answer:
            view = await branding.branding_for(self.ctx, caller)
            return 200, {"branding": None if view is None else view.as_json(OWN_LOGO_PATH)}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/branding/logo", methods=["GET"])
    async def own_branding_logo(self, request: IRequest) -> bytes:
        try:
            caller = await self.caller(request, write=False)
            logo = await branding.logo_for(self.ctx, caller)
            if logo is None:
                raise ApiError(404, "not_found", "no uploaded logo")
        except Exception as e:  # noqa: BLE001
            return self.fail(request, e)
        return send_logo(request, logo, public=False)

    @app.route("/api/v1/customers", methods=["GET"])
    async def customers_list(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            found = await tenants.list_customers(
                self.ctx, caller, query_arg(request, "reseller") or None
            )
            return 200, {"customers": [c.as_json() for c in found]}

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/customers", methods=["POST"])
    async def customers_add(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"name", "reseller"})
            added = await tenants.add_customer(
                self.ctx,
                caller,
                string_field(body, "name", required=True) or "",
                string_field(body, "reseller"),
            )
            return 201, added.as_json()

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/customers/<string:name>", methods=["GET"])
    async def customers_show(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            return 200, (await tenants.show_customer(self.ctx, caller, name)).as_json()

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/customers/<string:name>", methods=["DELETE"])
    async def customers_remove(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            await tenants.remove_customer(self.ctx, caller, name)
            return 204, None

        return await self.run(request, handler, write=True)

    # -- more for operators and the panel: flush, DKIM, one's own password and TOTP

    @app.route("/api/v1/queue/flush", methods=["POST"])
    async def queue_flush(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"domain"})
            result = await queue.flush_queue(self.ctx, caller, string_field(body, "domain"))
            return 200, {
                "domain": result.domain,
                "requests": list(result.request_ids),
                "queued": result.queued,
                "held": result.held,
            }

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/domains/<string:name>/dkim", methods=["GET"])
    async def dkim_show(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            return 200, (await dkim.show_dkim(self.ctx, caller, name)).as_json()

        return await self.run(request, handler, write=False)

    @app.route("/api/v1/domains/<string:name>/dkim", methods=["POST"])
    async def dkim_generate(self, request: IRequest, name: str) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"selector", "algorithm", "replace"})
            view = await dkim.generate_dkim(
                self.ctx,
                caller,
                name,
                string_field(body, "selector"),
                string_field(body, "algorithm") or "rsa",
                replace=bool_field(body, "replace") or False,
            )
            return 201, view.as_json()

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/session/password", methods=["POST"])
    async def own_password(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"current_password", "new_password"})
            await accounts.passwd(
                self.ctx,
                caller,
                caller.name,
                string_field(body, "new_password", required=True) or "",
                current_password=string_field(body, "current_password", required=True) or "",
                passwords=self.passwords,
            )
            # Every session of the account ends (its password stamp changed): log in again.
            self.sessions.end_account(caller.name)
            return 204, None

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/session/totp", methods=["POST"])
    async def totp_begin(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            enrolment = await accounts.begin_totp(self.ctx, caller)
            return 200, {"secret": enrolment.secret, "uri": enrolment.uri}

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/session/totp/confirm", methods=["POST"])
    async def totp_confirm(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"secret", "code"})
            codes = await accounts.confirm_totp(
                self.ctx,
                caller,
                string_field(body, "secret", required=True) or "",
                string_field(body, "code", required=True) or "",
                guard=self.login.guard,
            )
            return 200, {"recovery_codes": codes}

        return await self.run(request, handler, write=True)

    @app.route("/api/v1/session/totp/disable", methods=["POST"])
    async def totp_disable(self, request: IRequest) -> bytes:
        async def handler(caller: Caller) -> Answer:
            body = read_json(request)
            only_fields(body, {"code"})
            await accounts.disable_totp(
                self.ctx, caller, caller.name, string_field(body, "code"), guard=self.login.guard
            )
            return 204, None

        return await self.run(request, handler, write=True)


# -- translations between the API's names and core's -----------------------------------------

# The API's domain fields and the Domain fields they set (alert_emails is translated apart).
_DOMAIN_FIELDS: Final = {
    "mode": "mode",
    "relay": "relay",
    "monitoring": "monitored",
    "tls_policy": "tls_policy",
    "portal": "portal",
    "retention_days": "retention_days",
    "queue_lifetime": "queue_lifetime",
    "hold_rejected": "hold_rejected",
    "accept_unknown": "accept_unknown",
    "probe_interval": "probe_interval",
    "down_after": "down_after",
    "up_after": "up_after",
    "alert_webhook": "alert_webhook",
    "alert_webhook_auth": "alert_webhook_auth",
}
_API_NAMES: Final = {core: api for api, core in _DOMAIN_FIELDS.items()} | {
    "alert_email": "alert_emails"
}
# The types a logo upload may declare; the image's own bytes decide what it is (core/admin).
LOGO_UPLOAD_TYPES: Final = frozenset(
    {b"image/png", b"image/jpeg", b"image/gif", b"image/webp", b"application/octet-stream"}
)
# Where a logged-in admin's pages fetch their brand's uploaded logo.
OWN_LOGO_PATH: Final = "/api/v1/branding/logo"


def public_branding_json(view: BrandingView, host: str) -> dict[str, Any]:
    """``GET /branding``'s answer: the brand, its uploaded logo under ``/branding/logo``."""
    name = branding.host_name(host) or ""
    return view.as_json(f"/branding/logo?host={quote(name, safe='')}")


def send_logo(request: IRequest, logo: ResellerLogo, *, public: bool) -> bytes:
    """A logo image: its own type, never sniffed as anything else, and never run as a page
    (the sandbox CSP, should a browser open it as a document)."""
    request.setResponseCode(200)
    request.setHeader(b"content-type", logo.content_type.encode("ascii"))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
    request.setHeader(
        b"cache-control", b"public, max-age=300" if public else b"private, max-age=60"
    )
    return logo.data


MAX_PASSWD_FILE: Final = 16 * 1024 * 1024


def domain_fields(body: dict[str, Any]) -> dict[str, object]:
    """The API's domain fields as core's (L{domains.check_domain_fields} checks the values)."""
    fields: dict[str, object] = {}
    for key, value in body.items():
        if key == "alert_emails":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad_input("alert_emails must be a list of addresses", key)
            fields["alert_email"] = value
        elif key in _DOMAIN_FIELDS:
            fields[_DOMAIN_FIELDS[key]] = value
        else:
            raise bad_input(f"unknown field {key!r}", key)
    return fields


class api_field_names:  # noqa: N801 - used as a context manager, like contextlib's
    """Re-raise core's L{InvalidInput} with the field spelled as the API spells it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, InvalidInput) and error.field in _API_NAMES:
            raise InvalidInput(_API_NAMES[error.field], error.message) from None


def domain_json(view: domains.DomainView, now: float) -> dict[str, Any]:
    """A domain as the API shows it: core's view plus the contract's names (#13)."""
    data = view.as_json()
    domain = view.domain
    oldest = view.oldest_received_at
    data.update(
        {
            "monitoring": domain.monitored,
            "alert_emails": list(domain.alert_emails),
            "queue_depth": view.queued + view.held,
            "oldest_age_s": max(0.0, now - oldest) if oldest is not None else None,
        }
    )
    return data


def queue_filter(values: dict[str, Any], now: float, *, from_query: bool = False) -> QueueFilter:
    """A queue filter from the API's fields (``domain``, ``state``, ``sender``, ``recipient``,
    ``older_than`` seconds), in a JSON object or (``from_query``) query parameters."""
    only_fields(values, {"domain", "state", "sender", "recipient", "older_than"})
    given = {k: v for k, v in values.items() if v is not None and v != ""}
    for key in ("domain", "state", "sender", "recipient"):
        if key in given and not isinstance(given[key], str):
            raise bad_input(f"{key} must be a string", key)
    state = given.get("state")
    if state is not None and state not in QUEUE_STATES:
        raise bad_input(f"state must be one of {', '.join(QUEUE_STATES)}", "state")
    older = given.get("older_than")
    if older is not None:
        if from_query:
            try:
                older = float(older)
            except ValueError:
                raise bad_input("older_than must be a number of seconds", "older_than") from None
        if isinstance(older, bool) or not isinstance(older, int | float) or not 0 <= older < 1e12:
            raise bad_input("older_than must be a number of seconds (0 or more)", "older_than")
    return QueueFilter(
        domains=(given["domain"],) if "domain" in given else None,
        states=(state,) if state is not None else None,
        sender=given.get("sender"),
        recipient=given.get("recipient"),
        received_before=now - float(older) if older is not None else None,
    )


def number_arg(request: IRequest, name: str) -> float | None:
    text = query_arg(request, name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise bad_input(f"{name} must be a number", name) from None
    if not 0 <= value < 1e12:
        raise bad_input(f"{name} must be a Unix time", name)
    return value
