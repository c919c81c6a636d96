"""
Telling people that a primary went down or came back.

The monitor (``core/monitor.py``) calls an L{IAlertSender} when it opens or closes an outage.
L{LogAlertSender} only writes a clear log line; email and SMS senders (#5) implement the same
interface.  An alert sender must never raise into the monitor: a failure belongs in its Deferred,
and the monitor logs it and carries on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from twisted.internet.defer import succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from strata_twisted.model import Domain, Outage, display_domain

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


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
