"""
Resellers and customers (#13): operator → resellers → customers → domains.

Resellers are the operator's to add and remove; the operator brands them, and a reseller admin
may change its own reseller's brand but not its host names (#14).  Customers sit under a reseller or
directly under the operator: the operator may add one anywhere, a reseller admin under its own
reseller; a customer admin adds none.  Whatever a caller may not see is L{NotFound}, so a
reseller admin naming another reseller learns nothing.  Listing needs ``read``; every change
``admin``.  Removing one that still has something under it (customers, domains, admin accounts)
is refused (L{Conflict}): nothing is ever removed as a side effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import fields, replace
from typing import Final

from strata_twisted.core.admin._common import domain_name, tenant_name
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import Conflict, InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.errors import AlreadyExists, NotFound
from strata_twisted.model import Branding, Customer, Reseller

BRANDING_FIELDS = tuple(f.name for f in fields(Branding))
HOSTNAMES_FIELD: Final = "hostnames"
_MAX_BRANDING = 2048
MAX_HOSTNAMES: Final = 20


def _hostnames(value: object) -> tuple[str, ...]:
    """The canonical, sorted, distinct host names in ``value`` (a list of strings), or
    L{InvalidInput} naming ``hostnames``."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidInput(HOSTNAMES_FIELD, "expected a list of host names")
    if len(value) > MAX_HOSTNAMES:
        raise InvalidInput(HOSTNAMES_FIELD, f"at most {MAX_HOSTNAMES} host names")
    names = set()
    for item in value:
        if not isinstance(item, str):
            raise InvalidInput(HOSTNAMES_FIELD, "expected a list of host names")
        names.add(domain_name(item, HOSTNAMES_FIELD))
    return tuple(sorted(names))


def _branding(base: Branding, values: Mapping[str, object]) -> Branding:
    """``base`` with ``values`` (Branding field names → strings; ``hostnames`` → a list of host
    names) applied, checked."""
    checked: dict[str, object] = {}
    for key, value in values.items():
        if key not in BRANDING_FIELDS:
            raise InvalidInput(key, f"{key!r} is not a branding field")
        if key == HOSTNAMES_FIELD:
            checked[key] = _hostnames(value)
            continue
        if not isinstance(value, str) or len(value) > _MAX_BRANDING or not value.isprintable():
            raise InvalidInput(
                key, f"expected printable text of at most {_MAX_BRANDING} characters"
            )
        if key.endswith("_url") and value and not value.lower().startswith(("https://", "http://")):
            raise InvalidInput(key, "expected an http:// or https:// URL")
        checked[key] = value
    return replace(base, **checked)  # type: ignore[arg-type]


class HostnameTaken(Conflict):
    """A host name another reseller already has (API: 409 naming the field ``hostnames``)."""

    field = HOSTNAMES_FIELD

    def __init__(self, host: str) -> None:
        super().__init__("hostname", host, f"the host name {host} is already another reseller's")


async def _store_reseller(store: Awaitable[Reseller]) -> Reseller:
    """Await a store's add or update, turning a host name taken under its lock (another
    reseller's, or taken by another process meanwhile) into L{HostnameTaken}."""
    try:
        return await store
    except AlreadyExists as e:
        if e.kind == "hostname":
            raise HostnameTaken(e.name) from None
        raise


def _operator_only(caller: Caller, name: str) -> None:
    """Only the operator sees resellers it may change; to anybody else they do not exist."""
    if not caller.is_operator:
        raise NotFound("reseller", name)


# -- resellers -------------------------------------------------------------------------------


async def list_resellers(ctx: AdminContext, caller: Caller) -> list[Reseller]:
    """Every reseller (operator); a reseller admin's own; none for a customer admin."""
    require(caller, "read")
    every: list[Reseller] = await ctx.tenants.list_resellers()
    if caller.is_operator:
        return every
    if caller.role == "reseller":
        return [r for r in every if r.name == caller.reseller]
    return []


async def show_reseller(ctx: AdminContext, caller: Caller, name: str) -> Reseller:
    found = await ctx.tenancy.reseller(caller, name)
    require(caller, "read")
    return found


async def add_reseller(
    ctx: AdminContext, caller: Caller, name: str, branding: Mapping[str, object] | None = None
) -> Reseller:
    checked = tenant_name(name)
    _operator_only(caller, checked)
    require(caller, "admin")
    reseller = Reseller(checked, _branding(Branding(), branding or {}), ctx.clock.seconds())
    added = await _store_reseller(ctx.tenants.add_reseller(reseller))
    await ctx.auditor.record(
        caller, "reseller.add", checked, Owner(checked), added.branding.as_json()
    )
    return added


