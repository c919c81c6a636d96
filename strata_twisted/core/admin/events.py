"""
The event log and the primaries' outages, for admins (#13): pages of events through
L{IEventStore.query_events}, newest first, restricted to the caller's domains.  Scope ``read``.
A non-operator never sees events that name no domain (they are the installation's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from strata_twisted.core.admin._common import domain_name, page_cursor, page_limit
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.model import Event, EventFilter, Outage

_EVERYTHING: Final = EventFilter()


@dataclass(frozen=True)
class EventPage:
    """One page, newest first; ``next_cursor`` None: this was the last."""

    events: list[Event]
    next_cursor: str | None


async def _scoped(ctx: AdminContext, caller: Caller, query: EventFilter) -> EventFilter:
    if query.domains is not None:
        query = replace(query, domains=tuple(domain_name(d, "domain") for d in query.domains))
    return replace(query, domains=await ctx.tenancy.restrict(caller, query.domains))


async def list_events(
    ctx: AdminContext,
    caller: Caller,
    query: EventFilter = _EVERYTHING,
    cursor: str | None = None,
    limit: int = 100,
) -> EventPage:
    """One page of the events ``query`` selects among those ``caller`` may see."""
    require(caller, "read")
    before = page_cursor(cursor)
    limit = page_limit(limit)
    scoped = await _scoped(ctx, caller, query)
    events: list[Event] = await ctx.events.query_events(scoped, before, limit)
    more = len(events) == limit
    return EventPage(events, str(events[-1].id) if more and events else None)


async def list_outages(
    ctx: AdminContext, caller: Caller, domain: str | None = None, limit: int = 100
) -> list[Outage]:
    """The newest ``limit`` outages, oldest first; only ``domain``'s when given."""
    require(caller, "read")
    limit = page_limit(limit)
    if domain is not None:
        canonical = domain_name(domain, "domain")
        if not caller.is_operator:
            await ctx.tenancy.domain(caller, canonical)
        found: list[Outage] = await ctx.monitor.list_outages(canonical, limit)
        return found
    names = await ctx.tenancy.domain_names(caller)
    if names is None:
        every: list[Outage] = await ctx.monitor.list_outages(None, limit)
        return every
    seen: list[Outage] = []
    for name in names:
        seen.extend(await ctx.monitor.list_outages(name, limit))
    seen.sort(key=lambda o: (o.started_at, o.id))
    return seen[-limit:]
