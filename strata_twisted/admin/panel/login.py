"""
Logging in to the panel (#14): a name and password, then a TOTP or recovery code on a page of
its own when the account has a second factor; logging out.

The login form is protected against login CSRF (another site logging the browser in to an
account of its choosing) twice: it must come from this site (``Origin``, ``Sec-Fetch-Site``),
and it must carry the random token this page set in a cookie of its own (a value no other site
can read or set).  Between the two pages only a L{PendingLogins} token is kept, in a cookie;
never the password.  The checks, the throttle and the session are the API's
(L{strata_twisted.core.admin.auth}).
"""

from __future__ import annotations

import secrets
from typing import Final

from twisted.web.iweb import IRequest

from strata_twisted.admin.http import SESSION_COOKIE, client_ip, same_origin
from strata_twisted.admin.panel.base import (
    Body,
    Page,
    PanelBase,
    local_path,
)
from strata_twisted.core.admin.auth import SecondFactorRequired, Unauthorized
from strata_twisted.core.admin.identity import VIA_PANEL, Caller

LOGIN_COOKIE: Final = b"strata_login"
PENDING_COOKIE: Final = b"strata_pending"
_LOGIN_PATH: Final = b"/login"

app = PanelBase.app


class LoginPages(PanelBase):
    def _cookie(self, request: IRequest, name: bytes) -> str:
        value = request.getCookie(name)
        return value.decode("latin-1") if value else ""

    def _form(self, request: IRequest, name: str) -> str:
        values = request.args.get(name.encode("ascii"))
        return values[0].decode("utf-8", "replace") if values else ""

    async def _login_form(
        self, request: IRequest, *, status: int = 200, error: str = "", name: str = ""
    ) -> Body:
        token = secrets.token_urlsafe(24)
        self.set_cookie(request, LOGIN_COOKIE, token, path=_LOGIN_PATH)
        self.set_cookie(request, PENDING_COOKIE, "", path=_LOGIN_PATH, expire=True)
        return self.render(
            request,
            "login.html",
            status,
            brand=await self.brand_for_host(request),
            login_token=token,
            next=local_path(self._form(request, "next")),
            error=error,
            name=name,
        )

    def _token_ok(self, request: IRequest) -> bool:
        cookie = self._cookie(request, LOGIN_COOKIE)
        form = self._form(request, "login_token")
        return (
            same_origin(request, self.secure)
            and bool(cookie)
            and secrets.compare_digest(cookie.encode(), form.encode("utf-8", "replace"))
        )

    @app.route("/login", methods=["GET"])
    async def login_page(self, request: IRequest) -> Body:
        if await self.page_for(request) is not None:
            request.setResponseCode(303)
            request.setHeader(b"location", local_path(self._form(request, "next")).encode())
            return b""
        return await self._login_form(request)

    @app.route("/login", methods=["POST"])
    async def login_submit(self, request: IRequest) -> Body:
        if not self._token_ok(request):
            return await self._login_form(
                request,
                status=403,
                error="This login form has expired or came from another site. Try again.",
            )
        name = self._form(request, "name")
        try:
            caller = await self.login.authenticate_password(
                self.ctx, name, self._form(request, "password"), None, client_ip(request),
                via=VIA_PANEL,
            )  # fmt: skip
        except SecondFactorRequired:
            token = self.pending.begin(name.strip().lower())
            self.set_cookie(request, PENDING_COOKIE, token, path=_LOGIN_PATH)
            return await self._totp_form(request)
        except Unauthorized:
            return await self._login_form(
                request, status=401, error="Wrong name or password.", name=name
            )
        except Exception as e:  # noqa: BLE001
            return self.error_page(request, e, None)
        return await self._start(request, caller)

    async def _totp_form(self, request: IRequest, *, status: int = 200, error: str = "") -> Body:
        return self.render(
            request,
            "totp.html",
            status,
            brand=await self.brand_for_host(request),
            login_token=self._cookie(request, LOGIN_COOKIE),
            next=local_path(self._form(request, "next")),
            error=error,
        )

    @app.route("/login/totp", methods=["POST"])
    async def login_totp(self, request: IRequest) -> Body:
        if not self._token_ok(request):
            return await self._login_form(
                request,
                status=403,
                error="This login form has expired or came from another site. Try again.",
            )
        token = self._cookie(request, PENDING_COOKIE)
        name = self.pending.name(token)
        if name is None:
            return await self._login_form(
                request, status=401, error="The login took too long. Start again."
            )
        try:
            caller = await self.login.authenticate_second_factor(
                self.ctx, name, self._form(request, "code").strip(), client_ip(request),
                via=VIA_PANEL,
            )  # fmt: skip
        except Unauthorized:
            return await self._totp_form(request, status=401, error="That code is not right.")
        except Exception as e:  # noqa: BLE001
            return self.error_page(request, e, None)
        self.pending.end(token)
        return await self._start(request, caller)

    async def _start(self, request: IRequest, caller: Caller) -> Body:
        try:
            session_id, _csrf = await self.sessions.start(self.ctx, caller)
        except Exception as e:  # noqa: BLE001
            return self.error_page(request, e, None)
        self.set_cookie(request, SESSION_COOKIE, session_id)
        self.set_cookie(request, LOGIN_COOKIE, "", path=_LOGIN_PATH, expire=True)
        self.set_cookie(request, PENDING_COOKIE, "", path=_LOGIN_PATH, expire=True)
        request.setResponseCode(303)
        request.setHeader(b"location", local_path(self._form(request, "next")).encode("utf-8"))
        return b""

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            self.sessions.end(page.session_id)
            self.take_notices(page.session_id)
            self.set_cookie(request, SESSION_COOKIE, "", expire=True)
            return page.redirect("/login")

        return await self.act(request, handler)
