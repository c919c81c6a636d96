"""
Retention of shadow mail (issue #4): a daily job that removes shadow-mailbox messages older than
each domain's retention period, then deletes the bodies nobody needs any more.

For each protected domain, once a day (the first run soon after start):

1. ``purge_older_than(domain, now - days * 86400)`` removes the old messages from every mailbox
   of every user of the domain (``days``: the domain's ``retention_days``, else the global
   default, 30);
2. ``unreferenced_messages(what was purged)`` says which of those bodies nobody needs: a body
   shared with another mailbox, or still waiting in the relay queue, is kept;
3. ``delete_messages(those)`` deletes them.  The store checks again, in the same step as the
   deletion, that nothing needs them, so a release or a copy racing with this job can never cost
   the relay queue a body.

A domain that purged something gets one ``retention.purged`` event.  A failure for one domain is
logged and the job goes on with the next; nothing here ever stops the loop.  A message that was
purged but whose body deletion failed is not retried by the next run (it is no longer in any
mailbox, so no purge names it again): ``unreferenced_messages()`` with no argument still finds
it.  Time comes only from the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from strata_twisted.core.domains import DomainCache
from strata_twisted.interfaces import IEventStore, IMailboxStore, IMessageStore
from strata_twisted.model import Domain, display_domain

# Days shadow messages are kept when the domain sets none (config: imap.retention_days).
DEFAULT_RETENTION_DAYS: Final = 30
DAY: Final = 86400.0
# Seconds between start() and the first run: after startup's own work, not in the middle of it.
FIRST_RUN_DELAY: Final = 60.0


@dataclass(frozen=True)
class DomainPurge:
    """What one run did for one domain: messages removed from mailboxes, bodies deleted."""

    domain: str
    days: int
    before: float
    purged: int
    deleted: int


class RetentionJob:
    """Purges old shadow mail daily.  See the module docstring."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        domains: DomainCache,
        mailboxes: IMailboxStore,
        messages: IMessageStore,
        events: IEventStore,
        default_days: int = DEFAULT_RETENTION_DAYS,
        interval: float = DAY,
        *,
        first_run_delay: float = FIRST_RUN_DELAY,
    ) -> None:
        self._clock = clock
        self._domains = domains
        self._mailboxes = mailboxes
        self._messages = messages
        self._events = events
        self._default_days = default_days
        self._interval = interval
        self._first_run_delay = first_run_delay
        self._first: IDelayedCall | None = None
        self._loop = LoopingCall(self._run_from_loop)
        self._loop.clock = clock
        self._running = False

    # -- scheduling ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run ``first_run_delay`` seconds from now, then every ``interval`` seconds."""
        if self._first is not None or self._loop.running:
            return
        self._first = self._clock.callLater(self._first_run_delay, self._start_loop)

    def _start_loop(self) -> None:
        self._first = None
        d = self._loop.start(self._interval, now=True)
        d.addErrback(lambda f: self.log.failure("retention loop stopped", f))

    def stop(self) -> None:
        if self._first is not None:
            if self._first.active():
                self._first.cancel()
            self._first = None
        if self._loop.running:
            self._loop.stop()

    def _run_from_loop(self) -> Deferred[list[DomainPurge]]:
        # run_once never fails, so the LoopingCall never stops.
        return Deferred.fromCoroutine(self.run_once())

    # -- one run ---------------------------------------------------------------------------------

    def days_for(self, domain: Domain) -> int:
        """The domain's retention period in days: its own, else the global default."""
        return self._default_days if domain.retention_days is None else domain.retention_days

    async def run_once(self) -> list[DomainPurge]:
        """
        Purge every protected domain once; return what was done for the domains that purged
        something.  A run asked for while one is going does nothing (returns []).
        """
        if self._running:
            return []
        self._running = True
        try:
            done = []
            for domain in self._domains.all():
                try:
                    purge = await self._purge(domain)
                except Exception:
                    self.log.failure(
                        "retention for {domain} failed; trying again at the next run",
                        domain=domain.name,
                    )
                    continue
                if purge is not None:
                    done.append(purge)
            return done
        finally:
            self._running = False

    async def _purge(self, domain: Domain) -> DomainPurge | None:
        days = self.days_for(domain)
        before = self._clock.seconds() - days * DAY
        purged = await self._mailboxes.purge_older_than(domain.name, before)
        if not purged:
            return None
        ids = sorted({p.message_id for p in purged})
        unreferenced = await self._mailboxes.unreferenced_messages(ids)
        deleted = await self._messages.delete_messages(unreferenced) if unreferenced else 0
        purge = DomainPurge(domain.name, days, before, len(purged), deleted)
        self.log.info(
            "retention: purged {purged} shadow message(s) older than {days} days for {domain};"
            " {deleted} bodies deleted",
            purged=purge.purged,
            days=days,
            domain=domain.name,
            deleted=deleted,
        )
        try:
            await self._events.record_event(
                "retention.purged",
                f"purged {purge.purged} shadow message(s) older than {days} days from "
                f"{display_domain(domain.name)}'s mailboxes; {deleted} message bodies deleted "
                f"({len(ids) - deleted} still needed elsewhere)",
                domain.name,
                {
                    "days": days,
                    "before": before,
                    "purged": purge.purged,
                    "messages": len(ids),
                    "deleted": deleted,
                },
            )
        except Exception:
            self.log.failure("cannot record a retention event for {domain}", domain=domain.name)
        return purge
