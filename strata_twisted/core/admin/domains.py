"""
Protected domains: list, show, add, update, remove (#13).

A domain's settings arrive as a mapping of L{Domain} field names to typed values (the API's
JSON body, or what the CLI parsed from its options); L{check_domain_fields} validates them all
before anything is stored, and names the offending field.  Reading needs scope ``read``;
adding, removing and changing a domain need ``admin``, except a portal drill (forcing the
portal ``open`` and back), which is runtime state: ``operate`` may do that.  Every change is
recorded as an event (as before) and in the audit log.  Secrets (the webhook's Authorization,
the query string of its URL) never reach either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit

from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.core.alerts import redacted
from strata_twisted.core.portal import PortalState, portal_state
from strata_twisted.errors import AlreadyExists, DomainExists, NoSuchDomain, NotFound
from strata_twisted.model import (
    DELIVERY_MODES,
    PORTAL_POLICIES,
    TLS_POLICIES,
    Domain,
    DomainStatus,
    Outage,
    QueueStats,
    RelayTarget,
    canonical_address,
    display_domain,
)

# Retention beyond a century is a typo, not a policy (and keeps the number storable).
MAX_RETENTION_DAYS: Final = 36500
# Bounds that keep every value storable (SQLite's integers are 64-bit: a larger up_after was a
# storage error, found by Schemathesis) and every timer computable.
MAX_SECONDS: Final = 10 * 365 * 86400
MAX_PROBES_IN_A_ROW: Final = 10_000
_MAX_WEBHOOK_URL: Final = 2048

# The settings an admin may give, by Domain field name.
SETTINGS: Final = (
    "relay",
    "mode",
    "tls_policy",
    "hold_rejected",
    "monitored",
    "accept_unknown",
    "queue_lifetime",
    "probe_interval",
    "down_after",
    "up_after",
    "portal",
    "retention_days",
    "alert_email",
    "alert_webhook",
    "alert_webhook_auth",
)


def _choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidInput(field, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(field, f"expected true or false, got {value!r}")
    return value


def _seconds(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInput(field, f"expected a positive number of seconds, got {value!r}")
    if value != value or value > MAX_SECONDS:
        raise InvalidInput(field, f"expected at most {MAX_SECONDS} seconds (ten years)")
    return float(value)


def _whole(field: str, value: object, low: int, high: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(field, f"expected a whole number >= {low}, got {value!r}")
    if high is not None and value > high:
        raise InvalidInput(field, f"expected a whole number from {low} to {high}, got {value!r}")
    return value


def _relay(value: object) -> RelayTarget:
    if isinstance(value, RelayTarget):
        return value
    if not isinstance(value, str):
        raise InvalidInput("relay", f"expected HOST[:PORT], got {value!r}")
    try:
        return RelayTarget.parse(value)
    except ValueError as e:
        raise InvalidInput("relay", str(e)) from None


MAX_ALERT_EMAILS: Final = 20


def _alert_email(value: object) -> str | None:
    """Addresses ``local@domain`` (domains kept in ASCII form), as a list or one string with
    commas between them, stored comma-separated (L{Domain.alert_emails}); "", [] or None
    clears them."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("alert_email", f"expected addresses, got {value!r}")
    addresses: list[str] = []
    for text in (v.strip() for v in value):
        try:
            address = canonical_address(text)
        except ValueError as e:
            raise InvalidInput("alert_email", str(e)) from None
        if "," in address:
            raise InvalidInput("alert_email", f"{text!r}: an alert address has no comma")
        if address not in addresses:
            addresses.append(address)
    if len(addresses) > MAX_ALERT_EMAILS:
        raise InvalidInput("alert_email", f"at most {MAX_ALERT_EMAILS} addresses")
    return ", ".join(addresses) or None


