"""
Each protected domain's state as the dashboard shows it (#14), and the sampler that records it
once a minute as the dashboard's time series (L{ISeriesStore}).

The four states, decided here and nowhere else (L{classify}), checked in this order:

- ``outage``: the monitor has an outage event open for the domain, or it monitors the primary
  and last found it down.  Mail is queued, not relayed.
- ``draining``: not in an outage, mail still queued for the primary, and either the relay
  delivered some of the domain's mail in the last L{DRAIN_WINDOW} (10 minutes), or the domain
  came out of an outage less than L{RECOVERY_WINDOW} (an hour) ago.  The first is a drain under
  way; the second covers the seconds before the first delivery and a primary that still answers
  4xx after it came back.
- ``held``: neither, and mail is held for an admin to review (``hold_rejected``, or held by
  hand).  Nothing moves until somebody acts.
- ``normal``: everything else, including a few messages queued while the primary is up (the
  usual deferrals of a working relay).

L{read_domains} reads what the states need for every domain at once: five store calls
whatever the number of domains (the queue's statistics, the monitor's statuses, each domain's
newest outage, the relay's recent activity), never one per domain.  Both the sampler and the
dashboard (core/admin/dashboard.py) use it.

The sampler writes one point per domain and minute, sparse (a domain that is ``normal`` with
nothing queued or held gets none), and in the same write the minute's totals of each tenant
scope (L{scope_totals}: every domain, each reseller's, each customer's, so the dashboard's
depth chart reads one row a minute whatever the number of domains; the store derives the state
timeline's runs from the points itself), and prunes what is older than L{KEEP} (30 days).
Time comes from the injected clock; every store call returns a Deferred, so nothing here
blocks the reactor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from strata_twisted.interfaces import (
    IDomainStore,
    IMonitorStore,
    IQueueStore,
    ISeriesStore,
    ITenantStore,
)
from strata_twisted.model import (
    EVERY_DOMAIN,
    Domain,
    DomainSample,
    DomainState,
    DomainStatus,
    Outage,
    QueueStats,
    RelayActivity,
    SeriesTotal,
    customer_scope,
    reseller_scope,
)

SAMPLE_INTERVAL: Final = 60  # one point a minute
KEEP: Final = 30 * 86400  # the series' length
DRAIN_WINDOW: Final = 600  # a delivery this recent, with mail still queued: draining
RECOVERY_WINDOW: Final = 3600  # this soon after an outage, mail still queued: draining


def classify(
    *,
    outage_open: bool,
    primary_down: bool,
    queued: int,
    held: int,
    last_delivered_at: float | None,
    outage_ended_at: float | None,
    now: float,
) -> DomainState:
    """The dashboard's state of one domain (the rules are in the module docstring)."""
    if outage_open or primary_down:
        return "outage"
    if queued > 0 and (
        (last_delivered_at is not None and last_delivered_at >= now - DRAIN_WINDOW)
        or (outage_ended_at is not None and outage_ended_at >= now - RECOVERY_WINDOW)
    ):
        return "draining"
    if held > 0:
        return "held"
    return "normal"


@dataclass(frozen=True)
class DomainReading:
    """One domain's state and what it was decided from."""

    domain: Domain
    state: DomainState
    queue: QueueStats
    status: DomainStatus | None
    outage: Outage | None  # the newest, open or closed
    recent: RelayActivity  # the relay's activity in the last DRAIN_WINDOW

    @property
    def open_outage(self) -> Outage | None:
        return self.outage if self.outage is not None and self.outage.ended_at is None else None

    def drain_estimate(self, now: float) -> float | None:
        """
        Seconds until the queue is empty at the recent delivery rate, while ``draining``: the
        deliveries of the last L{DRAIN_WINDOW} over that window (or over the time since the
        outage ended, when that is shorter, but at least a minute).  None when not draining or
        nothing was delivered lately (no rate to go by).
        """
        if self.state != "draining" or self.recent.delivered == 0:
            return None
        window = float(DRAIN_WINDOW)
        if self.outage is not None and self.outage.ended_at is not None:
            window = min(window, now - self.outage.ended_at)
        rate = self.recent.delivered / max(window, float(SAMPLE_INTERVAL))
        return self.queue.queued / rate

    def sample(self, at: int) -> DomainSample:
        return DomainSample(at, self.domain.name, self.queue.queued, self.queue.held, self.state)


