"""
Telling people that a primary went down or came back.

The monitor (``core/monitor.py``) calls an L{IAlertSender} when it opens or closes an outage.
L{LogAlertSender} only writes a clear log line; email and SMS senders (#5) implement the same
interface (the webhook sender is ``server/webhook.py``: it does HTTP, so it does not live here).
An alert sender must never raise into the monitor: a failure belongs in its Deferred, and the
monitor logs it and carries on.

Senders compose: L{FanOutAlertSender} sends each alert to several senders, and
L{ThrottledAlertSender} keeps a flapping primary from turning into an alert storm (at most one
alert per kind per domain per window, on the injected clock).  This module never does I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from strata_twisted.core.domains import DomainCache
from strata_twisted.interfaces import IEventStore, IQueueStore
from strata_twisted.model import Domain, Outage, display_domain

# At most one alert of a kind per domain in this many seconds (issue #5: "no alert storms").
DEFAULT_ALERT_WINDOW: Final = 900.0

AlertKind = Literal["started", "ended", "stale"]


class IAlertSender(Interface):
    """Delivers outage alerts to the people responsible for a domain."""

    def outage_started(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:  # noqa: N805
        """The primary of ``domain`` is down since ``outage.started_at``; ``queued`` wait."""

    def outage_ended(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:  # noqa: N805
        """
        The primary of ``domain`` answers again (``outage.ended_at`` and ``duration`` are set);
        ``queued`` messages are about to be delivered to it.
        """

    def queue_stale(domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:  # noqa: N805
        """
        ``domain``'s oldest queued message arrived at ``oldest_received_at`` and is older than
        ``[alerts] queue_age`` now: ``queued`` messages wait.
        """


def format_time(seconds: float) -> str:
    """A timestamp for people: ``2027-01-15 08:00:00 UTC``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float) -> str:
    """``3h 2m 5s``, ``45s``: how long an outage lasted."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@implementer(IAlertSender)
class LogAlertSender:
    """Alerts as log lines, until #5 sends them by email and SMS."""

    log = Logger()

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.log.warn(
            "ALERT: primary of {domain} ({relay}) is DOWN since {since}: {reason} "
            "({queued} message(s) queued)",
            domain=display_domain(domain.name),
            relay=str(domain.relay),
            since=format_time(outage.started_at),
            reason=outage.reason,
            queued=queued,
        )
        return succeed(None)

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        self.log.warn(
            "ALERT: primary of {domain} ({relay}) is UP again since {until} after {duration} "
            "down; delivering {queued} queued message(s)",
            domain=display_domain(domain.name),
            relay=str(domain.relay),
            until=format_time(outage.ended_at if outage.ended_at is not None else 0.0),
            duration=format_duration(outage.duration or 0.0),
            queued=queued,
        )
        return succeed(None)

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        self.log.warn(
            "ALERT: {queued} message(s) for {domain} wait; the oldest arrived {since}",
            domain=display_domain(domain.name),
            since=format_time(oldest_received_at),
            queued=queued,
        )
        return succeed(None)


@dataclass(frozen=True)
class Alert:
    """One alert on its way: its kind and the arguments of the IAlertSender method for it."""

    kind: AlertKind
    domain: Domain
    queued: int
    outage: Outage | None = None  # started, ended
    oldest_received_at: float = 0.0  # stale

    def send(self, sender: IAlertSender) -> Deferred[None]:
        """Call ``sender``'s method for this alert; an exception becomes a failed Deferred."""
        if self.kind == "stale":
            stale: Callable[[Domain, float, int], Deferred[None]] = sender.queue_stale
            return maybeDeferred(stale, self.domain, self.oldest_received_at, self.queued)
        assert self.outage is not None
        method: Callable[[Domain, Outage, int], Deferred[None]] = (
            sender.outage_started if self.kind == "started" else sender.outage_ended
        )
        return maybeDeferred(method, self.domain, self.outage, self.queued)


@implementer(IAlertSender)
class ThrottledAlertSender:
    """
    At most one alert per kind (started / ended) per domain per ``window`` seconds.

    The window of a kind and domain starts when an alert of it is handed to the wrapped sender,
    whether that send then succeeds or fails: a primary flapping while the alert path is broken
    must not retry into a storm either.  A suppressed alert is logged and its Deferred fires None.
    Kinds are independent, so a flap still gets one "down" and one "up" alert per window.
    """

    log = Logger()

    def __init__(
        self, sender: IAlertSender, clock: IReactorTime, window: float = DEFAULT_ALERT_WINDOW
    ) -> None:
        self._sender = sender
        self._clock = clock
        self._window = window
        # (kind, ASCII domain name) -> when the last alert of it was sent.
        self._last_sent: dict[tuple[AlertKind, str], float] = {}

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return self._throttled(Alert("started", domain, queued, outage))

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return self._throttled(Alert("ended", domain, queued, outage))

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        return self._throttled(Alert("stale", domain, queued, None, oldest_received_at))

    def _throttled(self, alert: Alert) -> Deferred[None]:
        kind, domain = alert.kind, alert.domain
        now = self._clock.seconds()
        # Forget what has left the window, so removed domains do not pile up.
        self._last_sent = {
            key: when for key, when in self._last_sent.items() if now - when < self._window
        }
        last = self._last_sent.get((kind, domain.name))
        if last is not None:
            self.log.info(
                "alert suppressed: {kind} for {domain} (outage {outage}); one was sent {ago} "
                "ago, at most one per {window}",
                kind=kind,
                domain=display_domain(domain.name),
                outage=alert.outage.id if alert.outage is not None else None,
                ago=format_duration(now - last),
                window=format_duration(self._window),
            )
            return succeed(None)
        self._last_sent[(kind, domain.name)] = now
        return alert.send(self._sender)


