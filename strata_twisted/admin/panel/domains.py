"""
The domain pages (#14): the list of protected domains, Continuity → Add Domain, and a domain's
settings.  The add and settings forms share their fields (``_domain_fields.html``); a form with
any bad field is shown again with status 400, the values as typed and each error beside its
field, and nothing is saved (every field is checked before the one core operation that stores).
After adding, the browser lands on the domain's page, which says how to route mail to Strata
(configurations A, B and C).  The domain's own page and its forms are in L{domain_page}.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, PanelBase, field_errors, url
from strata_twisted.core.admin import domains, tenants
from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import (
    DELIVERY_MODES,
    PORTAL_POLICIES,
    TLS_POLICIES,
    Customer,
    Domain,
    display_domain,
)

app = PanelBase.app

DAY: Final = 86400.0
# The delivery modes as the product description names them (the browser test finds them).
MODE_LABELS: Final = {"relay": "Relay only", "both": "Both (local + relay)"}
TLS_LABELS: Final = {
    "none": "Never encrypt",
    "opportunistic": "Encrypt when offered (opportunistic)",
    "required": "Encrypt or do not deliver (required)",
    "verify": "Encrypt and verify the certificate (verify)",
}
PORTAL_LABELS: Final = {
    "outage": "Open during an outage (and a grace period after)",
    "always": "Always open",
    "off": "Never open",
    "open": "Open now, for a drill",
}
# Number fields: (form field, whole number?, how many seconds one unit is (None: not a time)).
_NUMBERS: Final = (
    ("retention_days", True, None),
    ("queue_lifetime", False, DAY),
    ("probe_interval", False, 1.0),
    ("down_after", True, None),
    ("up_after", True, None),
)
_UNIT_TEXT: Final = {"queue_lifetime": "days", "probe_interval": "seconds"}
_CHECKBOXES: Final = ("monitored", "hold_rejected", "accept_unknown")
_TEXTS: Final = ("relay", "mode", "alert_email", "tls_policy", "portal", "alert_webhook")
# The fields shown unfolded; an error in any other opens "Advanced settings".
_MAIN_FIELDS: Final = frozenset({"name", "customer", "relay", "mode", "monitored", "alert_email"})


def _number_text(value: float | int | None, unit: float | None) -> str:
    if value is None:
        return ""
    return f"{value / unit:g}" if unit else str(value)


def default_values() -> dict[str, Any]:
    """What a new domain's form shows: the defaults of L{Domain}."""
    return {
        "name": "", "customer": "", "relay": "", "mode": "relay", "monitored": True,
        "alert_email": "", "tls_policy": "opportunistic", "portal": "outage",
        "hold_rejected": False, "accept_unknown": False, "alert_webhook": "",
        **{field: "" for field, _, _ in _NUMBERS},
    }  # fmt: skip


def domain_values(domain: Domain) -> dict[str, Any]:
    """A domain's settings as its settings form shows them."""
    values: dict[str, Any] = {
        "name": domain.name, "customer": domain.customer, "relay": str(domain.relay),
        "mode": domain.mode, "monitored": domain.monitored,
        "alert_email": ", ".join(domain.alert_emails), "tls_policy": domain.tls_policy,
        "portal": domain.portal, "hold_rejected": domain.hold_rejected,
        "accept_unknown": domain.accept_unknown, "alert_webhook": domain.alert_webhook or "",
    }  # fmt: skip
    for field, _, unit in _NUMBERS:
        values[field] = _number_text(getattr(domain, field), unit)
    return values


def _posted(page: Page, field: str) -> bool:
    """Whether the form has ``field`` at all (a field it lacks keeps its value)."""
    return field.encode("ascii") in page.request.args


def posted_values(page: Page, base: dict[str, Any]) -> dict[str, Any]:
    """The form as posted, to show again when it has errors (never the webhook's secret); a
    field the post lacks keeps its value in ``base``."""
    values = dict(base)
    for field in ("name", "customer", *_TEXTS, *(f for f, _, _ in _NUMBERS)):
        if _posted(page, field):
            values[field] = page.arg(field).strip()
    values.update({f: page.checked(f) for f in _CHECKBOXES})
    return values


def posted_fields(page: Page, adding: bool) -> tuple[dict[str, object], dict[str, str]]:
    """The posted settings as L{domains.check_domain_fields} takes them, and every bad one's
    error by field (L{domains.field_problems}).  Blank numbers: the global default (None).  A
    blank webhook Authorization: none when adding, unchanged when editing."""
    fields: dict[str, object] = {f: page.arg(f).strip() for f in _TEXTS if _posted(page, f)}
    fields.update({f: page.checked(f) for f in _CHECKBOXES})
    errors: dict[str, str] = {}
    for field, whole, unit in _NUMBERS:
        if not _posted(page, field):
            continue
        text = page.arg(field).strip()
        if not text:
            fields[field] = None
            continue
        try:
            number: float | int = int(text) if whole else float(text) * (unit or 1.0)
        except ValueError:
            errors[field] = "expected a whole number" if whole else "expected a number"
            continue
        fields[field] = number
    auth = page.arg("alert_webhook_auth").strip()
    if auth:
        fields["alert_webhook_auth"] = auth
    elif adding or not fields.get("alert_webhook"):
        fields["alert_webhook_auth"] = None
    for field, problem in domains.field_problems(
        {k: v for k, v in fields.items() if k not in errors}
    ).items():
        unit_text = _UNIT_TEXT.get(field)
        if unit_text == "days":  # core speaks seconds; this field is in days
            problem = "expected a positive number of days, at most 3650"
        errors[field] = problem
    return fields, errors


