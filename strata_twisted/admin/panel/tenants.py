"""
Resellers and customers (#14): the operator adds, brands and removes resellers, and adds
customers under a reseller or under itself; a reseller admin adds and removes its own
customers; both manage the admin accounts under each (add, password reset, TOTP off, remove).

Customer admins have no tenant to manage: every page here answers them "not found", the same
answer core gives for another tenant's reseller or customer, so no URL tells anybody which
tenants exist.  Who may change what is core's to decide (L{strata_twisted.core.admin.tenants},
L{strata_twisted.core.admin.accounts}); these pages only leave out the forms a role cannot use.

A form with errors is shown again on its page with status 400 and the errors beside its fields;
a page holds several forms, so errors carry the form they belong to (``form``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, cast

from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, PanelBase, field_errors
from strata_twisted.core.admin import accounts, domains, tenants
from strata_twisted.core.admin.auth import MIN_PASSWORD_LENGTH
from strata_twisted.core.admin.branding import (
    clear_reseller_logo,
    logo_type,
    reseller_logo,
    set_reseller_logo,
)
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import AdminAccount, Branding, Role

app = PanelBase.app

# The branding fields the reseller forms carry, in the order shown, with their labels.
BRANDING_FORM: Final = (
    ("product_name", "Product name"),
    ("logo_url", "Logo URL"),
    ("primary_color", "Primary colour"),
    ("accent_color", "Accent colour"),
    ("support_email", "Support email"),
    ("support_url", "Support URL"),
)
# What a colour field shows when the reseller has none: the panel's own colours (panel.css).
# A colour input always sends a value, so sending back this default for a colour that was
# unset keeps it unset (the reseller follows Strata's look, whatever that becomes).
DEFAULT_COLOURS: Final = {"primary_color": "#1f5fa8", "accent_color": "#e07b00"}


def _managers_only(page: Page) -> None:
    """Customer admins manage no tenants: the pages do not exist for them."""
    if page.caller.role not in ("operator", "reseller"):
        raise NotFound("page", page.request.path.decode("utf-8", "replace"))


def branding_values(page: Page, current: Branding | None = None) -> dict[str, str]:
    """The branding fields of the posted form (every field: an empty one clears it)."""
    values = {}
    for name, _label in BRANDING_FORM:
        value = page.arg(name).strip()
        default = DEFAULT_COLOURS.get(name)
        if default and value.lower() == default and not getattr(current, name, ""):
            value = ""
        values[name] = value
    return values


def branding_changes(page: Page, current: Branding | None = None) -> dict[str, object]:
    """L{branding_values}, plus the host names when the operator sent them (one per line or
    comma-separated; only the operator may assign them, so no other form has the field)."""
    changes: dict[str, object] = dict(branding_values(page, current))
    if page.caller.is_operator and page.request.args.get(b"hostnames") is not None:
        changes["hostnames"] = [h for h in re.split(r"[\s,]+", page.arg("hostnames")) if h]
    return changes


def logo_upload(page: Page) -> bytes | None:
    """The logo file the form carries, checked (L{InvalidInput} ``logo``), or None."""
    data = page.upload("logo")
    if not data:
        return None
    logo_type(data)
    return data


def shown_after_error(changes: Mapping[str, object]) -> dict[str, Any]:
    """What the form shows again after an error: what was sent."""
    strings = {k: v for k, v in changes.items() if isinstance(v, str)}
    shown: dict[str, Any] = branding_shown(Branding(**cast(dict[str, Any], strings)))
    if isinstance(changes.get("hostnames"), list):
        shown["hostnames"] = changes["hostnames"]
    return shown


def branding_shown(branding: Branding) -> dict[str, Any]:
    """A reseller's branding as the form shows it (colours never empty: see L{DEFAULT_COLOURS})."""
    shown = branding.as_json()
    for name, default in DEFAULT_COLOURS.items():
        shown[name] = shown[name] or default
    return shown