@implementer(IAlertSender)
class FanOutAlertSender:
    """
    Sends every alert to each of ``senders`` (email, webhook, log...), all at once.

    One sender's failure does not stop the others.  The Deferred fires once all have finished:
    None when all succeeded, else the first failure (in ``senders`` order); the other failures are
    logged here so none is lost.
    """

    log = Logger()

    def __init__(self, senders: Sequence[IAlertSender]) -> None:
        self._senders = tuple(senders)

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return ensureDeferred(self._all(Alert("started", domain, queued, outage)))

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return ensureDeferred(self._all(Alert("ended", domain, queued, outage)))

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        return ensureDeferred(self._all(Alert("stale", domain, queued, None, oldest_received_at)))

    async def _all(self, alert: Alert) -> None:
        domain = alert.domain
        sends = [alert.send(s) for s in self._senders]  # all start now
        failures: list[Failure] = []
        for sent in sends:
            try:
                await sent
            except Exception:
                failures.append(Failure())
        for extra in failures[1:]:
            self.log.failure(
                "sending an outage alert for {domain} failed", extra, domain=domain.name
            )
        if failures:
            failures[0].raiseException()


class QueueAgeWatch:
    """
    Alerts when a protected domain's oldest queued message is older than ``age`` seconds: once
    when it crosses that age, and again only after the queue has caught up (no message that
    old) and falls behind again.  Checks every ``interval`` seconds on the injected clock.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        queue: IQueueStore,
        domains: DomainCache,
        alerts: IAlertSender,
        age: float,
        interval: float = 60.0,
    ) -> None:
        self._clock = clock
        self._queue = queue
        self._domains = domains
        self._alerts = alerts
        self._age = age
        self._alerted: set[str] = set()
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        if self._age > 0 and not self._loop.running:
            d = self._loop.start(self._interval, now=False)
            d.addErrback(lambda f: self.log.failure("queue age watch stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[None]:
        """Look once.  Never fails."""
        return ensureDeferred(self._check())

    async def _check(self) -> None:
        try:
            stats = await self._queue.queue_stats()
        except Exception:
            self.log.failure("cannot read the queue for the queue age alert")
            return
        now = self._clock.seconds()
        late = set()
        for stat in stats:
            domain = self._domains.get(stat.domain)
            oldest = stat.oldest_received_at
            if domain is None or oldest is None or not stat.queued or now - oldest < self._age:
                continue
            late.add(stat.domain)
            if stat.domain in self._alerted:
                continue
            self._alerted.add(stat.domain)
            d = maybeDeferred(self._alerts.queue_stale, domain, oldest, stat.queued)
            d.addErrback(self._failed, stat.domain)
        self._alerted &= late

    def _failed(self, failure: Failure, name: str) -> None:
        self.log.failure("sending a queue age alert for {domain} failed", failure, domain=name)


_KIND_NAMES: Final = {"started": "outage.started", "ended": "outage.ended", "stale": "queue.stale"}


@implementer(IAlertSender)
class RecordedAlertSender:
    """
    Records in the event log each alert that ``sender`` sent (``alert.<channel>``) or failed to
    send (``alert.failed``, with the reason), for the domains ``applies`` to (those that have
    that channel configured).  The sender's failure is passed on.
    """

    log = Logger()

    def __init__(
        self,
        sender: IAlertSender,
        events: IEventStore,
        channel: str,
        applies: Callable[[Domain], bool],
    ) -> None:
        self._sender = sender
        self._events = events
        self._channel = channel
        self._applies = applies

    def outage_started(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return ensureDeferred(self._send(Alert("started", domain, queued, outage)))

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return ensureDeferred(self._send(Alert("ended", domain, queued, outage)))

    def queue_stale(self, domain: Domain, oldest_received_at: float, queued: int) -> Deferred[None]:
        return ensureDeferred(self._send(Alert("stale", domain, queued, None, oldest_received_at)))

    async def _send(self, alert: Alert) -> None:
        domain = alert.domain
        if not self._applies(domain):
            return
        kind = _KIND_NAMES[alert.kind]
        name = display_domain(domain.name)
        data: dict[str, object] = {"kind": kind, "channel": self._channel}
        try:
            await alert.send(self._sender)
        except Exception as e:
            error = str(e) or type(e).__name__
            await self._record(
                "alert.failed", f"{kind} alert for {name} by {self._channel} failed: {error}",
                domain.name, {**data, "error": error},
            )  # fmt: skip
            raise
        await self._record(
            f"alert.{self._channel}", f"{kind} alert for {name} sent by {self._channel}",
            domain.name, data,
        )  # fmt: skip

    async def _record(self, kind: str, text: str, domain: str, data: dict[str, object]) -> None:
        try:
            await self._events.record_event(kind, text, domain, data)
        except Exception:
            self.log.failure("cannot record a {kind} event", kind=kind)


def redacted(url: str) -> str:
    """The URL without user info, query or fragment: what may go into logs and errors."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an invalid URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