class DomainPages(PanelBase):
    def render_values(self) -> dict[str, Any]:
        """What every domain page's template uses besides its own values."""
        return {
            "display": display_domain,
            "mode_labels": MODE_LABELS,
        }

    def form_context(self, values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
        return {
            "values": values,
            "errors": errors,
            "advanced_open": bool(set(errors) - _MAIN_FIELDS),
            "modes": [(m, MODE_LABELS[m]) for m in DELIVERY_MODES],
            "tls_policies": [(p, TLS_LABELS[p]) for p in TLS_POLICIES],
            "portal_policies": [(p, PORTAL_LABELS[p]) for p in PORTAL_POLICIES],
            **self.render_values(),
        }

    @app.route("/domains", methods=["GET"])
    async def domain_list(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            views = await domains.list_domains(self.ctx, page.caller)
            return page.render(
                "domains.html", title="Domains", domains=views, **self.render_values()
            )

        return await self.show(request, handler)

    async def _customers(self, page: Page) -> list[Customer]:
        if page.caller.role == "customer":
            return []
        return await tenants.list_customers(self.ctx, page.caller)

    async def _add_form(
        self, page: Page, values: dict[str, Any], errors: dict[str, str], status: int = 200
    ) -> Body:
        return page.render(
            "domain_add.html",
            status,
            title="Add Domain",
            customers=await self._customers(page),
            **self.form_context(values, errors),
        )

    @app.route("/domains/add", methods=["GET"])
    async def domain_add_form(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            return await self._add_form(page, default_values(), {})

        return await self.show(request, handler)

    @app.route("/domains/add", methods=["POST"])
    async def domain_add(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            values = posted_values(page, default_values())
            fields, errors = posted_fields(page, adding=True)
            name = values["name"]
            if not name:
                errors["name"] = "enter the domain name, such as example.com"
            else:
                try:
                    domain_name(name)
                except InvalidInput as e:
                    errors["name"] = e.message
            if not values["relay"] and "relay" in errors:
                errors["relay"] = "enter the primary mail server: HOST or HOST:PORT"
            if errors:
                return await self._add_form(page, values, errors, 400)
            customer = values["customer"] if page.caller.role != "customer" else None
            try:
                added = await domains.add_domain(
                    self.ctx, page.caller, name, fields, customer or None
                )
            except NotFound as e:
                if e.kind != "customer":
                    raise
                return await self._add_form(page, values, {"customer": str(e)}, 400)
            except (InvalidInput, AlreadyExists) as e:
                return await self._add_form(page, values, field_errors(e, "name"), 400)
            page.notice(
                f"{display_domain(added.name)} is protected now. Route its mail to Strata as "
                "shown below."
            )
            return page.redirect(url(f"/domains/{added.name}", added=1))

        return await self.act(request, handler)

    async def _settings_form(
        self,
        page: Page,
        name: str,
        values: dict[str, Any] | None,
        errors: dict[str, str],
        status: int = 200,
    ) -> Body:
        view = await domains.show_domain(self.ctx, page.caller, name)
        return page.render(
            "domain_settings.html",
            status,
            title=f"Settings of {display_domain(view.domain.name)}",
            view=view,
            webhook_auth_set=view.domain.alert_webhook_auth is not None,
            **self.form_context(values or domain_values(view.domain), errors),
        )

    @app.route("/domains/<string:name>/settings", methods=["GET"])
    async def domain_settings_form(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            return await self._settings_form(page, name, None, {})

        return await self.show(request, handler, name=name)

    @app.route("/domains/<string:name>/settings", methods=["POST"])
    async def domain_settings(self, request: IRequest, name: str) -> Body:
        async def handler(page: Page, name: str) -> Body:
            # Tenancy first: another tenant's domain is not found, whatever the form says.
            view = await domains.show_domain(self.ctx, page.caller, name)
            values = posted_values(page, domain_values(view.domain))
            fields, errors = posted_fields(page, adding=False)
            if errors:
                return await self._settings_form(page, name, values, errors, 400)
            try:
                await domains.update_domain(self.ctx, page.caller, view.domain.name, fields)
            except InvalidInput as e:
                return await self._settings_form(page, name, values, field_errors(e), 400)
            page.notice(f"Saved the settings of {display_domain(view.domain.name)}.")
            return page.redirect(f"/domains/{view.domain.name}")

        return await self.act(request, handler, name=name)