class TenantPages(PanelBase):
    # -- the list -------------------------------------------------------------------------------

    async def _tenants_page(
        self,
        page: Page,
        *,
        status: int = 200,
        form: str = "",
        errors: Mapping[str, str] | None = None,
        values: Mapping[str, str] | None = None,
    ) -> Body:
        _managers_only(page)
        caller = page.caller
        resellers = await tenants.list_resellers(self.ctx, caller) if caller.is_operator else []
        customers = await tenants.list_customers(self.ctx, caller)
        return page.render(
            "tenants.html",
            status,
            title="Resellers & customers" if caller.is_operator else "Customers",
            resellers=resellers,
            customers=customers,
            customer_counts=Counter(c.reseller for c in customers),
            branding_form=BRANDING_FORM,
            form=form,
            errors=dict(errors or {}),
            values=dict(values or {}),
            new_branding=branding_shown(Branding()),
        )

    @app.route("/tenants", methods=["GET"])
    async def tenants_list(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            return await self._tenants_page(page)

        return await self.show(request, handler)

    @app.route("/tenants/resellers", methods=["POST"])
    async def reseller_add(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            name = page.arg("name").strip()
            changes = branding_changes(page)
            try:
                logo = logo_upload(page)  # checked first: nothing is saved with a bad one
                added = await tenants.add_reseller(self.ctx, page.caller, name, changes)
                if logo is not None:
                    await set_reseller_logo(self.ctx, page.caller, added.name, logo)
            except (InvalidInput, AlreadyExists, Conflict) as e:
                return await self._tenants_page(
                    page,
                    status=409 if isinstance(e, Conflict) else 400,
                    form="reseller",
                    errors=field_errors(e, "name"),
                    values={"name": name, **shown_after_error(changes)},
                )
            page.notice(f"Reseller {added.name} added. Now add its admin account.")
            return page.redirect(f"/tenants/resellers/{added.name}")

        return await self.act(request, handler)

    @app.route("/tenants/customers", methods=["POST"])
    async def customer_add(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            name = page.arg("name").strip()
            reseller = page.arg("reseller").strip() if page.caller.is_operator else ""
            try:
                added = await tenants.add_customer(self.ctx, page.caller, name, reseller or None)
            except (InvalidInput, AlreadyExists) as e:
                return await self._tenants_page(
                    page,
                    status=400,
                    form="customer",
                    errors=field_errors(e, "name"),
                    values={"name": name, "reseller": reseller},
                )
            page.notice(f"Customer {added.name} added. Now add its admin account.")
            return page.redirect(f"/tenants/customers/{added.name}")

        return await self.act(request, handler)

    # -- one reseller ---------------------------------------------------------------------------

    async def _reseller_page(
        self,
        page: Page,
        name: str,
        *,
        status: int = 200,
        form: str = "",
        errors: Mapping[str, str] | None = None,
        values: Mapping[str, str] | None = None,
    ) -> Body:
        _managers_only(page)
        reseller = await tenants.show_reseller(self.ctx, page.caller, name)
        customers = await tenants.list_customers(self.ctx, page.caller, reseller.name)
        admins = [
            a
            for a in await accounts.list_admins(self.ctx, page.caller)
            if a.role == "reseller" and a.reseller == reseller.name
        ]
        shown = branding_shown(reseller.branding)
        if form == "branding" and values:
            shown.update(values)
        logo = await reseller_logo(self.ctx, page.caller, reseller.name)
        return page.render(
            "reseller.html",
            status,
            min_password=MIN_PASSWORD_LENGTH,
            title=f"Reseller {reseller.name}",
            reseller=reseller,
            customers=customers,
            admins=admins,
            branding_form=BRANDING_FORM,
            branding=shown,
            has_logo=logo is not None,
            form=form,
            errors=dict(errors or {}),
            values=dict(values or {}),
        )

    @app.route("/tenants/resellers/<string:name>", methods=["GET"])
    async def reseller_show(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            return await self._reseller_page(page, name)

        return await self.show(request, handler)

    @app.route("/reseller/branding", methods=["GET"])
    async def own_branding(self, request: IRequest) -> Body:
        """The nav's Branding: a reseller admin's own reseller page, at its branding form."""

        async def handler(page: Page) -> Body:
            if page.caller.role != "reseller":
                raise NotFound("page", "/reseller/branding")
            return page.redirect(f"/tenants/resellers/{page.caller.reseller}#branding")

        return await self.show(request, handler)

    @app.route("/tenants/resellers/<string:name>/branding", methods=["POST"])
    async def reseller_branding(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            current = await tenants.show_reseller(self.ctx, page.caller, name)
            changes = branding_changes(page, current.branding)
            try:
                logo = logo_upload(page)  # checked first: nothing is saved with a bad one
                await tenants.update_reseller(self.ctx, page.caller, current.name, changes)
                if logo is not None:
                    await set_reseller_logo(self.ctx, page.caller, current.name, logo)
                elif page.checked("clear_logo"):
                    await clear_reseller_logo(self.ctx, page.caller, current.name)
            except (InvalidInput, Conflict) as e:
                return await self._reseller_page(
                    page,
                    name,
                    status=409 if isinstance(e, Conflict) else 400,
                    form="branding",
                    errors=field_errors(e, "product_name"),
                    values=shown_after_error(changes),
                )
            page.notice(f"Branding of {current.name} saved.")
            return page.redirect(f"/tenants/resellers/{current.name}")

        return await self.act(request, handler)

    @app.route("/tenants/resellers/<string:name>/remove", methods=["POST"])
    async def reseller_remove(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            try:
                removed = await tenants.remove_reseller(self.ctx, page.caller, name)
            except Conflict as e:
                return await self._reseller_page(
                    page, name, status=409, form="remove", errors={"remove": str(e)}
                )
            page.notice(f"Reseller {removed.name} removed.")
            return page.redirect("/tenants")

        return await self.act(request, handler)

    @app.route("/tenants/resellers/<string:name>/admins", methods=["POST"])
    async def reseller_admin_add(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            reseller = await tenants.show_reseller(self.ctx, page.caller, name)
            return await self._add_admin(page, "reseller", reseller.name)

        return await self.act(request, handler)

    # -- one customer ---------------------------------------------------------------------------

    async def _customer_page(
        self,
        page: Page,
        name: str,
        *,
        status: int = 200,
        form: str = "",
        errors: Mapping[str, str] | None = None,
        values: Mapping[str, str] | None = None,
    ) -> Body:
        _managers_only(page)
        customer = await tenants.show_customer(self.ctx, page.caller, name)
        views = [
            v
            for v in await domains.list_domains(self.ctx, page.caller)
            if v.domain.customer == customer.name
        ]
        admins = [
            a
            for a in await accounts.list_admins(self.ctx, page.caller)
            if a.role == "customer" and a.customer == customer.name
        ]
        return page.render(
            "customer.html",
            status,
            min_password=MIN_PASSWORD_LENGTH,
            title=f"Customer {customer.name}",
            customer=customer,
            domains=views,
            admins=admins,
            form=form,
            errors=dict(errors or {}),
            values=dict(values or {}),
        )

    @app.route("/tenants/customers/<string:name>", methods=["GET"])
    async def customer_show(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            return await self._customer_page(page, name)

        return await self.show(request, handler)

    @app.route("/tenants/customers/<string:name>/remove", methods=["POST"])
    async def customer_remove(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            try:
                removed = await tenants.remove_customer(self.ctx, page.caller, name)
            except Conflict as e:
                return await self._customer_page(
                    page, name, status=409, form="remove", errors={"remove": str(e)}
                )
            page.notice(f"Customer {removed.name} removed.")
            return page.redirect("/tenants")

        return await self.act(request, handler)

    @app.route("/tenants/customers/<string:name>/admins", methods=["POST"])
    async def customer_admin_add(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            customer = await tenants.show_customer(self.ctx, page.caller, name)
            return await self._add_admin(page, "customer", customer.name)

        return await self.act(request, handler)

    # -- admin accounts under a tenant ----------------------------------------------------------

    async def _tenant_page(self, page: Page, account: AdminAccount, **kwargs: Any) -> Body:
        """The page of the tenant ``account`` belongs to, shown again (a form had errors)."""
        if account.role == "customer":
            return await self._customer_page(page, account.customer, **kwargs)
        return await self._reseller_page(page, account.reseller, **kwargs)

    def _tenant_path(self, account: AdminAccount) -> str:
        if account.role == "customer":
            return f"/tenants/customers/{account.customer}"
        return f"/tenants/resellers/{account.reseller}"

    async def _add_admin(self, page: Page, role: Role, tenant: str) -> Body:
        name = page.arg("name").strip()
        password = page.arg("password")
        tenant_of = {"reseller": tenant} if role == "reseller" else {"customer": tenant}
        try:
            if password != page.arg("password2"):
                raise InvalidInput("password2", "the two passwords differ")
            added = await accounts.add_admin(
                self.ctx, page.caller, name, role, password, passwords=self.passwords, **tenant_of
            )
        except (InvalidInput, AlreadyExists) as e:
            show = self._customer_page if role == "customer" else self._reseller_page
            return await show(
                page,
                tenant,
                status=400,
                form="admin",
                errors=field_errors(e, "name"),
                values={"name": name},
            )
        page.notice(f"Admin account {added.name} added; give its password to its owner.")
        return page.redirect(self._tenant_path(added))

    @app.route("/tenants/admins/<string:name>/password", methods=["POST"])
    async def admin_password(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            account = await accounts.show_admin(self.ctx, page.caller, name)
            if account.name == page.caller.name or account.role == "operator":
                raise NotFound("admin", name)  # your own: the Account page
            password = page.arg("password")
            try:
                if password != page.arg("password2"):
                    raise InvalidInput("password2", "the two passwords differ")
                await accounts.passwd(
                    self.ctx, page.caller, account.name, password, passwords=self.passwords
                )
            except InvalidInput as e:
                return await self._tenant_page(
                    page,
                    account,
                    status=400,
                    form=f"password:{account.name}",
                    errors=field_errors(e, "password"),
                )
            # Its sessions carry the old password's stamp and end anyway; end them now.
            self.sessions.end_account(account.name)
            page.notice(f"New password set for {account.name}; its sessions were logged out.")
            return page.redirect(self._tenant_path(account))

        return await self.act(request, handler)

    @app.route("/tenants/admins/<string:name>/totp-off", methods=["POST"])
    async def admin_totp_off(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            account = await accounts.show_admin(self.ctx, page.caller, name)
            if account.name == page.caller.name or account.role == "operator":
                raise NotFound("admin", name)  # your own: the Account page
            await accounts.disable_totp(self.ctx, page.caller, account.name)
            page.notice(f"TOTP turned off for {account.name}.")
            return page.redirect(self._tenant_path(account))

        return await self.act(request, handler)

    @app.route("/tenants/admins/<string:name>/remove", methods=["POST"])
    async def admin_remove(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page) -> Body:
            _managers_only(page)
            account = await accounts.show_admin(self.ctx, page.caller, name)
            if account.role == "operator":
                raise NotFound("admin", name)
            await accounts.remove_admin(self.ctx, page.caller, account.name)
            self.sessions.end_account(account.name)
            page.notice(f"Admin account {account.name} removed.")
            return page.redirect(self._tenant_path(account))

        return await self.act(request, handler)
