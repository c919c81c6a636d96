# -*- test-case-name: tests.test_core_metrics -*-
"""
Prometheus metrics (#13): what Strata counts while it works, and what the store says at scrape
time.

Two kinds of figures, kept apart on purpose:

- **Counters and the commit histogram** move where the work happens: intake counts each message
  it commits or refuses and times the durable commit (``core/intake.py``), the relay counts each
  recipient's result (``core/relay.py``), the login check counts each login by service and
  result (``core/login.py``).  Those modules take a L{MetricsRecorder} as an argument; the
  default, L{NO_METRICS}, does nothing, so nothing depends on Prometheus being wanted.
- **Gauges of stored state** (queue depth, oldest message, primary up, outage open) are read
  from the store by L{StoreGauges}.  A Prometheus collector is called synchronously, on the
  scrape's thread, and must never wait for the storage thread: so the gauges come from a
  snapshot that a ``LoopingCall`` on the injected clock refreshes every few seconds.  The
  oldest message's age is worked out from the snapshot and the clock at scrape time, so it keeps
  growing between refreshes.

Labels are per protected domain, never per user.  Mail for a domain Strata does not protect
(users' outbound mail, DSNs, alerts, ``<Postmaster>`` mail held for an address) is counted under
one label, L{OTHER_DOMAIN}: recipients' domains on the Internet must not become series.

Everything lives in one L{CollectorRegistry} per L{Metrics}, never prometheus-client's global
one, so tests and several servers in one process do not see each other's figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from strata_twisted.interfaces import IDomainStore, IMonitorStore, IQueueStore

# The label of everything not for a protected domain (see the module docstring).
OTHER_DOMAIN: Final = "_other"

# strata_intake_messages_total{result}: the message was committed (250), refused by policy (a
# header check: 5xx), or we failed to store it (451).
INTAKE_RESULTS: Final = ("accepted", "rejected", "failed")
# strata_logins_total{result}: ok; failed (wrong password, unknown user); throttled (failed after
# waiting out a throttle delay: the pattern of a guesser); portal (right password, but the
# domain's webmail portal is closed).
LOGIN_RESULTS: Final = ("ok", "failed", "throttled", "portal")
LOGIN_SERVICES: Final = ("imap", "submission", "admin")

# Commit latencies: an fsync on a good disk takes a millisecond or two, a busy one hundreds.
COMMIT_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

DEFAULT_REFRESH: Final = 5.0  # seconds between reads of the store for the gauges


class MetricsRecorder(Protocol):
    """What core modules tell the metrics.  Never raises."""

    def intake_message(self, result: str) -> None:
        """One message at intake ended with ``result`` (L{INTAKE_RESULTS})."""

    def commit_finished(self, seconds: float) -> None:
        """One intake message's durable commit took ``seconds``."""

    def relay_results(self, domain: str, result: str, count: int = 1) -> None:
        """``count`` recipients of ``domain`` (a label: L{OTHER_DOMAIN} for mail not for a
        protected domain) got ``result``: delivered, deferred, bounced, held or expired."""

    def login(self, service: str, result: str) -> None:
        """One login to ``service`` (L{LOGIN_SERVICES}) ended with ``result`` (L{LOGIN_RESULTS})."""


class NoMetrics:
    """The recorder of a component nobody measures: it does nothing."""

    def intake_message(self, result: str) -> None:
        pass

    def commit_finished(self, seconds: float) -> None:
        pass

    def relay_results(self, domain: str, result: str, count: int = 1) -> None:
        pass

    def login(self, service: str, result: str) -> None:
        pass


NO_METRICS: Final = NoMetrics()


