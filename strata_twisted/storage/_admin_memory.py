"""
The administration roles (#13) in memory: L{ITenantStore}, L{IAdminStore}, L{IAuditStore}, and
the pure matching rules the queue and event listings share with every backend.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.clock import SecondsClock
from strata_twisted.errors import AlreadyExists, NotFound, StorageError
from strata_twisted.model import (
    AdminAccount,
    ApiKey,
    AuditRecord,
    Customer,
    Event,
    EventFilter,
    QueueEntry,
    QueueFilter,
    Reseller,
    ResellerLogo,
)


def entry_matches(query: QueueFilter, entry: QueueEntry) -> bool:
    """Whether ``entry`` is selected by ``query`` (the rule every backend implements)."""
    if query.domains is not None and entry.domain not in query.domains:
        return False
    if query.states is not None and entry.state not in query.states:
        return False
    if query.sender is not None and query.sender.casefold() not in entry.sender.casefold():
        return False
    if query.recipient is not None and (
        query.recipient.casefold() not in entry.recipient.casefold()
    ):
        return False
    return query.received_before is None or entry.received_at < query.received_before


def event_matches(query: EventFilter, event: Event) -> bool:
    """Whether ``event`` is selected by ``query``."""
    if query.domains is not None and event.domain not in query.domains:
        return False
    if query.kinds is not None and not any(
        event.kind.startswith(kind) if kind.endswith(".") else event.kind == kind
        for kind in query.kinds
    ):
        return False
    return query.since is None or event.at >= query.since


class MemoryAdminRoles:
    """Resellers, customers, admin accounts, API keys and the audit log, in memory."""

    _clock: SecondsClock

    def _init_admin_roles(self) -> None:
        self._resellers: dict[str, Reseller] = {}
        self._logos: dict[str, ResellerLogo] = {}
        self._customers: dict[str, Customer] = {}
        self._admins: dict[str, AdminAccount] = {}
        self._api_keys: dict[str, ApiKey] = {}  # in creation order
        self._audit: list[AuditRecord] = []  # ids are 1, 2, 3, ...

    # -- ITenantStore

    def list_resellers(self) -> Deferred[list[Reseller]]:
        return succeed([self._resellers[name] for name in sorted(self._resellers)])

    def get_reseller(self, name: str) -> Deferred[Reseller | None]:
        return succeed(self._resellers.get(name))

    def _hostname_taken(self, reseller: Reseller) -> Deferred[Reseller] | None:
        """A failed answer if one of ``reseller``'s host names is another reseller's."""
        for other in self._resellers.values():
            if other.name == reseller.name:
                continue
            for host in reseller.branding.hostnames:
                if host in other.branding.hostnames:
                    return fail(AlreadyExists("hostname", host))
        return None

    def add_reseller(self, reseller: Reseller) -> Deferred[Reseller]:
        if reseller.name in self._resellers:
            return fail(AlreadyExists("reseller", reseller.name))
        taken = self._hostname_taken(reseller)
        if taken is not None:
            return taken
        added = replace(reseller, created_at=reseller.created_at or self._clock.seconds())
        self._resellers[added.name] = added
        return succeed(added)

    def update_reseller(self, reseller: Reseller) -> Deferred[Reseller]:
        old = self._resellers.get(reseller.name)
        if old is None:
            return fail(NotFound("reseller", reseller.name))
        taken = self._hostname_taken(reseller)
        if taken is not None:
            return taken
        updated = replace(reseller, created_at=old.created_at)
        self._resellers[updated.name] = updated
        return succeed(updated)

    def remove_reseller(self, name: str) -> Deferred[None]:
        if self._resellers.pop(name, None) is None:
            return fail(NotFound("reseller", name))
        self._logos.pop(name, None)
        return succeed(None)

    def reseller_for_hostname(self, hostname: str) -> Deferred[Reseller | None]:
        for reseller in self._resellers.values():
            if hostname in reseller.branding.hostnames:
                return succeed(reseller)
        return succeed(None)

    def set_reseller_logo(self, name: str, logo: ResellerLogo) -> Deferred[None]:
        if name not in self._resellers:
            return fail(NotFound("reseller", name))
        self._logos[name] = logo
        return succeed(None)

    def get_reseller_logo(self, name: str) -> Deferred[ResellerLogo | None]:
        return succeed(self._logos.get(name))

    def clear_reseller_logo(self, name: str) -> Deferred[bool]:
        if name not in self._resellers:
            return fail(NotFound("reseller", name))
        return succeed(self._logos.pop(name, None) is not None)

    def list_customers(self, reseller: str | None = None) -> Deferred[list[Customer]]:
        return succeed(
            [
                self._customers[name]
                for name in sorted(self._customers)
                if reseller is None or self._customers[name].reseller == reseller
            ]
        )

    def get_customer(self, name: str) -> Deferred[Customer | None]:
        return succeed(self._customers.get(name))

    def add_customer(self, customer: Customer) -> Deferred[Customer]:
        if customer.name in self._customers:
            return fail(AlreadyExists("customer", customer.name))
        added = replace(customer, created_at=customer.created_at or self._clock.seconds())
        self._customers[added.name] = added
        return succeed(added)

    def remove_customer(self, name: str) -> Deferred[None]:
        if self._customers.pop(name, None) is None:
            return fail(NotFound("customer", name))
        return succeed(None)

    # -- IAdminStore

    def list_admins(self) -> Deferred[list[AdminAccount]]:
        return succeed([self._admins[name] for name in sorted(self._admins)])

    def get_admin(self, name: str) -> Deferred[AdminAccount | None]:
        return succeed(self._admins.get(name))

    def add_admin(self, account: AdminAccount) -> Deferred[AdminAccount]:
        if account.name in self._admins:
            return fail(AlreadyExists("admin", account.name))
        now = self._clock.seconds()
        added = replace(
            account,
            created_at=account.created_at or now,
            updated_at=account.updated_at or now,
        )
        self._admins[added.name] = added
        return succeed(added)

    def update_admin(self, account: AdminAccount) -> Deferred[AdminAccount]:
        old = self._admins.get(account.name)
        if old is None:
            return fail(NotFound("admin", account.name))
        updated = replace(account, created_at=old.created_at, updated_at=self._clock.seconds())
        self._admins[updated.name] = updated
        return succeed(updated)

    def remove_admin(self, name: str) -> Deferred[None]:
        if self._admins.pop(name, None) is None:
            return fail(NotFound("admin", name))
        for key_id in [k.id for k in self._api_keys.values() if k.admin == name]:
            del self._api_keys[key_id]
        return succeed(None)

    def list_api_keys(self, admin: str | None = None) -> Deferred[list[ApiKey]]:
        # Sorted by creation time, as promised (a key may be added with its own created_at);
        # the sort is stable, so keys of the same tick stay in the order they were added.
        keys = [k for k in self._api_keys.values() if admin is None or k.admin == admin]
        return succeed(sorted(keys, key=lambda k: k.created_at))

    def get_api_key(self, key_id: str) -> Deferred[ApiKey | None]:
        return succeed(self._api_keys.get(key_id))

    def add_api_key(self, key: ApiKey) -> Deferred[ApiKey]:
        if key.id in self._api_keys:
            return fail(AlreadyExists("api key", key.id))
        if key.admin not in self._admins:
            return fail(NotFound("admin", key.admin))
        added = replace(key, created_at=key.created_at or self._clock.seconds())
        self._api_keys[added.id] = added
        return succeed(added)

    def remove_api_key(self, key_id: str) -> Deferred[None]:
        if self._api_keys.pop(key_id, None) is None:
            return fail(NotFound("api key", key_id))
        return succeed(None)

    def touch_api_key(self, key_id: str, at: float) -> Deferred[None]:
        key = self._api_keys.get(key_id)
        if key is not None:
            self._api_keys[key_id] = replace(key, last_used_at=at)
        return succeed(None)

    # -- IAuditStore

    def record_audit(self, record: AuditRecord) -> Deferred[AuditRecord]:
        try:
            # A JSON round trip, like the durable backends: a copy, and the same failures.
            detail: dict[str, Any] = json.loads(json.dumps(record.detail))
        except (TypeError, ValueError) as e:
            return fail(StorageError(f"audit detail is not JSON: {e}"))
        stored = replace(record, id=len(self._audit) + 1, detail=detail)
        self._audit.append(stored)
        return succeed(replace(stored, detail=json.loads(json.dumps(detail))))

    def list_audit(
        self,
        reseller: str | None = None,
        customer: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> Deferred[list[AuditRecord]]:
        found: list[AuditRecord] = []
        end = len(self._audit) if before_id is None else min(before_id - 1, len(self._audit))
        for record in reversed(self._audit[: max(end, 0)]):
            if len(found) >= limit:
                break
            if reseller is not None and record.reseller != reseller:
                continue
            if customer is not None and record.customer != customer:
                continue
            found.append(replace(record, detail=json.loads(json.dumps(record.detail))))
        return succeed(found)