async def update_reseller(
    ctx: AdminContext, caller: Caller, name: str, branding: Mapping[str, object]
) -> Reseller:
    """Change the branding fields given; the others stay.  The operator changes any reseller's;
    a reseller admin its own brand (the white-label panel's Branding page), but not its host
    names: they decide which requests a brand answers, so the operator, who runs the DNS and
    the web server, assigns them."""
    found = await ctx.tenancy.reseller(caller, name)
    if not caller.is_operator and caller.reseller != found.name:
        raise NotFound("reseller", name)
    require(caller, "admin")
    if not caller.is_operator and HOSTNAMES_FIELD in branding:
        raise InvalidInput(HOSTNAMES_FIELD, "host names are assigned by the operator")
    if not branding:
        raise InvalidInput("branding", "nothing to change")
    updated = await _store_reseller(
        ctx.tenants.update_reseller(replace(found, branding=_branding(found.branding, branding)))
    )
    await ctx.auditor.record(
        caller, "reseller.update", found.name, Owner(found.name), dict(branding)
    )
    return updated


async def _accounts_under(ctx: AdminContext, reseller: str = "", customer: str = "") -> list[str]:
    names = []
    for account in await ctx.admins.list_admins():
        if customer and account.customer == customer:
            names.append(account.name)
        elif reseller and account.role == "reseller" and account.reseller == reseller:
            names.append(account.name)
    return names


async def remove_reseller(ctx: AdminContext, caller: Caller, name: str) -> Reseller:
    """Remove a reseller with nothing under it; L{Conflict} naming what is left otherwise."""
    _operator_only(caller, name)
    found = await ctx.tenancy.reseller(caller, name)
    require(caller, "admin")
    customers: list[Customer] = await ctx.tenants.list_customers(found.name)
    accounts = await _accounts_under(ctx, reseller=found.name)
    if customers or accounts:
        left = []
        if customers:
            left.append(
                f"{len(customers)} customer(s) ({', '.join(c.name for c in customers[:5])})"
            )
        if accounts:
            left.append(f"{len(accounts)} admin account(s) ({', '.join(accounts[:5])})")
        raise Conflict(
            "reseller",
            found.name,
            f"reseller {found.name} still has {' and '.join(left)}: remove them first",
        )
    await ctx.tenants.remove_reseller(found.name)
    await ctx.auditor.record(caller, "reseller.remove", found.name, Owner(found.name))
    return found


# -- customers -------------------------------------------------------------------------------


async def list_customers(
    ctx: AdminContext, caller: Caller, reseller: str | None = None
) -> list[Customer]:
    """The customers ``caller`` may see; only ``reseller``'s when given ("" = the operator's
    own)."""
    require(caller, "read")
    if reseller:
        await ctx.tenancy.reseller(caller, reseller)
    elif reseller == "" and not caller.is_operator:
        raise NotFound("reseller", "")
    every: list[Customer] = await ctx.tenants.list_customers(reseller)
    return [c for c in every if ctx.tenancy.sees_owner(caller, Owner(c.reseller, c.name))]


async def show_customer(ctx: AdminContext, caller: Caller, name: str) -> Customer:
    found = await ctx.tenancy.customer(caller, name)
    require(caller, "read")
    return found


async def add_customer(
    ctx: AdminContext, caller: Caller, name: str, reseller: str | None = None
) -> Customer:
    """A new customer under ``reseller`` (None or "": the operator's own; a reseller admin's
    go under its reseller whatever it names, if it names another: L{NotFound})."""
    checked = tenant_name(name)
    parent = reseller or ""
    if caller.role == "reseller":
        if parent and parent != caller.reseller:
            raise NotFound("reseller", parent)
        parent = caller.reseller
    elif caller.role == "customer":
        raise NotFound("reseller", parent)
    elif parent:
        await ctx.tenancy.reseller(caller, parent)
    require(caller, "admin")
    if await ctx.tenants.get_customer(checked) is not None:
        raise AlreadyExists("customer", checked)
    added: Customer = await ctx.tenants.add_customer(Customer(checked, parent, ctx.clock.seconds()))
    await ctx.auditor.record(caller, "customer.add", checked, Owner(parent, checked))
    return added


async def remove_customer(ctx: AdminContext, caller: Caller, name: str) -> Customer:
    """Remove a customer with no domains and no admin accounts; L{Conflict} otherwise."""
    found = await ctx.tenancy.customer(caller, name)
    require(caller, "admin")
    if caller.role == "customer":  # a customer admin cannot remove its own tenant
        raise NotFound("customer", name)
    domains = [d.name for d in await ctx.domains.list_domains() if d.customer == found.name]
    accounts = await _accounts_under(ctx, customer=found.name)
    if domains or accounts:
        left = []
        if domains:
            left.append(f"{len(domains)} domain(s) ({', '.join(sorted(domains)[:5])})")
        if accounts:
            left.append(f"{len(accounts)} admin account(s) ({', '.join(accounts[:5])})")
        raise Conflict(
            "customer",
            found.name,
            f"customer {found.name} still has {' and '.join(left)}: remove them first",
        )
    await ctx.tenants.remove_customer(found.name)
    await ctx.auditor.record(
        caller, "customer.remove", found.name, Owner(found.reseller, found.name)
    )
    return found
