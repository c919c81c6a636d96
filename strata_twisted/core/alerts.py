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
from datetime import UTC, datetime
from typing import Final, Literal

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from strata_twisted.model import Domain, Outage, display_domain

# At most one alert of a kind per domain in this many seconds (issue #5: "no alert storms").
DEFAULT_ALERT_WINDOW: Final = 900.0

AlertKind = Literal["started", "ended"]


class IAlertSender(Interface):
    """Delivers outage alerts to the people responsible for a domain."""

    def outage_started(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:  # noqa: N805
        """The primary of ``domain`` is down since ``outage.started_at``; ``queued`` wait."""

    def outage_ended(domain: Domain, outage: Outage, queued: int) -> Deferred[None]:  # noqa: N805
        """
        The primary of ``domain`` answers again (``outage.ended_at`` and ``duration`` are set);
        ``queued`` messages are about to be delivered to it.
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


def _send(
    sender: IAlertSender, kind: AlertKind, domain: Domain, outage: Outage, queued: int
) -> Deferred[None]:
    """Call one kind of alert on ``sender``; an exception it raises becomes a failed Deferred."""
    method: Callable[[Domain, Outage, int], Deferred[None]] = (
        sender.outage_started if kind == "started" else sender.outage_ended
    )
    return maybeDeferred(method, domain, outage, queued)


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
        return self._throttled("started", domain, outage, queued)

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return self._throttled("ended", domain, outage, queued)

    def _throttled(
        self, kind: AlertKind, domain: Domain, outage: Outage, queued: int
    ) -> Deferred[None]:
        now = self._clock.seconds()
        # Forget what has left the window, so removed domains do not pile up.
        self._last_sent = {
            key: when for key, when in self._last_sent.items() if now - when < self._window
        }
        last = self._last_sent.get((kind, domain.name))
        if last is not None:
            self.log.info(
                "alert suppressed: outage {kind} for {domain} (outage {outage}); one was sent "
                "{ago} ago, at most one per {window}",
                kind=kind,
                domain=display_domain(domain.name),
                outage=outage.id,
                ago=format_duration(now - last),
                window=format_duration(self._window),
            )
            return succeed(None)
        self._last_sent[(kind, domain.name)] = now
        return _send(self._sender, kind, domain, outage, queued)


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
        return ensureDeferred(self._all("started", domain, outage, queued))

    def outage_ended(self, domain: Domain, outage: Outage, queued: int) -> Deferred[None]:
        return ensureDeferred(self._all("ended", domain, outage, queued))

    async def _all(self, kind: AlertKind, domain: Domain, outage: Outage, queued: int) -> None:
        sends = [_send(s, kind, domain, outage, queued) for s in self._senders]  # all start now
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
