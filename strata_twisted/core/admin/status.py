"""
A summary of what ``caller`` may see: its domains and their health, the queue's depth and age
per domain, and (for the operator) how many messages the store holds (#13).  Scope ``read``.
What the process itself is (its data directory, whether a server runs there, its listeners) is
the layer's to add: the CLI reads the run lock, the server knows itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata_twisted import __version__
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.model import Domain, DomainStatus, QueueStats


@dataclass(frozen=True)
class StatusReport:
    version: str
    domains: list[Domain]
    statuses: dict[str, DomainStatus]
    queues: list[QueueStats]
    messages: int | None  # the operator's only: the store's count is the installation's

    @property
    def queued(self) -> int:
        return sum(s.queued for s in self.queues)

    @property
    def held(self) -> int:
        return sum(s.held for s in self.queues)

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "domains": len(self.domains),
            "messages": self.messages,
            "queued": self.queued,
            "held": self.held,
            "queues": [
                {
                    "domain": s.domain,
                    "queued": s.queued,
                    "held": s.held,
                    "oldest_received_at": s.oldest_received_at,
                }
                for s in self.queues
            ],
            "health": [
                {
                    "domain": d.name,
                    "health": self.statuses[d.name].health
                    if d.name in self.statuses
                    else "unknown",
                    "since": self.statuses[d.name].since if d.name in self.statuses else None,
                    "monitored": d.monitored,
                }
                for d in self.domains
            ],
        }


async def status(ctx: AdminContext, caller: Caller) -> StatusReport:
    require(caller, "read")
    domains = await ctx.tenancy.domains(caller)
    names = await ctx.tenancy.domain_names(caller)
    stats: list[QueueStats] = await ctx.queue.queue_stats()
    if names is not None:
        stats = [s for s in stats if s.domain in names]
    seen = {d.name for d in domains}
    statuses = {s.domain: s for s in await ctx.monitor.list_statuses() if s.domain in seen}
    messages: int | None = await ctx.messages.message_count() if caller.is_operator else None
    return StatusReport(__version__, domains, statuses, stats, messages)
