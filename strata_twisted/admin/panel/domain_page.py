"""
A protected domain's page (#14): its health and portal, how to route its mail to Strata
(configurations A, B and C), the "Open the portal for a drill" switch, its synced users
(passwd-file upload, add, reset a password, remove), its DKIM key, "Send a test alert", the
failover test checklist with the live state of each step (L{checklist.failover_checklist}),
and removing it.

Every form posts to a path under ``/domains/<name>/`` and goes through one core operation,
which checks tenancy first: another tenant's domain is "not found" (404) and nothing changes.
A form with a bad field shows the page again with status 400 and the error beside that field
(keyed ``form:field``, so two forms with a ``password`` field keep their errors apart).
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.defer import fail
from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, field_errors
from strata_twisted.admin.panel.domains import DomainPages
from strata_twisted.core.admin import alerts, checklist, dkim, domains, users
from strata_twisted.core.admin._common import domain_name, user_address
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.dkim import ALGORITHMS
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import Domain, Outage, display_domain

app = DomainPages.app

# What ending a drill puts the portal back to (README: ``--portal open``, then ``--portal outage``).
AFTER_DRILL: Final = "outage"


def _no_webhook_sender(domain: Domain, outage: Outage, queued: int) -> Any:
    """Where the process has no HTTP agent for webhooks (a panel built without the server)."""
    return fail(RuntimeError("webhook calls are not available in this process"))


def _prefixed(form: str, errors: dict[str, str]) -> dict[str, str]:
    return {f"{form}:{field}": text for field, text in errors.items()}


class DomainPagePages(DomainPages):
    async def _domain_page(
        self,
        page: Page,
        name: str,
        status: int = 200,
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
    ) -> Body:
        view = await domains.show_domain(self.ctx, page.caller, name)
        found = view.domain.name
        steps = await checklist.failover_checklist(self.ctx, page.caller, found)
        return page.render(
            "domain.html",
            status,
            title=display_domain(found),
            view=view,
            shown=display_domain(found),
            users=await users.list_users(self.ctx, page.caller, found),
            dkim=(await dkim.show_dkim(self.ctx, page.caller, found)).as_json(),
            checklist=steps,
            intake=steps.intake,
            mx_record=steps.intake.mx_record(found),
            added=page.arg("added") == "1",
            algorithms=ALGORITHMS,
            errors=errors or {},
            values=values or {},
            **self.render_values(),
        )

    @app.route("/domains/<string:name>", methods=["GET"])
    async def domain_page(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            return await self._domain_page(page, name)

        return await self.show(request, handler, name=name)

    # -- the portal drill

    @app.route("/domains/<string:name>/portal", methods=["POST"])
    async def domain_portal(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            opening = page.arg("drill") == "open"
            change = await domains.update_domain(
                self.ctx, page.caller, name, {"portal": "open" if opening else AFTER_DRILL}
            )
            shown = display_domain(change.after.name)
            page.notice(
                f"The portal of {shown} is open for a drill: users may log in to webmail now."
                if opening
                else f"The drill of {shown} is over: the portal opens only during an outage."
            )
            return page.redirect(f"/domains/{change.after.name}")

        return await self.act(request, handler, name=name)

    # -- users

    @app.route("/domains/<string:name>/users/add", methods=["POST"])
    async def domain_user_add(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            view = await domains.show_domain(self.ctx, page.caller, name)
            address = page.arg("address").strip()
            if address and "@" not in address:
                address = f"{address}@{view.domain.name}"
            try:
                if user_address(address)[1] != view.domain.name:
                    raise InvalidInput(
                        "address", f"the address must be at {display_domain(view.domain.name)}"
                    )
                added = await users.add_user(
                    self.ctx, page.caller, address, page.arg("password") or None
                )
            except (InvalidInput, AlreadyExists) as e:
                errors = _prefixed("add_user", field_errors(e, "address"))
                return await self._domain_page(
                    page, name, 400, errors, {"add_user:address": page.arg("address")}
                )
            page.notice(f"Added the user {added.address}.")
            return page.redirect(f"/domains/{view.domain.name}#users")

        return await self.act(request, handler, name=name)

    @app.route("/domains/<string:name>/users/password", methods=["POST"])
    async def domain_user_password(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            view = await domains.show_domain(self.ctx, page.caller, name)
            address = _user_of(view.domain.name, page.arg("address"))
            try:
                changed = await users.set_password(
                    self.ctx, page.caller, address, page.arg("password") or None
                )
            except InvalidInput as e:
                errors = _prefixed(f"password:{address}", field_errors(e, "password"))
                return await self._domain_page(page, name, 400, errors)
            page.notice(f"Changed the password of {changed.address}.")
            return page.redirect(f"/domains/{view.domain.name}#users")

        return await self.act(request, handler, name=name)

    @app.route("/domains/<string:name>/users/remove", methods=["POST"])
    async def domain_user_remove(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            view = await domains.show_domain(self.ctx, page.caller, name)
            address = _user_of(view.domain.name, page.arg("address"))
            removed = await users.remove_user(self.ctx, page.caller, address)
            left = "" if removed.users_left else " The domain has no user list now: intake "
            left += "" if removed.users_left else "accepts mail for every address."
            page.notice(f"Removed the user {removed.address}.{left}")
            return page.redirect(f"/domains/{view.domain.name}#users")

        return await self.act(request, handler, name=name)

    @app.route("/domains/<string:name>/users/import", methods=["POST"])
    async def domain_user_import(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            merge = page.arg("mode") == "merge"
            data = page.upload("file")
            try:
                if not data:
                    raise InvalidInput("file", "choose a passwd-file to upload")
                result = await users.import_users(self.ctx, page.caller, name, data, merge)
            except InvalidInput as e:
                errors = _prefixed("import", field_errors(e, "file"))
                if "import:passwd_file" in errors:
                    errors["import:file"] = errors.pop("import:passwd_file")
                return await self._domain_page(page, name, 400, errors)
            how = "merged into" if merge else "replaced"
            page.notice(
                f"Imported {result.users} user(s) ({how} the list): "
                f"{users.change_text(result.change)}."
            )
            return page.redirect(f"/domains/{result.domain}#users")

        return await self.act(request, handler, name=name)

    # -- DKIM

    @app.route("/domains/<string:name>/dkim", methods=["POST"])
    async def domain_dkim(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            selector = page.arg("selector").strip() or None
            try:
                made = await dkim.generate_dkim(
                    self.ctx,
                    page.caller,
                    name,
                    selector,
                    page.arg("algorithm", "rsa"),
                    page.checked("replace"),
                )
            except (InvalidInput, AlreadyExists) as e:
                errors = _prefixed("dkim", field_errors(e, "selector"))
                return await self._domain_page(
                    page, name, 400, errors, {"dkim:selector": page.arg("selector")}
                )
            key = made.as_json()
            page.notice(
                f"Generated the DKIM key {key['selector']}: publish its TXT record below. It "
                "signs this domain's mail from now on."
            )
            return page.redirect(f"/domains/{made.domain}#dkim")

        return await self.act(request, handler, name=name)

    # -- alerts

    @app.route("/domains/<string:name>/alert-test", methods=["POST"])
    async def domain_alert_test(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            sender = self.ctx.send_webhook or _no_webhook_sender
            try:
                result = await alerts.test_alert(self.ctx, page.caller, name, sender)
            except Conflict as e:
                page.notice(str(e), "error")
                return page.redirect(f"/domains/{domain_name(name)}#alerts")
            if result.webhook is not None:
                if result.webhook_error is None:
                    page.notice(f"Test alert delivered to the webhook {result.webhook}.")
                else:
                    page.notice(f"Test alert: {result.webhook_error}", "error")
            if result.email is not None:
                if result.email_error is None:
                    page.notice(f"Test alert email queued to {result.email}.")
                else:
                    page.notice(f"Test alert: {result.email_error}", "error")
            return page.redirect(f"/domains/{result.domain}#alerts")

        return await self.act(request, handler, name=name)

    # -- removing

    @app.route("/domains/<string:name>/remove", methods=["POST"])
    async def domain_remove(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            removed = await domains.remove_domain(self.ctx, page.caller, name)
            kept = ""
            if removed.queued or removed.held:
                kept = (
                    f" Its {removed.queued} queued and {removed.held} held message(s) stay in "
                    "the Queue Manager."
                )
            page.notice(f"Stopped protecting {display_domain(removed.name)}.{kept}")
            return page.redirect("/domains")

        return await self.act(request, handler, name=name)


def _user_of(domain: str, address: str) -> str:
    """``address`` when it is an address of ``domain`` (the page's), else L{NotFound}: a form
    on one domain's page never changes another domain's user."""
    address = address.strip()
    if user_address(address)[1] != domain:
        raise NotFound("user", address, f"{address} is not a user of this domain")
    return address
