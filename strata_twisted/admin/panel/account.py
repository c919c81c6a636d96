"""
The Account page (#14): the logged-in admin's own password, TOTP second factor and API keys.

Secrets are shown once and never kept for a later page: a new TOTP secret, the recovery codes
and a new API key's text are rendered on the response to the form that made them (status 200,
``cache-control: no-store``), not behind a redirect.  The TOTP secret being enrolled travels
only in the enrolment form's hidden field until a code confirms it (L{accounts.begin_totp}).

A password change ends every session of the account (the API does the same); this browser
gets a new session at once, so the admin who changed it stays logged in here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, cast

from twisted.web.iweb import IRequest

from strata_twisted.admin.http import SESSION_COOKIE
from strata_twisted.admin.panel.base import Body, Page, PanelBase, field_errors
from strata_twisted.core.admin import accounts, apikeys
from strata_twisted.core.admin.auth import MIN_PASSWORD_LENGTH, totp_uri
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.model import SCOPES, Scope

app = PanelBase.app

# What each scope lets a key do, for the create form.
SCOPE_HINTS: Final = {
    "read": "read only: status, domains, queue, events",
    "operate": "read, and act on mail: hold, release, retry, bounce, delete",
    "admin": "everything this account may do",
}


def _networks(text: str) -> list[str]:
    """The networks typed into the allowed-networks box (one per line, or comma-separated)."""
    return [n for n in text.replace(",", " ").split() if n]


class AccountPages(PanelBase):
    async def _account_page(
        self,
        page: Page,
        *,
        status: int = 200,
        form: str = "",
        errors: Mapping[str, str] | None = None,
        values: Mapping[str, str] | None = None,
    ) -> Body:
        account = await accounts.show_admin(self.ctx, page.caller, page.caller.name)
        keys = await apikeys.list_api_keys(self.ctx, page.caller, account.name)
        return page.render(
            "account.html",
            status,
            min_password=MIN_PASSWORD_LENGTH,
            title="Account",
            account=account,
            keys=keys,
            scopes=SCOPES,
            scope_hints=SCOPE_HINTS,
            form=form,
            errors=dict(errors or {}),
            values=dict(values or {}),
        )

    @app.route("/account", methods=["GET"])
    async def account(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            return await self._account_page(page)

        return await self.show(request, handler)

    # -- password

    @app.route("/account/password", methods=["POST"])
    async def account_password(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            password = page.arg("new_password")
            try:
                if password != page.arg("new_password2"):
                    raise InvalidInput("new_password2", "the two new passwords differ")
                await accounts.passwd(
                    self.ctx,
                    page.caller,
                    page.caller.name,
                    password,
                    current_password=page.arg("current_password"),
                    passwords=self.passwords,
                )
            except InvalidInput as e:
                errors = field_errors(e, "new_password")
                if "password" in errors:  # core names the new one "password"
                    errors["new_password"] = errors.pop("password")
                return await self._account_page(page, status=400, form="password", errors=errors)
            # Every session of the account ends (they carry the old password's stamp); this
            # browser starts a new one, so only the other logins need the new password.
            self.sessions.end_account(page.caller.name)
            self.take_notices(page.session_id)
            session_id, _csrf = await self.sessions.start(self.ctx, page.session.caller)
            self.set_cookie(request, SESSION_COOKIE, session_id)
            self.add_notice(
                session_id, "ok", "Password changed. Your other sessions were logged out."
            )
            return page.redirect("/account")

        return await self.act(request, handler)

    # -- TOTP

    @app.route("/account/totp", methods=["POST"])
    async def account_totp_begin(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            enrolment = await accounts.begin_totp(
                self.ctx, page.caller, issuer=page.brand.product or "Strata"
            )
            return page.render(
                "account_totp.html",
                title="Set up TOTP",
                secret=enrolment.secret,
                uri=enrolment.uri,
                codes=None,
                errors={},
            )

        return await self.act(request, handler)

    @app.route("/account/totp/confirm", methods=["POST"])
    async def account_totp_confirm(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            secret = page.arg("secret")
            try:
                codes = await accounts.confirm_totp(
                    self.ctx,
                    page.caller,
                    secret,
                    page.arg("code").strip().replace(" ", ""),
                    guard=self.login.guard,
                )
            except InvalidInput as e:
                if e.field != "code":
                    raise  # a tampered secret, or TOTP already on: the error page
                return page.render(
                    "account_totp.html",
                    400,
                    title="Set up TOTP",
                    secret=secret,
                    uri=totp_uri(secret, page.caller.name, page.brand.product or "Strata"),
                    codes=None,
                    errors=field_errors(e, "code"),
                )
            return page.render(
                "account_totp.html", title="TOTP is on", secret="", uri="", codes=codes, errors={}
            )

        return await self.act(request, handler)

    @app.route("/account/totp/disable", methods=["POST"])
    async def account_totp_disable(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            try:
                await accounts.disable_totp(
                    self.ctx,
                    page.caller,
                    page.caller.name,
                    page.arg("code").strip().replace(" ", ""),
                    guard=self.login.guard,
                )
            except InvalidInput as e:
                return await self._account_page(
                    page, status=400, form="totp", errors=field_errors(e, "code")
                )
            page.notice("TOTP is off: logging in needs only your password now.")
            return page.redirect("/account")

        return await self.act(request, handler)

    # -- API keys

    @app.route("/account/keys", methods=["POST"])
    async def account_key_create(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            scope = page.arg("scope")
            days_text = page.arg("expires_days").strip()
            networks = page.arg("allow_ip")
            values = {"scope": scope, "expires_days": days_text, "allow_ip": networks}
            try:
                days: int | None = None
                if days_text:
                    if not days_text.isdigit():
                        raise InvalidInput("expires_days", "enter a whole number of days")
                    days = int(days_text)
                key_text, key = await apikeys.create_api_key(
                    self.ctx,
                    page.caller,
                    page.caller.name,
                    cast(Scope, scope),
                    expires_days=days,
                    allow_ip=_networks(networks),
                )
            except InvalidInput as e:
                return await self._account_page(
                    page, status=400, form="key", errors=field_errors(e, "scope"), values=values
                )
            return page.render("account_key.html", title="New API key", key=key, key_text=key_text)

        return await self.act(request, handler)

    @app.route("/account/keys/<string:key_id>/revoke", methods=["POST"])
    async def account_key_revoke(self, request: IRequest, key_id: str) -> Body:
        async def handler(page: Page) -> Body:
            await apikeys.revoke_api_key(self.ctx, page.caller, key_id)
            page.notice(f"API key {key_id} revoked.")
            return page.redirect("/account")

        return await self.act(request, handler)
