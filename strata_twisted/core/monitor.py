"""
The primary monitor: probe each monitored domain's primary, decide when it is down or up again,
and open and close outage events.

A bookkeeping loop ticks every second on the injected clock.  Each tick takes the monitored
domains from the L{DomainCache} (so domains added, removed or changed with the CLI are picked up
within a tick) and starts a probe of every domain whose gap has passed since its last probe
started, unless one is still running: there are never two probes of one domain at once.  A probe
result is applied by L{transition} and saved through L{IMonitorStore} before the next probe of
that domain can start.

The gap (L{Monitor.gap}) is ``probe_interval`` (per domain, else ``monitor.probe_interval``)
while the monitor is sure of the primary: up with no failure since, or down with no answer
since.  While it is unsure (a failure seen but not yet ``down_after`` of them; an answer seen
during an outage but not yet ``up_after``; not known yet) it is ``monitor.retry_interval``, so
an outage opens, and the drain starts, within seconds of the first sign.  Mail accepted at intake
for a domain that is not down (L{Monitor.note_intake}) asks for a probe at once: in
configurations A and B mail only reaches us when the filter could not reach the primary.  It is
rate-limited by the same ``retry_interval`` since the last probe's start, so a flood of mail to
a healthy primary (a backup MX gets spam) costs it at most one probe per ``retry_interval``.  A
probe that ends when the next one is already due (a primary that hangs until ``probe_timeout``)
starts the next at once instead of waiting for the tick.

An outage starts when the first probe of the run of failures that took the primary down started
(L{DomainStatus.failing_since}, saved with the status, so a restart during the run keeps it), and
ends when the ``up_after``-th answer in a row arrives.

How soon the portal opens (policy ``outage``, core/portal.py), worst cases, with I =
``probe_interval``, R = ``retry_interval``, C = ``probe_connect_timeout``, T = ``probe_timeout``
(the whole probe), N = ``down_after``, the 1 s tick (a due probe starts up to 1 s late) and the
portal's 1 s cache (its ``CACHE_TTL``).  The defaults are I 25, R 4, C 4, T 10, N 3; the bounds
for a primary that does not answer assume R <= C.  T is 10 s, not less, because some primaries
greet late on purpose (Postfix postscreen waits 6 s before its full greeting to a new client, and
a probe that hangs up sooner would never pass it: every probe would fail).

- The primary goes silent at s.  The last good probe may have started just before s, so the first
  failing one starts by s + I + 1.
  - It refuses connections (its server stopped): each failure comes at once and the next probe
    starts R + 1 later: down by s + I + 1 + (N-1)(R+1) = s + 36, the portal open for a login by
    s + 37.
  - Its host does not answer at all (down, unreachable): each probe fails after C and the next
    starts as it ends: down by s + I + 1 + N*C = s + 38, open by s + 39.
  - It accepts connections but never greets (a hung server): each probe fails after T: down by
    s + I + 1 + N*T = s + 56, open by s + 57.
- Mail for the domain is accepted at m, once the primary is silent.  A probe starts at once, or
  by m + R + 1 if one started less than R before m (if that one started after s, it failed, and
  the run is already under way).  Refused: down by m + N(R+1) = m + 15, open by m + 16.  No
  answer: down by m + R + 1 + N*C = m + 17, open by m + 18.  Accepts but never greets: down by
  m + R + 1 + N*T = m + 35, open by m + 36 (the one case above 20 s: such a primary cannot be
  told from a slow greeter sooner).
- The primary answers again at r: the first answer by r + I + 1 (or r + T, after a hanging probe
  in flight), then ``up_after`` - 1 more R + 1 apart: with ``up_after`` 2, the drain starts by
  r + 31.

A flapping primary does not flap the portal or the alerts: the portal stays open for its grace
period (a day) after an outage ends, and each alert kind goes at most once per domain per
``monitor.alert_window`` (core/alerts.py), however often outages open and close.

When a primary goes down an outage opens (``open_outage``, an ``outage.started`` event, an alert);
when it comes back the outage closes (``outage.ended`` with its duration, an alert) and
``on_recovery`` starts a drain.  Statuses are loaded from the store at start, and the store keeps at
most one open outage per domain, so a restart during an outage neither loses nor duplicates it.
The outage in the store is the record: it is opened or closed first, and if that fails the status
stays as it was so the next probe tries again.  What follows (saving the status, the event, the
alert) is logged when it fails and never repeats the transition.  Alerts are sent in the
background: a slow or stuck alert sender never holds up probing or the drain.

A domain that is removed, or no longer monitored, is "retired" at the next tick: its open outage,
if any, is closed with an ``outage.ended`` event saying why, and its status is reset to unknown.
The first time a primary is seen up in this process, an outage the store still holds open (left by
a crash between opening it and saving the "down" status) is closed as a recovery.

This module never touches a socket: a L{Prober} (``server/probe.py``; a scripted fake in tests)
does the talking.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Final, Literal, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from strata_twisted.config import MonitorSettings
from strata_twisted.core.alerts import IAlertSender
from strata_twisted.core.domains import DomainCache
from strata_twisted.interfaces import IEventStore, IMonitorStore, IQueueStore
from strata_twisted.model import Domain, DomainStatus, Outage, display_domain

# Seconds between bookkeeping ticks: how late a probe may start, and how soon a new domain is seen.
TICK: Final = 1.0
# A probe that has not finished this long after its own timeout is cancelled and counts as failed
# (a prober bug must not leave a domain unprobed for ever).
GRACE: Final = 5.0


class Prober(Protocol):
    def probe(
        self, domain: Domain, timeout: float, connect_timeout: float | None = None
    ) -> Deferred[None]:
        """
        Connect to ``domain.relay`` within ``connect_timeout`` seconds (default: ``timeout``),
        read the banner, EHLO, QUIT, all within ``timeout`` seconds.  Fires None when the primary
        answered; fails with an exception whose ``str`` is the reason.
        """


Change = Literal["down", "up", "first_up"] | None


def transition(
    status: DomainStatus,
    error: str | None,
    now: float,
    down_after: int,
    up_after: int,
    started: float | None = None,
) -> tuple[DomainStatus, Change]:
    """
    Apply one probe result (``error`` None: it answered), known at ``now``, of a probe that
    started at ``started`` (default ``now``) to a status.  The rules, in one place:

    1. A success counts a success and resets the failure count and ``failing_since``; a failure
       does the opposite, and the first failure of a run sets ``failing_since`` to its start.
    2. Not ``down`` and ``down_after`` failures in a row: ``down`` since ``failing_since``
       (change "down": open an outage starting then).
    3. Not ``up`` and ``up_after`` successes in a row: ``up`` since ``now`` (change "up" coming
       from ``down``: close the outage and drain; "first_up" coming from ``unknown``: nothing to
       close).
    4. Anything else leaves the health, and ``since``, as they were.

    A run of failures saved without its start (a status from before ``failing_since`` existed)
    starts at this probe.
    """
    if error is None:
        status = replace(
            status,
            consecutive_successes=status.consecutive_successes + 1,
            consecutive_failures=0,
            last_probe_at=now,
            last_probe_error=None,
            failing_since=None,
        )
        if status.health != "up" and status.consecutive_successes >= up_after:
            change: Change = "up" if status.health == "down" else "first_up"
            return replace(status, health="up", since=now), change
        return status, None
    run_start = status.failing_since if status.consecutive_failures > 0 else None
    status = replace(
        status,
        consecutive_failures=status.consecutive_failures + 1,
        consecutive_successes=0,
        last_probe_at=now,
        last_probe_error=error,
        failing_since=run_start if run_start is not None else (now if started is None else started),
    )
    if status.health != "down" and status.consecutive_failures >= down_after:
        return replace(status, health="down", since=status.failing_since), "down"
    return status, None


def unsure(status: DomainStatus | None) -> bool:
    """
    Whether the last probes left ``status`` in doubt: failures that have not yet taken an up (or
    unknown) primary down, or answers that have not yet brought a down (or unknown) one up.
    """
    if status is None:
        return False
    return (status.health != "down" and status.consecutive_failures > 0) or (
        status.health != "up" and status.consecutive_successes > 0
    )


class Monitor:
    """Watches every monitored domain's primary.  See the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: DomainCache,
        store: IMonitorStore,
        events: IEventStore,
        queue: IQueueStore,
        prober: Prober,
        alerts: IAlertSender,
        settings: MonitorSettings,
        on_recovery: Callable[[str], object],
    ) -> None:
        self._clock = clock
        self._domains = domains
        self._store = store
        self._events = events
        self._queue = queue
        self._prober = prober
        self._alerts = alerts
        self._settings = settings
        self._on_recovery = on_recovery
        self._statuses: dict[str, DomainStatus] = {}
        self._last_start: dict[str, float] = {}  # domain -> when its last probe started
        # domain -> its probe, or its retirement, in progress: at most one at a time.
        self._busy: dict[str, Deferred[None]] = {}
        self._last_hint: dict[str, float] = {}
        # Domains for which mail arrived: probe as soon as retry_interval allows.
        self._urgent: set[str] = set()
        # Domains whose outage record has been checked against their status in this process.
        self._outage_checked: set[str] = set()
        self._retire_after: dict[str, float] = {}  # domain -> when to retry a failed retirement
        self._wanted = False  # start() called, stop() not since
        self._running = False
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    # -- settings per domain ---------------------------------------------------------------------

    def probe_interval(self, domain: Domain | None) -> float:
        if domain is not None and domain.probe_interval is not None:
            return domain.probe_interval
        return self._settings.probe_interval

    def retry_interval(self, domain: Domain | None) -> float:
        """The gap while unsure, and after mail: ``retry_interval``, never above the interval."""
        return min(self._settings.retry_interval, self.probe_interval(domain))

    def gap(self, domain: Domain) -> float:
        """Seconds from the start of ``domain``'s last probe to the start of its next one."""
        if domain.name in self._urgent or unsure(self._statuses.get(domain.name)):
            return self.retry_interval(domain)
        return self.probe_interval(domain)

    def _down_after(self, domain: Domain) -> int:
        return self._settings.down_after if domain.down_after is None else domain.down_after

    def _up_after(self, domain: Domain) -> int:
        return self._settings.up_after if domain.up_after is None else domain.up_after

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Load the saved statuses, then probe every monitored domain now and on its interval."""
        self._wanted = True
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            for status in await self._store.list_statuses():
                self._statuses[status.domain] = status
        except Exception:
            self.log.failure("cannot read the saved monitor statuses; starting from unknown")
        if not self._wanted or self._loop.running:
            return  # stopped while the statuses loaded, or started twice
        self._running = True
        d = self._loop.start(TICK, now=True)
        d.addErrback(lambda f: self.log.failure("monitor loop stopped", f))

    def stop(self) -> Deferred[None]:
        """Stop probing; probes in flight are cancelled and their results ignored."""
        self._wanted = False
        self._running = False
        if self._loop.running:
            self._loop.stop()
        running = list(self._busy.values())
        for d in running:
            d.cancel()
        done = DeferredList(running, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # -- queries ---------------------------------------------------------------------------------

    def status(self, domain: str) -> DomainStatus | None:
        """
        What the monitor believes of ``domain``'s primary, or None if it never probed it or no
        longer monitors it.
        """
        return self._statuses.get(domain)

    def note_intake(self, domain: str) -> None:
        """
        Intake accepted a message for ``domain`` (its canonical name).  Unless its primary is
        already down, mail reaching us says the filter could not reach it: probe it now, or as
        soon as ``retry_interval`` has passed since its last probe started.  If it seems up,
        also record an ``intake.hint`` event, at most one per domain per probe interval.
        """
        status = self._statuses.get(domain)
        current = self._domains.get(domain)
        if current is None or not current.monitored:
            return
        if status is None or status.health != "down":
            self._urgent.add(domain)
            if self._running:
                self._maybe_probe(current, self._clock.seconds())
        if status is None or status.health != "up":
            return
        now = self._clock.seconds()
        last = self._last_hint.get(domain)
        if last is not None and now - last < self.probe_interval(self._domains.get(domain)):
            return
        self._last_hint[domain] = now
        name = display_domain(domain)
        d = self._events.record_event(
            "intake.hint",
            f"mail for {name} arrived while its primary seems up: the filter may have failed "
            "over, or the monitor may be wrong; probing it again within "
            f"{self.retry_interval(current):g} s",
            domain,
            {"primary_up_since": status.since},
        )
        d.addErrback(lambda f: self.log.failure("cannot record an intake hint", f))

    # -- probing ---------------------------------------------------------------------------------

    def _tick(self) -> None:
        # An exception here would stop the LoopingCall, and with it all monitoring, for good.
        try:
            self._tick_once()
        except Exception:
            self.log.failure("monitor tick failed; trying again at the next one")

    def _tick_once(self) -> None:
        now = self._clock.seconds()
        monitored = {d.name: d for d in self._domains.all() if d.monitored}
        if self._domains.loaded:  # an empty list before the first load says nothing
            for name in sorted(set(self._last_start) | set(self._statuses)):
                if name in monitored or name in self._busy:
                    continue  # a probe still running may yet write: retire after it
                self._last_start.pop(name, None)
                self._last_hint.pop(name, None)
                self._urgent.discard(name)
                if name in self._statuses and now >= self._retire_after.get(name, now):
                    why = (
                        "the domain is no longer protected"
                        if self._domains.get(name) is None
                        else "the domain is no longer monitored"
                    )
                    self._run(name, self._retire(name, why))
        for name, domain in monitored.items():
            self._retire_after.pop(name, None)
            self._maybe_probe(domain, now)

    def _maybe_probe(self, domain: Domain, now: float) -> None:
        """Start a probe of ``domain`` if none is running and its gap has passed."""
        name = domain.name
        last = self._last_start.get(name)
        if name in self._busy or (last is not None and now < last + self.gap(domain)):
            return
        self._last_start[name] = now
        self._urgent.discard(name)
        self._run(name, self._probe(domain))

    def _run(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        d = Deferred.fromCoroutine(work)
        self._busy[name] = d
        d.addErrback(self._crashed, name)
        d.addBoth(self._done, name)

    def _crashed(self, failure: Failure, name: str) -> None:
        if not failure.check(CancelledError):
            self.log.failure("monitoring {domain} failed", failure, domain=name)

    def _done(self, _: object, name: str) -> None:
        self._busy.pop(name, None)
        if not self._running:
            return
        # A probe that took its gap or more (a hanging primary) starts the next one now, not at
        # the next tick.
        try:
            domain = self._domains.get(name)
            if domain is not None and domain.monitored:
                self._maybe_probe(domain, self._clock.seconds())
        except Exception:
            self.log.failure("starting the next probe of {domain} failed", domain=name)

    async def _probe(self, domain: Domain) -> None:
        started = self._clock.seconds()
        timeout = self._settings.probe_timeout
        error: str | None = None
        try:
            d = self._prober.probe(domain, timeout, self._settings.probe_connect_timeout)
            await d.addTimeout(timeout + GRACE, self._clock)
        except DeferredTimeoutError:
            error = f"the probe did not finish within {timeout + GRACE:g} s"
        except Exception as e:
            error = str(e) or type(e).__name__
        if not self._running:
            return
        current = self._domains.get(domain.name)
        if current is None or not current.monitored:
            return  # removed while we probed it
        await self._apply(current, error, started)

    async def _apply(self, domain: Domain, error: str | None, started: float) -> None:
        now = self._clock.seconds()
        name = domain.name
        old = self._statuses.get(name) or DomainStatus(name)
        new, change = transition(
            old, error, now, self._down_after(domain), self._up_after(domain), started
        )
        if error is not None and change is None:
            self.log.info(
                "probe of {domain} ({relay}) failed ({n} in a row): {error}",
                domain=name,
                relay=str(domain.relay),
                n=new.consecutive_failures,
                error=error,
            )
        # The outage record first.  If the store fails here, the exception leaves the status as
        # it was, so the next probe makes the same transition and tries again.
        outage: Outage | None = None
        stale = False
        try:
            if change == "down":
                assert new.since is not None
                reason = new.last_probe_error or "no answer"
                outage = await self._store.open_outage(name, new.since, reason)
                self._outage_checked.add(name)
            elif change == "up":
                assert new.since is not None
                outage = await self._store.close_outage(name, new.since)
                self._outage_checked.add(name)
            elif error is None and new.health == "up" and name not in self._outage_checked:
                # It answers, is up, and was never checked in this process: an outage still open
                # in the store was left by a crash before its "down" status was saved.  Close it
                # as a recovery.
                outage = await self._store.close_outage(name, now)
                stale = outage is not None
                self._outage_checked.add(name)
        except BaseException:
            self._outage_checked.discard(name)  # the store may have done it all the same
            raise
        self._statuses[name] = new
        try:
            await self._store.save_status(new)
        except Exception:
            self.log.failure("cannot save the status of {domain}; carrying on", domain=name)
        if change == "down":
            assert outage is not None
            await self._went_down(domain, outage)
        elif change == "up" or stale:
            await self._came_up(domain, outage, stale)
        elif change == "first_up":
            self.log.info("primary of {domain} ({relay}) is up", domain=name, relay=domain.relay)

    async def _went_down(self, domain: Domain, outage: Outage) -> None:
        queued = await self._queued(domain.name)
        name = display_domain(domain.name)
        await self._record(
            "outage.started",
            f"primary of {name} ({domain.relay}) is down: {outage.reason}",
            domain.name,
            {
                "outage_id": outage.id,
                "started_at": outage.started_at,
                "reason": outage.reason,
                "queued": queued,
            },
        )
        self._alert(self._alerts.outage_started, domain, outage, queued)

    async def _came_up(self, domain: Domain, outage: Outage | None, stale: bool) -> None:
        queued = await self._queued(domain.name)
        self._recover(domain.name)  # at once: events and alerts must not hold up the drain
        name = display_domain(domain.name)
        if outage is None:  # a crash closed it already, or it was never opened
            await self._record(
                "outage.ended",
                f"primary of {name} ({domain.relay}) is up again",
                domain.name,
                {"queued": queued},
            )
            return
        note = " (an outage left open by a restart)" if stale else ""
        await self._record(
            "outage.ended",
            f"primary of {name} ({domain.relay}) is up again after {outage.duration:g} s{note}",
            domain.name,
            {
                "outage_id": outage.id,
                "started_at": outage.started_at,
                "ended_at": outage.ended_at,
                "duration": outage.duration,
                "queued": queued,
            },
        )
        self._alert(self._alerts.outage_ended, domain, outage, queued)

    async def _retire(self, name: str, why: str) -> None:
        """
        ``name`` is no longer probed (removed, or unmonitored): close its open outage, if any, and
        reset its status, so that nothing stays "down" or open for ever.  A store failure leaves
        the status in place, and the tick tries again a probe interval later.
        """
        status = self._statuses[name]
        reset = DomainStatus(name, last_delivery_at=status.last_delivery_at)
        if status != reset:
            try:
                outage = await self._store.close_outage(name, self._clock.seconds())
                if outage is not None:
                    await self._retired_outage(outage, why)
                await self._store.save_status(reset)
            except Exception:
                self._retire_after[name] = self._clock.seconds() + self._settings.probe_interval
                self.log.failure("cannot retire {domain} ({why})", domain=name, why=why)
                return
        self._statuses.pop(name, None)
        self._retire_after.pop(name, None)
        self._outage_checked.discard(name)
        self._urgent.discard(name)

    async def _retired_outage(self, outage: Outage, why: str) -> None:
        name = outage.domain
        self.log.info(
            "outage of {domain} closed after {duration:g} s: {why}",
            domain=name,
            duration=outage.duration,
            why=why,
        )
        await self._record(
            "outage.ended",
            f"outage of {display_domain(name)} closed after {outage.duration:g} s: {why}, so its "
            "primary is no longer probed",
            name,
            {
                "outage_id": outage.id,
                "started_at": outage.started_at,
                "ended_at": outage.ended_at,
                "duration": outage.duration,
                "closed_because": why,
            },
        )

    async def _record(self, kind: str, message: str, domain: str, data: dict[str, object]) -> None:
        try:
            await self._events.record_event(kind, message, domain, data)
        except Exception:
            self.log.failure("cannot record a {kind} event for {domain}", kind=kind, domain=domain)

    async def _queued(self, domain: str) -> int:
        try:
            stats = await self._queue.queue_stats()
        except Exception:
            self.log.failure("cannot read the queue depth for an alert")
            return 0
        return next((s.queued for s in stats if s.domain == domain), 0)

    def _alert(
        self,
        send: Callable[[Domain, Outage, int], Deferred[None]],
        domain: Domain,
        outage: Outage,
        queued: int,
    ) -> None:
        """Send an alert in the background: a slow alert sender must not stall the monitor."""
        try:
            d = send(domain, outage, queued)
        except Exception:
            self.log.failure("sending an outage alert for {domain} failed", domain=domain.name)
            return
        d.addErrback(
            lambda f: self.log.failure(
                "sending an outage alert for {domain} failed", f, domain=domain.name
            )
        )

    def _recover(self, name: str) -> None:
        try:
            result = self._on_recovery(name)
        except Exception:
            self.log.failure("starting the drain of {domain} failed", domain=name)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda f: self.log.failure("draining {domain} failed", f, domain=name)
            )