def _alert_webhook(value: object) -> str | None:
    """An ``http://`` or ``https://`` URL with a host; "" or None clears it.  The message never
    echoes the URL: its query string may carry the gateway's key."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput("alert_webhook", "not a usable URL: expected a string")
    problem = ""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        problem = str(e)
    else:
        if parts.scheme.lower() not in ("http", "https"):
            problem = "only http:// and https:// URLs are supported"
        elif not parts.hostname:
            problem = "the URL has no host"
    if not problem and (not value.isascii() or not value.isprintable() or " " in value):
        problem = "spaces, control and non-ASCII characters must be %-encoded"
    if not problem and len(value) > _MAX_WEBHOOK_URL:
        problem = f"longer than {_MAX_WEBHOOK_URL} characters"
    if problem:
        raise InvalidInput("alert_webhook", f"not a usable URL: {problem}")
    return value


def _alert_webhook_auth(value: object) -> str | None:
    """The webhook's Authorization header value; "" or None clears it.  Never echoed."""
    if value is None or value == "":
        return None
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isprintable()
        or value != value.strip()
    ):
        raise InvalidInput(
            "alert_webhook_auth",
            'expected printable ASCII without leading or trailing spaces, such as "Bearer TOKEN"',
        )
    return value


def check_domain_fields(fields: Mapping[str, object]) -> dict[str, Any]:
    """
    ``fields`` validated, as L{Domain} field values: the first bad one raises L{InvalidInput}
    naming it.  Pure, so a layer may check its input before it does anything else (the CLI,
    before it makes a new data directory).
    """
    checked: dict[str, Any] = {}
    for field, value in fields.items():
        if field == "relay":
            checked[field] = _relay(value)
        elif field == "mode":
            checked[field] = _choice(field, value, DELIVERY_MODES)
        elif field == "tls_policy":
            checked[field] = _choice(field, value, TLS_POLICIES)
        elif field == "portal":
            checked[field] = _choice(field, value, PORTAL_POLICIES)
        elif field in ("hold_rejected", "monitored", "accept_unknown"):
            checked[field] = _flag(field, value)
        elif field in ("queue_lifetime", "probe_interval"):
            checked[field] = _seconds(field, value)
        elif field in ("down_after", "up_after"):
            checked[field] = _whole(field, value, 1, MAX_PROBES_IN_A_ROW)
        elif field == "retention_days":
            checked[field] = _whole(field, value, 1, MAX_RETENTION_DAYS)
        elif field == "alert_email":
            checked[field] = _alert_email(value)
        elif field == "alert_webhook":
            checked[field] = _alert_webhook(value)
        elif field == "alert_webhook_auth":
            checked[field] = _alert_webhook_auth(value)
        else:
            raise InvalidInput(field, f"{field!r} is not a domain setting")
    return checked


def field_problems(fields: Mapping[str, object]) -> dict[str, str]:
    """Every bad field of ``fields`` with its message ({} when all are good): a form shows
    each beside its field, where L{check_domain_fields} stops at the first."""
    problems: dict[str, str] = {}
    for field, value in fields.items():
        try:
            check_domain_fields({field: value})
        except InvalidInput as e:
            problems[field] = e.message
    return problems


def event_json(domain: Domain) -> dict[str, Any]:
    """A domain's settings for the event and audit logs: the webhook URL without its query or
    user info (they often carry the gateway's key); the Authorization value is never in
    ``as_json``."""
    data = domain.as_json()
    if domain.alert_webhook is not None:
        data["alert_webhook"] = redacted(domain.alert_webhook)
    return data