async def read_domains(
    now: float,
    domains: Sequence[Domain],
    queue: IQueueStore,
    monitor: IMonitorStore,
    *,
    every_domain: bool = False,
) -> list[DomainReading]:
    """
    The reading of each of ``domains``, in their order.  ``every_domain``: they are all the
    protected domains, so the relay's activity is read unfiltered (cheaper than naming them).
    """
    stats: dict[str, QueueStats] = {s.domain: s for s in await queue.queue_stats()}
    statuses: dict[str, DomainStatus] = {s.domain: s for s in await monitor.list_statuses()}
    outages: dict[str, Outage] = {o.domain: o for o in await monitor.latest_outages()}
    names = None if every_domain else [d.name for d in domains]
    recent: dict[str, RelayActivity] = {
        a.domain: a for a in await queue.relay_activity(now - DRAIN_WINDOW, names)
    }
    readings = []
    for domain in domains:
        name = domain.name
        stat = stats.get(name) or QueueStats(name, 0, 0, None)
        status = statuses.get(name)
        outage = outages.get(name)
        activity = recent.get(name) or RelayActivity(name)
        state = classify(
            outage_open=outage is not None and outage.ended_at is None,
            primary_down=domain.monitored and status is not None and status.health == "down",
            queued=stat.queued,
            held=stat.held,
            last_delivered_at=activity.last_delivered_at,
            outage_ended_at=outage.ended_at if outage is not None else None,
            now=now,
        )
        readings.append(DomainReading(domain, state, stat, status, outage, activity))
    return readings


def scope_totals(
    at: int,
    points: Iterable[DomainSample],
    customers: Mapping[str, str],
    domains: Mapping[str, str],
) -> list[SeriesTotal]:
    """
    The totals of the minute ``at``'s ``points`` per scope: every domain; each customer's domains
    (``domains`` maps a domain to its customer, "" for the operator's own); each reseller's
    customers' domains (``customers`` maps a customer to its reseller, "" for the operator's).
    A domain of no customer counts only in every domain's.  Only scopes with something queued
    or held, sorted by scope.
    """
    sums: dict[str, list[int]] = {}
    for p in points:
        customer = domains.get(p.domain, "")
        reseller = customers.get(customer, "") if customer else ""
        scopes = [EVERY_DOMAIN]
        if customer:
            scopes.append(customer_scope(customer))
        if reseller:
            scopes.append(reseller_scope(reseller))
        for scope in scopes:
            total = sums.setdefault(scope, [0, 0])
            total[0] += p.queued
            total[1] += p.held
    return [
        SeriesTotal(at, scope, queued, held)
        for scope, (queued, held) in sorted(sums.items())
        if queued or held
    ]


class SeriesSampler:
    """Once a minute on ``clock``, one point per domain that is not quiet and the scopes'
    totals (L{start}/L{stop})."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: IDomainStore,
        tenants: ITenantStore,
        queue: IQueueStore,
        monitor: IMonitorStore,
        series: ISeriesStore,
        *,
        keep: float = KEEP,
    ) -> None:
        self._clock = clock
        self._domains = domains
        self._tenants = tenants
        self._queue = queue
        self._monitor = monitor
        self._series = series
        self._keep = keep
        # A LoopingCall waits for each sample to finish before it schedules the next.
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        """Sample now, then every minute."""
        d = self._loop.start(SAMPLE_INTERVAL, now=True)
        d.addErrback(lambda f: self.log.failure("the dashboard's sampler stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> Deferred[int]:
        """Record this minute's points; how many.  Never fails (a failure is logged, and the
        minute is a gap in the charts)."""
        return Deferred.fromCoroutine(self._sample())

    async def _sample(self) -> int:
        now = self._clock.seconds()
        minute = int(now // SAMPLE_INTERVAL) * SAMPLE_INTERVAL
        try:
            domains = await self._domains.list_domains()
            readings = await read_domains(
                now, domains, self._queue, self._monitor, every_domain=True
            )
            points = [
                r.sample(minute)
                for r in readings
                if r.state != "normal" or r.queue.queued or r.queue.held
            ]
            # Each domain where it belongs now: the totals keep this minute's tenancy.
            customers = {c.name: c.reseller for c in await self._tenants.list_customers()}
            owners = {d.name: d.customer for d in domains}
            totals = scope_totals(minute, points, customers, owners)
            await self._series.record_samples(
                points, prune_before=minute - self._keep, totals=totals
            )
        except Exception:
            self.log.failure("cannot record the dashboard's series for this minute")
            return 0
        return len(points)
