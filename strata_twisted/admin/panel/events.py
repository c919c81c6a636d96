"""
Events (#14): the event log, newest first and paged, filtered by domain and by a group of kinds
(outages, relay and queue activity, alerts, changes); and the primaries' outages with their
durations.  Reading and scoping are L{strata_twisted.core.admin.events}': another tenant's
domain is "not found", and a non-operator never sees the installation's own events.
"""

from __future__ import annotations

from typing import Final

from twisted.web.iweb import IRequest

from strata_twisted.admin.panel.base import Body, Page, PanelBase, url
from strata_twisted.core.admin import domains, events
from strata_twisted.model import EventFilter

app = PanelBase.app

PAGE_SIZE: Final = 50
# The kind choices: a group's label and the kind prefixes (or exact kinds) it selects, as
# recorded by core/ (monitor: outage.*, relay: relay.*, admin moves: queue.*, alerts: alert.*,
# admin changes: domain.*, dkim.*, user.*; intake hints and retention: the rest).
KIND_GROUPS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "outage": ("Outages", ("outage.",)),
    "relay": ("Relay and queue activity", ("relay.", "queue.")),
    "alert": ("Alerts", ("alert.",)),
    "change": ("Admin changes", ("domain.", "dkim.", "user.")),
    "other": ("Intake and retention", ("intake.", "retention.")),
}


def kinds_for(choice: str) -> tuple[str, ...] | None:
    """The kinds a ``kind`` choice selects: a group's, else the text itself as an exact kind
    or a prefix ending in "." (the API's ``kind``, so a link may name one); None for all."""
    if not choice:
        return None
    group = KIND_GROUPS.get(choice)
    return group[1] if group is not None else (choice,)


class EventPages(PanelBase):
    @app.route("/events", methods=["GET"])
    async def events_list(self, request: IRequest) -> Body:
        async def handler(page: Page) -> Body:
            domain = page.arg("domain").strip()
            kind = page.arg("kind").strip()
            names = await domains.domain_choices(self.ctx, page.caller)
            query = EventFilter(domains=(domain,) if domain else None, kinds=kinds_for(kind))
            listing = await events.list_events(
                self.ctx, page.caller, query, page.arg("cursor") or None, PAGE_SIZE
            )
            outages = await events.list_outages(self.ctx, page.caller, domain or None)
            return page.render(
                "events.html",
                title="Events",
                domain=domain,
                kind=kind,
                groups=KIND_GROUPS,
                domains=names,
                events=listing.events,
                outages=list(reversed(outages)),
                first_page=not page.arg("cursor"),
                first_link=url("/events", domain=domain, kind=kind),
                next_page=url("/events", domain=domain, kind=kind, cursor=listing.next_cursor)
                if listing.next_cursor
                else None,
            )

        return await self.show(request, handler)