@dataclass(frozen=True)
class DomainView:
    """
    A domain as an admin sees it: its settings, owner, queue depth and age, what the monitor
    knows of its primary, and whether its webmail portal is open now (and why).
    """

    domain: Domain
    owner: Owner
    queued: int
    held: int
    oldest_received_at: float | None
    status: DomainStatus | None
    last_delivery_at: float | None
    portal: PortalState
    retention_days: int  # in effect: the domain's own, or the global default

    @property
    def health(self) -> str:
        return self.status.health if self.status else "unknown"

    def as_json(self) -> dict[str, Any]:
        status = self.status
        data = self.domain.as_json()
        data.update(
            {
                "reseller": self.owner.reseller or None,
                "queued": self.queued,
                "held": self.held,
                "oldest_received_at": self.oldest_received_at,
                "health": self.health,
                "health_since": status.since if status else None,
                "last_probe_at": status.last_probe_at if status else None,
                "last_probe_error": status.last_probe_error if status else None,
                "probe_failures_in_a_row": status.consecutive_failures if status else 0,
                "probe_successes_in_a_row": status.consecutive_successes if status else 0,
                "last_delivery_at": self.last_delivery_at,
                "portal_open": self.portal.open,
                "portal_reason": self.portal.reason,
                "portal_since": self.portal.since,
                "portal_until": self.portal.until,
                "retention_days_in_effect": self.retention_days,
            }
        )
        return data


async def _view(
    ctx: AdminContext, domain: Domain, stats: QueueStats | None, owner: Owner
) -> DomainView:
    status: DomainStatus | None = await ctx.monitor.get_status(domain.name)
    # The relay records each delivery on its queue entry; the monitor's status may know one too.
    delivered = [await ctx.queue.last_delivered_at(domain.name)]
    delivered.append(status.last_delivery_at if status else None)
    # The same rules the server's IMAP login applies (core/portal.py), from the newest outage.
    outages: list[Outage] = await ctx.monitor.list_outages(domain.name, 1)
    now = ctx.clock.seconds()
    portal = portal_state(
        domain, outages[-1] if outages else None, now, ctx.settings.imap.portal_grace
    )
    retention = domain.retention_days
    if retention is None:
        retention = ctx.settings.imap.retention_days
    return DomainView(
        domain=domain,
        owner=owner,
        queued=stats.queued if stats else 0,
        held=stats.held if stats else 0,
        oldest_received_at=stats.oldest_received_at if stats else None,
        status=status,
        last_delivery_at=max((t for t in delivered if t is not None), default=None),
        portal=portal,
        retention_days=retention,
    )


async def _stats(ctx: AdminContext) -> dict[str, QueueStats]:
    return {s.domain: s for s in await ctx.queue.queue_stats()}


async def list_domains(ctx: AdminContext, caller: Caller) -> list[DomainView]:
    """Every domain ``caller`` may see, sorted by name, with its health, queue and portal."""
    require(caller, "read")
    stats = await _stats(ctx)
    views = []
    for domain in await ctx.tenancy.domains(caller):
        owner = await ctx.tenancy.domain_owner(domain)
        views.append(await _view(ctx, domain, stats.get(domain.name), owner))
    return views


async def domain_choices(ctx: AdminContext, caller: Caller) -> list[str]:
    """The names of the domains ``caller`` may see, sorted: what a page offers to choose from
    (one store read, where L{list_domains} reads each domain's queue and health too)."""
    require(caller, "read")
    return [d.name for d in await ctx.tenancy.domains(caller)]


async def show_domain(ctx: AdminContext, caller: Caller, name: str) -> DomainView:
    """One domain, or L{NotFound} (also for another tenant's)."""
    domain = await ctx.tenancy.domain(caller, domain_name(name))
    require(caller, "read")
    owner = await ctx.tenancy.domain_owner(domain)
    return await _view(ctx, domain, (await _stats(ctx)).get(domain.name), owner)


async def _new_domain_customer(ctx: AdminContext, caller: Caller, customer: str | None) -> str:
    """The customer a new domain goes under: one ``caller`` may see; a customer admin's own
    by default; a reseller admin must name one of its customers; the operator's own ("")."""
    if customer:
        found = await ctx.tenancy.customer(caller, customer)
        return found.name
    if caller.role == "customer":
        return caller.customer
    if caller.role == "reseller":
        raise InvalidInput(
            "customer", "a reseller's domain belongs to one of its customers: name it"
        )
    return ""


