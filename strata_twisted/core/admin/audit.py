"""
The audit log: every admin state change, who made it, through what, from where, and under which
tenant its object lives, so that each tenant reads its own records and nobody else's.
"""

from __future__ import annotations

from typing import Any

from strata_twisted.clock import SecondsClock
from strata_twisted.core.admin.identity import Caller
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.interfaces import IAuditStore
from strata_twisted.model import AuditRecord


class Auditor:
    def __init__(self, audit: IAuditStore, clock: SecondsClock) -> None:
        self._audit = audit
        self._clock = clock

    async def record(
        self,
        caller: Caller,
        action: str,
        target: str,
        owner: Owner,
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Record that ``caller`` did ``action`` (``domain.add``, ``queue.hold``, ...) to
        ``target``, an object owned by ``owner``.  Never put a password or key in ``detail``."""
        record = AuditRecord(
            id=0,
            at=self._clock.seconds(),
            actor=caller.name,
            via=caller.via,
            source=caller.source,
            action=action,
            target=target,
            reseller=owner.reseller,
            customer=owner.customer,
            detail=detail or {},
        )
        stored: AuditRecord = await self._audit.record_audit(record)
        return stored

    async def records(
        self, caller: Caller, before_id: int | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """One page of the records ``caller`` may read, newest first."""
        found: list[AuditRecord]
        if caller.role == "operator":
            found = await self._audit.list_audit(before_id=before_id, limit=limit)
        elif caller.role == "reseller":
            found = await self._audit.list_audit(
                reseller=caller.reseller, before_id=before_id, limit=limit
            )
        else:
            found = await self._audit.list_audit(
                customer=caller.customer, before_id=before_id, limit=limit
            )
        return found
