"""
The Dashboard (#14): every domain ``caller`` may see, with its state (normal, outage, draining,
held: L{strata_twisted.core.series.classify} says what each means), its queue and oldest
message, its open outage, a drain estimate while it drains, and the relay's activity over the
last 24 hours; the active outages; the totals.  And the charts' data (L{series}): queue depth
over time and each domain's state timeline, from the sampler's time series.  Scope ``read``.

The page polls these, every few seconds during an outage, so they read the store a fixed number
of times whatever the number of domains (with 1,000 domains, ``list_domains`` in
core/admin/domains.py makes some 3,000 calls; this makes about eight): the tenancy's domain
list, the customers, and the batch reads of L{strata_twisted.core.series.read_domains} and
``IQueueStore.relay_activity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from strata_twisted.core.admin._common import domain_name
from strata_twisted.core.admin.context import AdminContext
from strata_twisted.core.admin.errors import InvalidInput
from strata_twisted.core.admin.identity import Caller, require
from strata_twisted.core.admin.tenancy import Owner
from strata_twisted.core.portal import PortalState, portal_state
from strata_twisted.core.series import SAMPLE_INTERVAL, DomainReading, read_domains
from strata_twisted.model import (
    DOMAIN_STATES,
    EVERY_DOMAIN,
    DomainSample,
    DomainState,
    Outage,
    RelayActivity,
    SeriesTotal,
    StateRun,
    customer_scope,
    display_domain,
    reseller_scope,
)

ACTIVITY_WINDOW: Final = 86400  # "relay activity for the last 24 hours"
# How soon the page should ask again: often while a domain is in an outage or draining (the
# admin watches it recover), rarely otherwise.
REFRESH_BUSY: Final = 10
REFRESH_QUIET: Final = 60
MAX_HOURS: Final = 30 * 24  # the series' length (core/series.py KEEP)
MAX_POINTS: Final = 720  # buckets per chart at most: a day is two-minute buckets, a month hours


def _outage_json(outage: Outage, now: float) -> dict[str, Any]:
    """An outage with its duration so far (while open) or in all."""
    ended = outage.ended_at if outage.ended_at is not None else now
    return {
        "id": outage.id,
        "domain": outage.domain,
        "started_at": outage.started_at,
        "ended_at": outage.ended_at,
        "duration": ended - outage.started_at,
        "reason": outage.reason,
    }


@dataclass(frozen=True)
class DashboardRow:
    """One domain on the dashboard."""

    reading: DomainReading
    owner: Owner
    activity: RelayActivity  # the last 24 hours
    now: float
    portal: PortalState  # whether users can log in to webmail now, and why

    @property
    def name(self) -> str:
        return self.reading.domain.name

    @property
    def state(self) -> DomainState:
        return self.reading.state

    @property
    def oldest_age(self) -> float | None:
        oldest = self.reading.queue.oldest_received_at
        return None if oldest is None else max(0.0, self.now - oldest)

    @property
    def drain_estimate(self) -> float | None:
        return self.reading.drain_estimate(self.now)

    def as_json(self) -> dict[str, Any]:
        r = self.reading
        open_outage = r.open_outage
        last = r.outage if r.outage is not None and r.outage.ended_at is not None else None
        return {
            "name": self.name,
            "display_name": display_domain(self.name),
            "customer": r.domain.customer or None,
            "reseller": self.owner.reseller or None,
            "state": self.state,
            "health": r.status.health if r.status is not None else "unknown",
            "monitored": r.domain.monitored,
            "queued": r.queue.queued,
            "held": r.queue.held,
            "oldest_received_at": r.queue.oldest_received_at,
            "oldest_age": self.oldest_age,
            "outage": None if open_outage is None else _outage_json(open_outage, self.now),
            "last_outage_ended_at": None if last is None else last.ended_at,
            "drain_estimate": self.drain_estimate,
            "delivered_recently": r.recent.delivered,
            "activity_24h": self.activity.as_json(),
            "portal_open": self.portal.open,
            "portal_reason": self.portal.reason,
        }


@dataclass(frozen=True)
class Dashboard:
    generated_at: float
    rows: list[DashboardRow]

    @property
    def outages(self) -> list[Outage]:
        """The open outages, oldest first."""
        found = [r.reading.open_outage for r in self.rows]
        return sorted((o for o in found if o is not None), key=lambda o: o.started_at)

    @property
    def refresh_after(self) -> int:
        busy = any(r.state in ("outage", "draining") for r in self.rows)
        return REFRESH_BUSY if busy else REFRESH_QUIET

    def totals(self) -> dict[str, Any]:
        states = dict.fromkeys(DOMAIN_STATES, 0)
        for r in self.rows:
            states[r.state] += 1
        activity = {"delivered": 0, "deferred": 0, "held": 0, "bounced": 0}
        for r in self.rows:
            for key in activity:
                activity[key] += getattr(r.activity, key)
        return {
            "domains": len(self.rows),
            "states": states,
            "queued": sum(r.reading.queue.queued for r in self.rows),
            "held": sum(r.reading.queue.held for r in self.rows),
            "outages": len(self.outages),
            "activity_24h": activity,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "refresh_after": self.refresh_after,
            "totals": self.totals(),
            "outages": [_outage_json(o, self.generated_at) for o in self.outages],
            "domains": [r.as_json() for r in self.rows],
        }


async def dashboard(ctx: AdminContext, caller: Caller) -> Dashboard:
    """Every domain ``caller`` may see, sorted by name, as the Dashboard shows it."""
    require(caller, "read")
    now = ctx.clock.seconds()
    domains = await ctx.tenancy.domains(caller)
    every = caller.role == "operator"
    readings = await read_domains(now, domains, ctx.queue, ctx.monitor, every_domain=every)
    names = None if every else [d.name for d in domains]
    day = {a.domain: a for a in await ctx.queue.relay_activity(now - ACTIVITY_WINDOW, names)}
    resellers = {c.name: c.reseller for c in await ctx.tenants.list_customers()}
    rows = [
        DashboardRow(
            reading=r,
            owner=Owner(resellers.get(r.domain.customer, ""), r.domain.customer),
            activity=day.get(r.domain.name) or RelayActivity(r.domain.name),
            now=now,
            portal=portal_state(r.domain, r.outage, now, ctx.settings.imap.portal_grace),
        )
        for r in readings
    ]
    return Dashboard(now, rows)


@dataclass(frozen=True)
class Span:
    """A run of buckets in which a domain was in one state other than ``normal``."""

    start: int
    end: int
    state: DomainState

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "state": self.state}


@dataclass(frozen=True)
class Series:
    """
    The charts' data over ``[since, until)`` in buckets of ``step`` seconds: ``depth`` has one
    ``(bucket start, queued, held)`` per bucket, the largest total of the domains' depths in
    the bucket's minutes (each of ``queued`` and ``held`` on its own), zeros included, so the
    chart needs no gap filling; ``timeline`` has, per domain that was not always normal, its
    spans of one state (a bucket's worst).  A minute with no point is a
    domain that was normal with nothing queued (or a minute the server was not running).
    """

    since: int
    until: int
    step: int
    domain: str | None
    depth: list[tuple[int, int, int]]
    timeline: dict[str, list[Span]]

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "step": self.step,
            "domain": self.domain,
            "depth": [{"at": at, "queued": q, "held": h} for at, q, h in self.depth],
            "timeline": [
                {"domain": name, "spans": [s.as_json() for s in spans]}
                for name, spans in sorted(self.timeline.items())
            ],
        }


def series_step(hours: int) -> int:
    """The bucket for ``hours`` of chart: whole minutes, at most L{MAX_POINTS} buckets."""
    minutes = math.ceil(hours * 3600 / MAX_POINTS / SAMPLE_INTERVAL)
    return max(1, minutes) * SAMPLE_INTERVAL


def _bucket_spans(runs: list[StateRun], since: int, until: int, step: int) -> dict[str, list[Span]]:
    """
    Each domain's spans in buckets of ``step`` from its ``runs`` (sorted by domain, then
    start): a bucket takes the worst state of the runs in it (as the downsampled points would
    say), and buckets in a row of one state make a span.  ``since`` and ``until`` are multiples
    of ``step``; runs are clipped to them.
    """
    rank = DOMAIN_STATES.index
    timeline: dict[str, list[Span]] = {}
    for run in runs:
        start, end = max(run.start, since), min(run.end, until)
        if start >= end:
            continue
        first, last = start - start % step, -(-end // step) * step
        spans = timeline.setdefault(run.domain, [])
        if spans and spans[-1].end > first:
            # A state changed within the bucket at ``first``: the worst state has it.
            prev = spans[-1]
            if rank(prev.state) >= rank(run.state):
                first += step
            elif prev.start == first:
                spans.pop()
            else:
                spans[-1] = Span(prev.start, first, prev.state)
        if first >= last:
            continue
        if spans and spans[-1].end == first and spans[-1].state == run.state:
            spans[-1] = Span(spans[-1].start, last, run.state)
        else:
            spans.append(Span(first, last, run.state))
    return {name: spans for name, spans in timeline.items() if spans}


def depth_scope(caller: Caller) -> str:
    """The scope of the totals ``caller``'s depth chart reads: everything for the operator,
    a reseller's or a customer's own."""
    if caller.role == "operator":
        return EVERY_DOMAIN
    if caller.role == "reseller":
        return reseller_scope(caller.reseller)
    return customer_scope(caller.customer)


async def series(
    ctx: AdminContext, caller: Caller, *, hours: int = 24, domain: str | None = None
) -> Series:
    """
    The last ``hours`` (1 to 720) of the charts, for every domain ``caller`` may see, or only
    ``domain`` (L{NotFound} if the caller may not see it).

    Three reads of the series, each bounded by the chart, not by the number of domains: the
    depth from the caller's scope's totals (a bucket's largest total: the peak a chart must not
    hide), or from ``domain``'s own points; the timeline from the state runs of the domains the
    caller sees now.  The totals count each domain where it belonged at the minute, so a domain
    moved to another customer leaves its past depth with the one it left.
    """
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
        raise InvalidInput("hours", f"expected a whole number of hours from 1 to {MAX_HOURS}")
    names: tuple[str, ...] | None
    if domain is not None:
        names = ((await ctx.tenancy.domain(caller, domain_name(domain, "domain"))).name,)
    else:
        names = await ctx.tenancy.domain_names(caller)
    require(caller, "read")
    step = series_step(hours)
    now = ctx.clock.seconds()
    # The current bucket is included, so the newest minute shows at once.
    until = (int(now) // step + 1) * step
    since = until - math.ceil(hours * 3600 / step) * step
    found: dict[int, tuple[int, int]]
    if domain is not None:
        points: list[DomainSample] = await ctx.series.read_samples(since, until, names, step)
        found = {p.at: (p.queued, p.held) for p in points}
    else:
        totals: list[SeriesTotal] = await ctx.series.read_totals(
            depth_scope(caller), since, until, step
        )
        found = {t.at: (t.queued, t.held) for t in totals}
    depth = [(at, *found.get(at, (0, 0))) for at in range(since, until, step)]
    runs: list[StateRun] = await ctx.series.read_runs(since, until, names)
    return Series(
        since,
        until,
        step,
        names[0] if domain is not None and names else None,
        depth,
        _bucket_spans(runs, since, until, step),
    )