async def add_domain(
    ctx: AdminContext,
    caller: Caller,
    name: str,
    fields: Mapping[str, object],
    customer: str | None = None,
) -> Domain:
    """
    Protect the domain ``name``: ``fields`` must have ``relay``; the rest default as in
    L{Domain}.  It goes under ``customer`` (see L{_new_domain_customer}).  L{AlreadyExists} if
    it is protected already, in any spelling (and whoever's it is: domain names are global).
    """
    canonical = domain_name(name)
    if "relay" not in fields:
        raise InvalidInput("relay", "a new domain needs its primary: relay HOST[:PORT]")
    checked = check_domain_fields(fields)
    owner_customer = await _new_domain_customer(ctx, caller, customer)
    require(caller, "admin")
    try:
        added: Domain = await ctx.domains.add_domain(
            Domain(name=canonical, customer=owner_customer, **checked)
        )
    except DomainExists:
        raise AlreadyExists("domain", canonical) from None
    shown = display_domain(canonical)
    data = event_json(added)
    await ctx.events.record_event("domain.added", f"protecting {shown}", canonical, data)
    owner = await ctx.tenancy.domain_owner(added)
    await ctx.auditor.record(caller, "domain.add", canonical, owner, data)
    return added


@dataclass(frozen=True)
class DomainUpdate:
    before: Domain
    after: Domain


def _is_drill(domain: Domain, checked: Mapping[str, Any]) -> bool:
    """Only the portal changes, into or out of a drill (forced ``open``)."""
    return set(checked) == {"portal"} and "open" in (checked["portal"], domain.portal)


async def update_domain(
    ctx: AdminContext, caller: Caller, name: str, fields: Mapping[str, object]
) -> DomainUpdate:
    """Change the settings given in ``fields``; the others stay.  ``admin`` scope, or
    ``operate`` for a portal drill."""
    domain = await ctx.tenancy.domain(caller, domain_name(name))
    if not fields:
        raise InvalidInput("fields", "nothing to change")
    checked = check_domain_fields(fields)
    require(caller, "operate" if _is_drill(domain, checked) else "admin")
    try:
        updated: Domain = await ctx.domains.update_domain(replace(domain, **checked))
    except NoSuchDomain:  # removed since we looked
        raise NotFound(
            "domain", domain.name, f"{display_domain(domain.name)} is not a protected domain"
        ) from None
    data = event_json(updated)
    await ctx.events.record_event(
        "domain.updated", f"updated {display_domain(domain.name)}", domain.name, data
    )
    owner = await ctx.tenancy.domain_owner(updated)
    await ctx.auditor.record(caller, "domain.update", domain.name, owner, data)
    return DomainUpdate(domain, updated)


@dataclass(frozen=True)
class DomainRemoved:
    """A domain no longer protected; its queued and held mail stays where it is."""

    name: str
    queued: int
    held: int


async def remove_domain(ctx: AdminContext, caller: Caller, name: str) -> DomainRemoved:
    """Stop protecting ``name``.  Its queued mail stays queued (not relayed until it is
    protected again, or bounced, deleted or expired); its users and keys stay too."""
    domain = await ctx.tenancy.domain(caller, domain_name(name))
    require(caller, "admin")
    owner = await ctx.tenancy.domain_owner(domain)
    shown = display_domain(domain.name)
    try:
        await ctx.domains.remove_domain(domain.name)
    except NoSuchDomain:
        raise NotFound("domain", domain.name, f"{shown} is not a protected domain") from None
    await ctx.events.record_event("domain.removed", f"stopped protecting {shown}", domain.name)
    await ctx.auditor.record(caller, "domain.remove", domain.name, owner)
    stats = (await _stats(ctx)).get(domain.name)
    return DomainRemoved(domain.name, stats.queued if stats else 0, stats.held if stats else 0)
