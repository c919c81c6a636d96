"""
What a caller may see and act on: operator → resellers → customers → domains.

An operator sees everything.  A reseller admin sees its reseller, the customers under it, their
domains, and the accounts, keys and audit records of all of these.  A customer admin sees its
customer, its domains, and their accounts, keys and records.  A domain or customer with no owner
("") is the operator's.  Whatever a caller may not see is L{NotFound}, exactly as if it did not
exist, so that no answer tells one tenant what another has (#13).
"""

from __future__ import annotations

from dataclasses import dataclass

from strata_twisted.core.admin.identity import Caller
from strata_twisted.errors import NotFound
from strata_twisted.interfaces import IDomainStore, ITenantStore
from strata_twisted.model import AdminAccount, Customer, Domain, Reseller, display_domain


@dataclass(frozen=True)
class Owner:
    """Where an object sits: its reseller and customer ("" = the operator's)."""

    reseller: str = ""
    customer: str = ""


class Tenancy:
    """The tenancy checks, over the tenant and domain roles."""

    def __init__(self, tenants: ITenantStore, domains: IDomainStore) -> None:
        self._tenants = tenants
        self._domains = domains

    async def customer_owner(self, customer: str) -> Owner:
        """The owner of objects under ``customer`` ("" = the operator's own)."""
        if not customer:
            return Owner()
        found: Customer | None = await self._tenants.get_customer(customer)
        return Owner(found.reseller if found is not None else "", customer)

    async def domain_owner(self, domain: Domain) -> Owner:
        return await self.customer_owner(domain.customer)

    def sees_owner(self, caller: Caller, owner: Owner) -> bool:
        """Whether ``caller`` may see an object owned by ``owner``."""
        if caller.role == "operator":
            return True
        if caller.role == "reseller":
            return bool(owner.reseller) and owner.reseller == caller.reseller
        return bool(owner.customer) and owner.customer == caller.customer

    async def sees_domain(self, caller: Caller, domain: Domain) -> bool:
        return self.sees_owner(caller, await self.domain_owner(domain))

    async def domain(self, caller: Caller, name: str) -> Domain:
        """The domain ``name`` (canonical) if ``caller`` may see it, else L{NotFound}."""
        found: Domain | None = await self._domains.get_domain(name)
        if found is None or not await self.sees_domain(caller, found):
            raise NotFound("domain", name, f"{display_domain(name)} is not a protected domain")
        return found

    async def domains(self, caller: Caller) -> list[Domain]:
        """Every domain ``caller`` may see, sorted by name."""
        every: list[Domain] = await self._domains.list_domains()
        if caller.role == "operator":
            return sorted(every, key=lambda d: d.name)
        owners: dict[str, Owner] = {}
        seen: list[Domain] = []
        for domain in every:
            if domain.customer not in owners:
                owners[domain.customer] = await self.domain_owner(domain)
            if self.sees_owner(caller, owners[domain.customer]):
                seen.append(domain)
        return sorted(seen, key=lambda d: d.name)

    async def domain_names(self, caller: Caller) -> tuple[str, ...] | None:
        """The names of the domains ``caller`` may see, for a store filter; None: every one
        (an operator sees mail for domains no longer protected, too)."""
        if caller.role == "operator":
            return None
        return tuple(d.name for d in await self.domains(caller))

    async def restrict(
        self, caller: Caller, domains: tuple[str, ...] | None
    ) -> tuple[str, ...] | None:
        """A listing's domain filter (canonical names; None: every domain) narrowed to what
        ``caller`` may see.  A domain named in the filter that the caller may not see is
        L{NotFound}, as it is everywhere else (an empty page would be an answer too)."""
        names = await self.domain_names(caller)
        if names is None:
            return domains
        if domains is None:
            return names
        for name in domains:
            if name not in names:
                raise NotFound("domain", name, f"{display_domain(name)} is not a protected domain")
        return domains

    async def customer(self, caller: Caller, name: str) -> Customer:
        found: Customer | None = await self._tenants.get_customer(name)
        if found is None or not self.sees_owner(caller, Owner(found.reseller, found.name)):
            raise NotFound("customer", name)
        return found

    async def reseller(self, caller: Caller, name: str) -> Reseller:
        found: Reseller | None = await self._tenants.get_reseller(name)
        if (
            found is None
            or not self.sees_owner(caller, Owner(found.name))
            or (caller.role == "customer")
        ):
            raise NotFound("reseller", name)
        return found

    async def account_owner(self, account: AdminAccount) -> Owner:
        if account.role == "customer":
            return await self.customer_owner(account.customer)
        return Owner(account.reseller)

    async def sees_account(self, caller: Caller, account: AdminAccount) -> bool:
        """An operator account is seen by operators only; others by their tenant's admins."""
        if account.role == "operator":
            return caller.role == "operator"
        if caller.role == "customer" and account.role != "customer":
            return False
        return self.sees_owner(caller, await self.account_owner(account))