class Metrics:
    """
    The Prometheus recorder: the counters, the commit histogram and (with ``process``) the
    process and platform figures, in its own L{registry}.  Add the store's gauges with
    L{watch}.
    """

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._intake = Counter(
            "strata_intake_messages",
            "Messages at SMTP intake by result: accepted (committed), rejected, failed (ours)",
            ["result"],
            registry=self.registry,
        )
        self._commit = Histogram(
            "strata_commit_duration_seconds",
            "Time to commit an intake message durably (body, queue entries, shadow copies)",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._relay = Counter(
            "strata_relay_deliveries",
            "Relay results per recipient: delivered, deferred, bounced, held, expired",
            ["domain", "result"],
            registry=self.registry,
        )
        self._logins = Counter(
            "strata_logins",
            "Logins by service and result (ok, failed, throttled, portal)",
            ["service", "result"],
            registry=self.registry,
        )
        # Every known combination starts at 0, so that rate() sees the first event.
        for result in INTAKE_RESULTS:
            self._intake.labels(result)
        for service in LOGIN_SERVICES:
            for result in LOGIN_RESULTS:
                self._logins.labels(service, result)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def watch(self, gauges: StoreGauges) -> None:
        """Export the store's gauges from this registry."""
        self.registry.register(gauges)

    def intake_message(self, result: str) -> None:
        self._intake.labels(result).inc()

    def commit_finished(self, seconds: float) -> None:
        self._commit.observe(max(seconds, 0.0))

    def relay_results(self, domain: str, result: str, count: int = 1) -> None:
        if count > 0:
            self._relay.labels(domain, result).inc(count)

    def login(self, service: str, result: str) -> None:
        self._logins.labels(service, result).inc()


@dataclass(frozen=True)
class DomainFigures:
    """One label's figures in a L{StoreSnapshot}."""

    queued: int = 0
    held: int = 0
    oldest_received_at: float | None = None  # of its queued and held entries
    primary_up: bool | None = None  # None: not monitored, or not probed yet
    outage_active: bool = False


@dataclass(frozen=True)
class StoreSnapshot:
    """The store's state as last read: figures by domain label, and when they were read."""

    taken_at: float
    domains: dict[str, DomainFigures] = field(default_factory=dict)


class StoreGauges:
    """
    A Prometheus collector of the store's state, from a snapshot refreshed every ``interval``
    seconds on ``clock`` (L{start}/L{stop}); L{refresh} reads it once.  Until the first read
    finishes it exports nothing but its own age gauge's absence.  A failed read is logged and
    the last snapshot kept (its age says how stale it is).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: IDomainStore,
        queue: IQueueStore,
        monitor: IMonitorStore,
        interval: float = DEFAULT_REFRESH,
    ) -> None:
        self._clock = clock
        self._domains = domains
        self._queue = queue
        self._monitor = monitor
        self._interval = interval
        self.snapshot: StoreSnapshot | None = None
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock

    def start(self) -> None:
        """Read now, then every ``interval`` seconds."""
        d = self._loop.start(self._interval, now=True)
        d.addErrback(lambda f: self.log.failure("metrics refresh loop stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def refresh(self) -> Deferred[None]:
        """Read the store into a new snapshot.  Never fails (a failure is logged)."""
        return Deferred.fromCoroutine(self._refresh())

    async def _refresh(self) -> None:
        try:
            self.snapshot = await self._read()
        except Exception:
            self.log.failure("cannot read the store for the metrics; keeping the last figures")

    async def _read(self) -> StoreSnapshot:
        taken_at = self._clock.seconds()
        protected = await self._domains.list_domains()
        stats = await self._queue.queue_stats()
        statuses = {s.domain: s for s in await self._monitor.list_statuses()}
        figures: dict[str, DomainFigures] = {}
        for domain in protected:
            up: bool | None = None
            outage = False
            if domain.monitored:
                status = statuses.get(domain.name)
                if status is not None and status.health != "unknown":
                    up = status.health == "up"
                newest = await self._monitor.list_outages(domain.name, limit=1)
                outage = bool(newest) and newest[-1].ended_at is None
            figures[domain.name] = DomainFigures(primary_up=up, outage_active=outage)
        for stat in stats:
            label = stat.domain if stat.domain in figures else OTHER_DOMAIN
            was = figures.get(label, DomainFigures())
            oldest = [t for t in (was.oldest_received_at, stat.oldest_received_at) if t is not None]
            figures[label] = DomainFigures(
                queued=was.queued + stat.queued,
                held=was.held + stat.held,
                oldest_received_at=min(oldest) if oldest else None,
                primary_up=was.primary_up,
                outage_active=was.outage_active,
            )
        return StoreSnapshot(taken_at, figures)

    # -- the collector ---------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return []
        now = self._clock.seconds()
        queue, oldest, up, outage, age = self._families()
        for name, f in sorted(snapshot.domains.items()):
            queue.add_metric([name, "queued"], f.queued)
            queue.add_metric([name, "held"], f.held)
            # An empty queue's oldest message is 0 s old: the series exists, the alert is quiet.
            since = f.oldest_received_at
            oldest.add_metric([name], max(now - since, 0.0) if since is not None else 0.0)
            if name == OTHER_DOMAIN:
                continue
            if f.primary_up is not None:
                up.add_metric([name], 1.0 if f.primary_up else 0.0)
            outage.add_metric([name], 1.0 if f.outage_active else 0.0)
        age.add_metric([], max(now - snapshot.taken_at, 0.0))
        return [queue, oldest, up, outage, age]

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "strata_queue_messages",
            "Messages waiting in the queue per domain, by state (queued, held)",
            labels=["domain", "state"],
        )
        yield GaugeMetricFamily(
            "strata_queue_oldest_message_age_seconds",
            "Age of the oldest queued or held message per domain (0 when the queue is empty)",
            labels=["domain"],
        )
        yield GaugeMetricFamily(
            "strata_primary_up",
            "1 while the domain's primary answers the monitor's probes, 0 while it is down",
            labels=["domain"],
        )
        yield GaugeMetricFamily(
            "strata_outage_active",
            "1 while an outage event is open for the domain",
            labels=["domain"],
        )
        yield GaugeMetricFamily(
            "strata_metrics_snapshot_age_seconds",
            "How old the store figures above are (they are read every few seconds)",
        )
