"""
The relay loop: drain each protected domain's queue to its primary, in arrival order.

Every ``relay.interval`` seconds (a ``LoopingCall`` on the injected clock), and at once when asked
(``kick``: a flush, or the monitor seeing the primary recover), each domain with due entries is
drained over one connection: its entries in ``seq`` order, the recipients of one message in one
transaction, each recipient's result recorded before the next message goes (DESIGN decision 4).
A batch (``relay.batch_size`` entries) ends at a message's end (IQueueStore.due_entries), and a
transaction names each recipient once (L{recipient_key}): a queue that holds one recipient twice
for a message (written before intake kept one per recipient) sends it once and records the
result on each entry, so no recipient gets a message twice.
The next message is on the wire while the results are committed, but its final "." (what makes
the primary take it) goes only once they are: no crash of Strata can undo a result, so it can
resend at most the message in flight.  The results are fsync'd after each batch
(``relay.sync_each_result``: after each message).  The messages are read ahead in windows, one
storage call each.  By reply:

- 2xx: delivered, with the time and the server's reply; never delivered again.
- 4xx: deferred to the next run; the messages behind it still go.
- 5xx: bounced with one RFC 3464 DSN to the envelope sender (never for ``<>``), or held for an
  admin when the domain sets ``hold_rejected``.
- No session (the primary refuses, times out, fails TLS): every due entry of the domain stays
  queued with the failed attempt on it (``attempts``, ``last_error``, ``last_attempt_at``;
  one set-wise storage step for all of them, L{IQueueStore.defer_due}), and one
  ``relay.unreachable`` event.
- The connection lost: everything not yet answered stays queued as it was.
- Entries older than the queue lifetime: bounced with a DSN (status 4.4.7) and an event.

Each drain that gets a session is in the event log: ``relay.drain_started``, then
``relay.drain_finished`` with its counts and duration (see L{RelayLoop._drain_until_done}).

Mail for a domain that is not protected goes to that domain's mail exchangers (RFC 5321 §5.1,
``core/routes.py``, through the loop's L{MXResolver}), or to the configured smarthost, when it
is outbound (a user sent it through submission; an alert) or one of our own DSNs (from ``<>``).
Outbound mail is retried on a backoff schedule, its sender told once when it is late, and it
is DKIM-signed as it leaves (an L{OutboundSigner}).  Other mail for such a domain was accepted
while it was protected: it stays queued (retried each run, expiring at the lifetime) until an
admin protects the domain again, bounces or deletes it, with one ``relay.unprotected`` event
per run.  MX routing: the hosts are tried in order and the first that takes a session gets the
batch, with the same per-reply rules.  A null MX (RFC 7505) bounces the entries; no route
(NXDOMAIN, a DNS failure, no host answering) keeps them queued until their next attempt, with
the reason as their last error and one ``relay.no_route`` event per drain.  Without a resolver
or a smarthost such mail just stays queued.

It knows nothing of sockets or DNS: a L{RelayConnector} opens connections (``server/relay.py``
with the SMTP client engine; a scripted fake in tests), an L{MXResolver} finds routes.
"""

from __future__ import annotations

import email.utils
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from strata_twisted.clock import SecondsClock
from strata_twisted.config import OutboundSettings, RelaySettings
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.dsn import FailedRecipient, build_dsn, status_of
from strata_twisted.core.intake import new_queue_id, store_generated
from strata_twisted.core.metrics import NO_METRICS, OTHER_DOMAIN, MetricsRecorder
from strata_twisted.core.routes import MXResolver, NullMX, RouteError, route_domain
from strata_twisted.interfaces import IEventStore, IMessageStore, IQueueStore
from strata_twisted.model import (
    BOUNCED,
    BOUNCED_OUTCOME,
    DEFERRED_OUTCOME,
    DELIVERED_OUTCOME,
    HELD_OUTCOME,
    POSTMASTER_HOLD,
    AttemptResult,
    Delivery,
    Domain,
    QueueEntry,
    RelayTarget,
    StoredMessage,
    TLSPolicy,
    recipient_key,
    split_repeated,
)

# How much of each message's body the relay reads ahead (all of a typical message); the rest of a
# larger body is read while it is sent.
PREFETCH = 256 * 1024
# The relay reads the messages it is about to send in windows of at most this many, and at most this
# many bytes of body heads: one storage call each, while the window before goes out.
READ_AHEAD_MESSAGES = 32
READ_AHEAD_BYTES = 4 * 1024 * 1024

# What a drain counts besides the outcomes: a bounce because the entry outlived the queue lifetime.
EXPIRED = "expired"

# RFC 7505 §4.2: the status for mail to a domain with a null MX.
NULL_MX_REASON = "domain accepts no mail (null MX, RFC 7505)"
NULL_MX_STATUS = "5.1.10"


@dataclass(frozen=True)
class RelayedMessage:
    """One transaction for the primary: a stored message and this domain's recipients of it."""

    message: StoredMessage
    entries: tuple[QueueEntry, ...]
    head: bytes = b""  # the body's first bytes, read ahead; the connection reads the rest
    # Sent before the stored bytes: the DKIM-Signature of outbound mail (one header field).
    prefix: bytes = b""
    # Further entries of the message for a recipient already in ``entries`` (same
    # recipient_key): not sent again, each gets the result of that recipient.
    duplicates: tuple[QueueEntry, ...] = ()

    @property
    def size(self) -> int:
        """The size on the wire (before dot-stuffing): the prefix and the stored message."""
        return len(self.prefix) + self.message.size


@dataclass(frozen=True)
class RecipientReply:
    """The primary's answer for one recipient: the RCPT reply if it refused it, else DATA's."""

    recipient: str
    code: int
    text: str  # the whole reply line, e.g. "250 2.0.0 Ok: queued as 4Xyz"


class RelayConnection(Protocol):
    """An open SMTP session with a primary."""

    @property
    def alive(self) -> bool:
        """False once the session is over (421, connection lost, timeout)."""

    @property
    def remote(self) -> str:
        """The host we talk to, for logs and DSNs."""

    def send(
        self, message: RelayedMessage, after: Deferred[bool] | None = None
    ) -> Deferred[list[RecipientReply]]:
        """
        Deliver one message; one reply per entry, in the entries' order.  Never fails: a
        session that dies mid-way answers the unanswered recipients with a 4xx reply.

        ``after`` fires once the previous message's results are recorded.  The envelope and the
        content may go at once, but the final "." that completes the message waits for it (a
        server discards a message whose connection ends before the ".", RFC 5321 §3.8).  True
        lets the "." go; False (the results could not be recorded) ends the session instead, and
        every recipient gets a 4xx reply.
        """

    def close(self) -> Deferred[None]:
        """QUIT and disconnect.  Never fails."""


class RelayConnector(Protocol):
    def connect(self, domain: Domain) -> Deferred[RelayConnection]:
        """Open a session with ``domain``'s relay host; fails when no session can be had."""


class OutboundSigner(Protocol):
    def signature(self, message: RelayedMessage) -> Deferred[bytes]:
        """
        The header field(s) to put before ``message`` when it leaves for another domain: its
        DKIM-Signature when its From: domain has a key and it is not signed for it yet, else
        b"".  Never fails (a message that cannot be signed goes unsigned, and is logged).
        """


def _read_ahead_windows(
    groups: list[tuple[QueueEntry, ...]],
) -> list[list[tuple[QueueEntry, ...]]]:
    """Cut the transactions into windows the relay reads ahead in one storage call each: at most
    READ_AHEAD_MESSAGES, and at most READ_AHEAD_BYTES of body heads unless a single one is more."""
    windows: list[list[tuple[QueueEntry, ...]]] = []
    size = 0
    for group in groups:
        head = min(group[0].size, PREFETCH)
        if not windows or len(windows[-1]) >= READ_AHEAD_MESSAGES or size + head > READ_AHEAD_BYTES:
            windows.append([])
            size = 0
        windows[-1].append(group)
        size += head
    return windows


def _relayed(message: StoredMessage, group: tuple[QueueEntry, ...], head: bytes) -> RelayedMessage:
    """One transaction for a message's entries: each recipient once, the rest as duplicates."""
    entries, duplicates = split_repeated(group, lambda entry: entry.recipient)
    return RelayedMessage(message, tuple(entries), head, duplicates=tuple(duplicates))


def _group_by_message(entries: Sequence[QueueEntry]) -> list[tuple[QueueEntry, ...]]:
    """Consecutive entries of the same message form one transaction (they are adjacent in seq)."""
    groups: list[list[QueueEntry]] = []
    for entry in entries:
        if groups and groups[-1][0].message_id == entry.message_id:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return [tuple(group) for group in groups]


@dataclass
class _Drain:
    """What one drain of a domain has done so far, for its ``relay.drain_finished`` event."""

    started_at: float | None = None  # when its first session opened; None: not started
    remote: str = ""  # the host of its first session
    # Results by outcome (DELIVERED_OUTCOME, ...) and EXPIRED, counted as they are recorded.
    counts: Counter[str] = field(default_factory=Counter)


class RelayLoop:
    """Drains the queue of every protected domain to its primary."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        queue: IQueueStore,
        messages: IMessageStore,
        events: IEventStore,
        domains: DomainCache,
        connector: RelayConnector,
        settings: RelaySettings,
        hostname: str,
        resolver: MXResolver | None = None,
        outbound: OutboundSettings | None = None,
        signer: OutboundSigner | None = None,
        metrics: MetricsRecorder = NO_METRICS,
    ) -> None:
        """
        ``resolver``: routes for domains that are not protected; None keeps their mail queued
        (unless ``outbound`` names a smarthost).  ``signer``: signs outbound mail (DKIM).
        ``metrics``: told each recipient's result.
        """
        self._metrics = metrics
        self._clock = clock
        self._queue = queue
        self._messages = messages
        self._events = events
        self._domains = domains
        self._connector = connector
        self._settings = settings
        self._hostname = hostname
        self._resolver = resolver
        self._outbound = outbound if outbound is not None else OutboundSettings()
        self._smarthost = self._outbound.smarthost_target
        self._signer = signer
        self._draining: dict[str, Deferred[None]] = {}
        self._drains: dict[str, _Drain] = {}  # the bookkeeping of each running drain
        self._again: set[str] = set()
        self._loop = LoopingCall(self.run)
        self._loop.clock = clock

    # -- scheduling ------------------------------------------------------------------------------

    def start(self) -> None:
        """Run now, then every ``relay.interval`` seconds."""
        d = self._loop.start(self._settings.interval, now=True)
        d.addErrback(lambda f: self.log.failure("relay loop stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def run(self, force: bool = False) -> Deferred[None]:
        """One run over every domain with due entries (``force``: every queued entry is due)."""
        return Deferred.fromCoroutine(self._run(force))

    def kick(self, domain: str | None = None) -> Deferred[None]:
        """Drain now (a flush, or the primary just recovered); deferred entries go too."""
        if domain is None:
            return self.run(force=True)
        return self.drain(domain, force=True)

    async def _run(self, force: bool) -> None:
        try:
            due = await self._queue.due_domains(self._due_time(force))
        except Exception:
            self.log.failure("cannot read the queue; the relay tries again on its next run")
            return
        for name in due:
            self.drain(name, force)
        # Wait for the drains (including ones already running) so tests can see a run finish.
        for d in list(self._draining.values()):
            await _quiet(d)

    def drain(self, domain: str, force: bool = False) -> Deferred[None]:
        """Drain one domain; if it is already draining, drain it again right after."""
        running = self._draining.get(domain)
        if running is not None:
            self._again.add(domain)
            return _quiet(running)
        d = Deferred.fromCoroutine(self._drain_until_done(domain, force))
        self._draining[domain] = d

        def done(_: object) -> None:
            del self._draining[domain]

        d.addBoth(done)
        return _quiet(d)

    def _due_time(self, force: bool) -> float:
        # A forced run treats every QUEUED entry as due, deferred ones included.
        return float("inf") if force else self._clock.seconds()

    # -- draining ----------------------------------------------------------------------------------

    async def _drain_until_done(self, name: str, force: bool) -> None:
        """
        One drain of ``name``: batch after batch until nothing is due (or the session is lost),
        and again when asked meanwhile.

        A drain counts as started once a session is open and there is due mail to send on it:
        then ``relay.drain_started`` is recorded, and at its end ``relay.drain_finished`` with
        what it recorded (delivered; deferred; failed: bounced, held, expired, counted from its
        first read of the queue) and its duration on the injected clock from that first
        session.  A run that finds nothing due, or cannot reach the primary, records neither:
        every ``relay.interval`` (300 s) during an outage that would be a pair of empty events,
        where the one ``relay.unreachable`` (or ``relay.no_route``) already says what happened
        and the entries themselves carry the error.
        """
        drain = self._drains[name] = _Drain()
        try:
            while True:
                self._again.discard(name)
                try:
                    more = await self._drain_batch(name, force)
                except Exception:
                    self.log.failure("relay of {domain} failed; its mail stays queued", domain=name)
                    return
                if not more and name not in self._again:
                    return
        finally:
            del self._drains[name]
            if drain.started_at is not None:
                # Not awaited: a kick that arrives while the event is written must find this
                # drain over, or it would be lost.  The store writes events in order anyway.
                self._drain_finished(name, drain)

    async def _session_opened(self, name: str, remote: str) -> None:
        """A session with due mail is open: the drain has started, if this is its first."""
        drain = self._drains.get(name)
        if drain is None or drain.started_at is not None:
            return
        drain.started_at = self._clock.seconds()
        drain.remote = remote
        await self._events.record_event(
            "relay.drain_started", f"draining the queue to {remote}", name, {"relay": remote}
        )

    def _drain_finished(self, name: str, drain: _Drain) -> None:
        """Record ``relay.drain_finished`` for a drain that started.  Never fails."""
        assert drain.started_at is not None
        counts = drain.counts
        duration = self._clock.seconds() - drain.started_at
        failed = counts[BOUNCED_OUTCOME] + counts[HELD_OUTCOME] + counts[EXPIRED]
        data: dict[str, object] = {
            "relay": drain.remote,
            "delivered": counts[DELIVERED_OUTCOME],
            "deferred": counts[DEFERRED_OUTCOME],
            "failed": failed,
            "bounced": counts[BOUNCED_OUTCOME],
            "held": counts[HELD_OUTCOME],
            "expired": counts[EXPIRED],
            "duration": duration,
        }
        text = (
            f"drain to {drain.remote} finished in {duration:.1f} s: {data['delivered']} "
            f"delivered, {data['deferred']} deferred, {failed} failed ({data['bounced']} bounced,"
            f" {data['held']} held, {data['expired']} expired)"
        )
        self.log.info("{domain}: {text}", domain=name, text=text)
        d = self._events.record_event("relay.drain_finished", text, name, data)
        d.addErrback(lambda f: self.log.failure("cannot record the drain of {d}", f, d=name))

    def _count(self, domain: str, kind: str, n: int = 1) -> None:
        """Count ``n`` results of ``kind`` in the metrics and in ``domain``'s running drain."""
        self._measure(domain, kind, n)
        drain = self._drains.get(domain)
        if drain is not None:
            drain.counts[kind] += n

    def _measure(self, domain: str, kind: str, n: int) -> None:
        # A protected domain is its own label; any other (outbound mail) shares one.
        label = domain if self._domains.get(domain) is not None else OTHER_DOMAIN
        self._metrics.relay_results(label, kind, n)

    async def _attempt(self, result: AttemptResult, domain: str, kind: str = "") -> QueueEntry:
        """Record one attempt at an entry of ``domain``, and count it in its drain (as
        ``kind``, else as its outcome)."""
        updated = await self._queue.record_result(result)
        self._count(domain, kind or result.outcome)
        return updated

    async def _drain_batch(self, name: str, force: bool) -> bool:
        """Deliver one batch of ``name``'s due entries; True if another batch may be due."""
        if name == POSTMASTER_HOLD:
            # <Postmaster> mail an admin released before [server] postmaster was set: it has no
            # route and must not expire; the next start with the key set routes it.
            return False
        domain = self._domains.get(name)
        if domain is None and self._resolver is None and self._smarthost is None:
            # Mail for a domain that is not protected (a DSN for a sender outside our domains)
            # has no route without a resolver: it stays queued, visible in `strata queue list`.
            return False
        now = self._clock.seconds()
        entries = await self._queue.due_entries(name, self._due_time(force),
                                                self._settings.batch_size)  # fmt: skip
        if not entries:
            return False
        override = domain.queue_lifetime if domain is not None else None
        lifetime = override or self._settings.queue_lifetime
        live = []
        expired: set[tuple[str, str]] = set()  # one DSN per message and recipient
        for entry in entries:
            if now - entry.received_at >= lifetime:
                key = (entry.message_id, recipient_key(entry.recipient))
                await self._expire(entry, now, dsn=key not in expired)
                expired.add(key)
            else:
                live.append(entry)
        if not live:
            return len(entries) >= self._settings.batch_size
        signing = False
        if domain is None:
            # Only users' outbound mail (submission) and our own DSNs (from <>) go by MX.  Mail
            # accepted while the domain was protected waits: its MX may be Strata itself
            # (configuration C), and an admin who stopped protecting a domain did not ask for
            # its backlog to go elsewhere.
            kept = [entry for entry in live if entry.sender and not entry.outbound]
            if kept:
                await self._keep_unprotected(name, kept)
            live = [entry for entry in live if not entry.sender or entry.outbound]
            if not live:
                return False
            routed = await self._connect_outbound(name, live)
            if routed is None:
                return False
            domain, connection = routed
            signing = self._signer is not None
        else:
            try:
                connection = await self._connector.connect(domain)
            except Exception as e:
                reason = f"cannot connect to {domain.relay}: {_reason(e)}"
                self.log.warn("relay for {domain}: {reason}; mail stays queued",
                              domain=name, reason=reason)  # fmt: skip
                # Everything due waited for this session, not only this batch: the failed
                # attempt goes on every due entry, in one set-wise storage step.
                at = self._clock.seconds()
                waiting = await self._queue.defer_due(
                    name, self._due_time(force), reason, at, self._next_run_after(at)
                )
                self._measure(name, DEFERRED_OUTCOME, waiting)
                await self._events.record_event(
                    "relay.unreachable", f"{reason}; {waiting} kept queued", name
                )
                return False
        delivered = 0
        groups = _group_by_message(live)
        # The previous message's results on their way to disk: how many were delivered, or why
        # they could not be recorded.  The next message goes meanwhile; its final "." only once
        # they are recorded.  (It never fails: the loop may wait for it from inside its own
        # callbacks, where Twisted cannot hand over a failure.)
        recording: Deferred[int | Exception] | None = None
        try:
            await self._session_opened(name, connection.remote)
            windows = _read_ahead_windows(groups)
            reading = self._read_window(windows[0], signing)
            for w in range(len(windows)):
                if not connection.alive:
                    break
                prepared = await reading
                # Read the next window while this one is on the wire.
                if w + 1 < len(windows):
                    reading = self._read_window(windows[w + 1], signing)
                for relayed in prepared:
                    if not connection.alive:
                        break
                    if relayed is None:
                        continue
                    after = None if recording is None else _settled(recording)
                    replies = await connection.send(relayed, after)
                    if recording is not None:
                        delivered += _recorded(await recording)
                    lost = not connection.alive
                    recording = Deferred.fromCoroutine(
                        self._record_all(domain, relayed, replies, connection.remote, lost)
                    )
            if recording is not None:
                delivered += _recorded(await recording)
        finally:
            alive = connection.alive
            await connection.close()
            await self._sync_results(name)
        if delivered:
            self.log.info("relayed {n} to {relay} for {domain}", n=delivered,
                          relay=domain.relay, domain=name)  # fmt: skip
        return alive and len(entries) >= self._settings.batch_size

    async def _sync_results(self, name: str) -> None:
        """Put the batch's results on disk: each was committed before the next message went,
        but the store may leave the fsync to now (see IQueueStore.sync_results)."""
        try:
            await self._queue.sync_results()
        except Exception:
            self.log.failure("cannot sync the delivery results for {domain}", domain=name)

    async def _connect_outbound(
        self, name: str, entries: list[QueueEntry]
    ) -> tuple[Domain, RelayConnection] | None:
        """
        A session for mail to ``name``, a domain we do not protect: with the smarthost when one
        is configured, else with the first of its mail exchangers that takes one; and the
        synthetic domain it was opened for.  None when there is none (the entries are dealt
        with here: deferred, or bounced for a null MX).
        """
        if self._smarthost is not None:
            policy: TLSPolicy = self._outbound.smarthost_tls  # type: ignore[assignment]
            target = Domain(name, self._smarthost, tls_policy=policy, monitored=False)
            try:
                return target, await self._connector.connect(target)
            except Exception as e:
                await self._no_route(name, entries, f"smarthost {target.relay}: {_reason(e)}")
                return None
        if self._resolver is None:
            await self._no_route(name, entries, "no DNS resolver configured")
            return None
        try:
            hosts = await self._resolver.lookup(name)
        except NullMX:
            await self._bounce_null_mx(name, entries)
            return None
        except RouteError as e:
            await self._no_route(name, entries, str(e))
            return None
        failures = []
        tls: TLSPolicy = "verify" if self._outbound.tls == "verify" else "opportunistic"
        for host, port in hosts:
            # An MX host is nobody's primary: never probe it.
            target = Domain(name, RelayTarget(host, port), tls_policy=tls, monitored=False)
            try:
                return target, await self._connector.connect(target)
            except Exception as e:
                failures.append(f"{target.relay}: {_reason(e)}")
        await self._no_route(name, entries, "no MX host answered: " + "; ".join(failures))
        return None

    async def _no_route(self, name: str, entries: list[QueueEntry], reason: str) -> None:
        """Keep the entries queued until the next run, say why on each, and report it once."""
        self.log.warn("no route to {domain}: {reason}; mail stays queued",
                      domain=name, reason=reason)  # fmt: skip
        await self._defer_to_next_run(entries, reason)
        await self._events.record_event(
            "relay.no_route", f"no route to {name}: {reason}; {len(entries)} kept queued", name
        )

    async def _defer_to_next_run(self, entries: list[QueueEntry], reason: str) -> None:
        """
        Record a failed attempt on each entry that waited for a session none could be had for
        (the primary unreachable, no route, a domain no longer protected): still queued, with
        ``reason`` as its last error, due again at the next run (outbound mail: on its backoff
        schedule).  One storage call for all of them: during an outage this is the whole queue,
        every run.
        """
        at = self._clock.seconds()
        updated = await self._queue.record_results(
            [AttemptResult(entry.id, DEFERRED_OUTCOME, reason, at,
                           next_attempt_at=self._retry_at(entry, at))
             for entry in entries]
        )  # fmt: skip
        for entry in updated:
            self._count(entry.domain, DEFERRED_OUTCOME)
        await self._notify_delays(updated, reason)

    def _retry_at(self, entry: QueueEntry, at: float) -> float:
        """
        When a deferred entry is due again.  Mail for a primary: at the next run (the monitor
        kicks the relay the moment the primary is back).  Outbound mail: after retry_min, then
        twice as long after each attempt up to retry_max (RFC 5321 §4.5.4.1 asks for waits, not
        hammering; the schedule is Postfix's).  Either expires at the queue lifetime.
        """
        if not entry.outbound:
            return self._next_run_after(at)
        wait: float = self._outbound.retry_min * 2.0 ** min(entry.attempts, 32)
        return at + min(wait, self._outbound.retry_max)

    def _next_run_after(self, at: float) -> float:
        """
        When the loop runs next after ``at``: on its own schedule (``start`` + n x interval),
        not ``at`` + interval, so that an attempt that took time (a connection that timed out,
        a long drain) is still due at the next run rather than the one after.  ``at`` + interval
        while the loop is not started.
        """
        interval = self._settings.interval
        start = self._loop.starttime
        if not self._loop.running or start is None or interval <= 0:
            return at + interval
        return start + (math.floor((at - start) / interval) + 1) * interval

    async def _notify_delays(self, entries: Sequence[QueueEntry], reason: str) -> None:
        """
        Tell the sender of outbound mail, once, that it is still undelivered after
        ``outbound.delay_notice`` seconds: an RFC 3464 DSN with ``Action: delayed``, into the
        sender's webmail INBOX.  Never fails.
        """
        notice = self._outbound.delay_notice
        if notice <= 0:
            return
        at = self._clock.seconds()
        late = [entry for entry in entries
                if entry.outbound and entry.sender and entry.delay_notified_at is None
                and at - entry.received_at >= notice]  # fmt: skip
        if not late:
            return
        try:
            for group in _group_by_message(late):
                message = await self._messages.get_message(group[0].message_id)
                if message is None:
                    continue
                failed = [FailedRecipient(entry, entry.last_error or reason,
                                          status_of(reason, "4.0.0"))
                          for entry in group]  # fmt: skip
                await self._bounce(message, failed, action="delayed")
            await self._queue.mark_delay_notified([entry.id for entry in late], at)
        except Exception:
            self.log.failure("could not send the delay notices for {n}", n=len(late))

    async def _keep_unprotected(self, name: str, entries: list[QueueEntry]) -> None:
        """Mail for a domain that is no longer protected: keep it queued until the next run (an
        admin may protect the domain again, bounce or delete it; it expires at the lifetime)."""
        reason = (f"{name} is no longer protected; kept queued (protect it again, or "
                  "strata queue bounce / delete)")  # fmt: skip
        await self._defer_to_next_run(entries, reason)
        self.log.warn("{n} queued for {domain}, which is no longer protected; kept queued",
                      n=len(entries), domain=name)  # fmt: skip
        await self._events.record_event(
            "relay.unprotected", f"{len(entries)} kept queued: {reason}", name
        )

    async def _bounce_null_mx(self, name: str, entries: list[QueueEntry]) -> None:
        """RFC 7505 §4.2: a domain with a null MX takes no mail; bounce at once, no retries."""
        at = self._clock.seconds()
        for group in _group_by_message(entries):
            failed = [
                FailedRecipient(
                    await self._attempt(
                        AttemptResult(entry.id, BOUNCED_OUTCOME, NULL_MX_REASON, at), name
                    ),
                    NULL_MX_REASON,
                    NULL_MX_STATUS,
                )
                for entry in group
            ]
            message = await self._messages.get_message(group[0].message_id)
            if message is not None:
                # queue_dsn sends nothing for the null sender (every DSN has it).
                await self._bounce(message, failed)
        recipients = ", ".join(f"<{entry.recipient}>" for entry in entries)
        await self._events.record_event(
            "relay.null_mx", f"{recipients} bounced: {name} {NULL_MX_REASON}", name
        )

    def _read_window(
        self, window: list[tuple[QueueEntry, ...]], signing: bool = False
    ) -> Deferred[list[RelayedMessage | None]]:
        """
        Read the messages of ``window`` (records and first body chunks) in one storage call; one
        item per transaction, None for a message that is gone or cannot be read (it is skipped
        this run and stays queued as it was).  Never fails.
        """

        async def read() -> list[RelayedMessage | None]:
            out: list[RelayedMessage | None] = []
            try:
                heads = await self._messages.read_heads(
                    [group[0].message_id for group in window], PREFETCH
                )
            except Exception:
                # Some body cannot be read: find out which, one message at a time.
                self.log.failure("cannot read ahead for the relay; reading one by one")
                out = [await self._read_one(group) for group in window]
            else:
                by_id = {head.message.id: head for head in heads}
                for group in window:
                    head = by_id.get(group[0].message_id)
                    out.append(None if head is None else _relayed(head.message, group, head.head))
            if signing and self._signer is not None:
                for i, relayed in enumerate(out):
                    if relayed is not None and any(entry.outbound for entry in relayed.entries):
                        prefix = await self._signer.signature(relayed)
                        out[i] = replace(relayed, prefix=prefix)
            return out

        return Deferred.fromCoroutine(read())

    async def _read_one(self, group: tuple[QueueEntry, ...]) -> RelayedMessage | None:
        message_id = group[0].message_id
        try:
            message = await self._messages.get_message(message_id)
            if message is None:
                return None  # deleted meanwhile (by an admin): nothing to send
            head = await self._messages.read_body_range(message_id, 0, PREFETCH)
        except Exception:
            self.log.failure("cannot read {id} for the relay", id=message_id)
            return None
        return _relayed(message, group, head)

    async def _record_all(
        self, domain: Domain, relayed: RelayedMessage, replies: list[RecipientReply],
        remote: str, lost: bool,
    ) -> int | Exception:  # fmt: skip
        """Record the replies for one message's entries: how many were delivered, or the error
        that stopped the recording."""
        delivered = 0
        deferred: list[QueueEntry] = []
        try:
            by_recipient = {}
            for entry, reply in zip(relayed.entries, replies, strict=True):
                by_recipient[recipient_key(entry.recipient)] = reply
                if await self._record(
                    domain, entry, relayed.message, reply, remote, lost, deferred
                ):
                    delivered += 1
            for entry in relayed.duplicates:  # the same result, and no second DSN
                reply = by_recipient[recipient_key(entry.recipient)]
                if await self._record(
                    domain, entry, relayed.message, reply, remote, lost, deferred, dsn=False
                ):
                    delivered += 1
            if deferred:  # one delay notice per message, naming all its late recipients
                await self._notify_delays(deferred, deferred[0].last_error or "deferred")
        except Exception as e:
            return e
        return delivered

    async def _record(
        self, domain: Domain, entry: QueueEntry, message: StoredMessage, reply: RecipientReply,
        remote: str, lost: bool, deferred: list[QueueEntry], dsn: bool = True,
    ) -> bool:  # fmt: skip
        """Record one recipient's reply; True if delivered.  A deferred entry is added to
        ``deferred`` (for the delay notice).  ``dsn``: bounce with a DSN (not for a duplicate
        entry of a recipient whose entry had one)."""
        at = self._clock.seconds()
        if 200 <= reply.code < 300:
            await self._attempt(
                AttemptResult(entry.id, DELIVERED_OUTCOME, reply.text, at), entry.domain
            )
            return True
        if 400 <= reply.code < 500 or reply.code < 200:
            # A 4xx from a live session defers this recipient to the next run while the
            # messages behind it go on.  A session that died under this message (connection
            # lost, timeout, 421) says nothing about the message: it stays due as it was, so it
            # goes first on the next connection and the order is kept.
            retry = entry.next_attempt_at if lost else self._retry_at(entry, at)
            updated = await self._attempt(
                AttemptResult(entry.id, DEFERRED_OUTCOME, reply.text, at, next_attempt_at=retry),
                entry.domain,
            )
            deferred.append(updated)
            return False
        if domain.hold_rejected:
            await self._attempt(AttemptResult(entry.id, HELD_OUTCOME, reply.text, at), entry.domain)
            await self._events.record_event(
                "relay.held", f"{entry.id} to <{entry.recipient}> held: {reply.text}", domain.name
            )
            return False
        updated = await self._attempt(
            AttemptResult(entry.id, BOUNCED_OUTCOME, reply.text, at), entry.domain
        )
        if dsn and updated.state == BOUNCED:  # not if an admin held or deleted it meanwhile
            failed = FailedRecipient(updated, reply.text, status_of(reply.text), remote)
            await self._bounce(message, [failed])
        return False

    async def _expire(self, entry: QueueEntry, now: float, dsn: bool = True) -> None:
        reason = (f"message expired: not delivered after "
                  f"{(now - entry.received_at) / 86400:.1f} days; last error: "
                  f"{entry.last_error or 'none'}")  # fmt: skip
        updated = await self._attempt(
            AttemptResult(entry.id, BOUNCED_OUTCOME, reason, now), entry.domain, EXPIRED
        )
        await self._events.record_event(
            "relay.expired", f"{entry.id} to <{entry.recipient}> expired", entry.domain
        )
        message = await self._messages.get_message(entry.message_id)
        if dsn and message is not None and updated.state == BOUNCED:
            await self._bounce(message, [FailedRecipient(updated, reason, "4.4.7")])

    async def _bounce(
        self, message: StoredMessage, failed: list[FailedRecipient], action: str = "failed"
    ) -> None:
        # A user's outbound mail: the DSN goes to the sender's webmail INBOX too, where they
        # sent it from (and to their primary's queue, for after the outage).
        sender_domain = self._domains.get(route_domain(message.envelope.sender))
        shadow = sender_domain is not None and any(f.entry.outbound for f in failed)
        # A DSN names each recipient once, however many entries a legacy queue had for it.
        failed = split_repeated(failed, lambda f: f.entry.recipient)[0]
        try:
            await queue_dsn(
                messages=self._messages, events=self._events, clock=self._clock,
                hostname=self._hostname, message=message, failed=failed, shadow=shadow,
                action=action,
                event_kind="relay.delayed" if action == "delayed" else "relay.bounced",
            )  # fmt: skip
        except Exception:
            self.log.failure("{id}: could not queue the DSN", id=message.id)


_log = Logger()


def _reason(error: Exception) -> str:
    return str(error) or error.__class__.__name__


async def queue_dsn(
    *,
    messages: IMessageStore,
    events: IEventStore,
    clock: SecondsClock,
    hostname: str,
    message: StoredMessage,
    failed: list[FailedRecipient],
    event_kind: str = "relay.bounced",
    shadow: bool = False,
    action: str = "failed",
) -> str | None:
    """
    Queue one RFC 3464 DSN for ``failed`` recipients of ``message`` to its envelope sender, and
    record an ``event_kind`` event naming it; return the DSN's queue id.

    Never for the null sender (RFC 5321 §4.5.5: a bounce must not cause another): that returns
    None and queues nothing.  The DSN itself comes from ``<>``, so it never bounces in turn.  When
    the DSN cannot be stored, the half-written message is aborted and the store's error raised.
    Used by the relay (5xx, expiry) and by ``strata queue bounce``.  ``shadow``: put it in the
    sender's shadow INBOX too.  ``action``: "failed", or "delayed" for a delay notice (RFC 3464
    §2.3.3; nothing was given up).
    """
    sender = message.envelope.sender
    if not sender:
        _log.info("{id}: not bouncing a message from <>", id=message.id)
        return None
    now = clock.seconds()
    queue_id = new_queue_id(clock)
    headers = await messages.read_headers(message.id)
    dsn = build_dsn(
        reporting_mta=hostname, message=message, headers=headers, failed=failed,
        when=now, dsn_message_id=queue_id, action=action,
    )  # fmt: skip
    await store_generated(
        messages=messages, clock=clock, hostname=hostname, queue_id=queue_id, data=dsn,
        sender="", deliveries=(Delivery(sender, route_domain(sender), shadow=shadow),),
    )  # fmt: skip
    recipients = ", ".join(f.entry.recipient for f in failed)
    what = "delayed" if action == "delayed" else "bounced"
    await events.record_event(
        event_kind, f"{message.id} to {recipients} {what}; DSN {queue_id} to <{sender}>",
        failed[0].entry.domain, {"dsn": queue_id, "date": email.utils.formatdate(now)},
    )  # fmt: skip
    return queue_id


def _settled(recording: Deferred[int | Exception]) -> Deferred[bool]:
    """A Deferred that fires True when ``recording`` has recorded its results, False when it
    could not; ``recording``'s result is left for its owner."""
    out: Deferred[bool] = Deferred()

    def done(outcome: int | Exception) -> int | Exception:
        out.callback(not isinstance(outcome, Exception))
        return outcome

    recording.addCallback(done)
    return out


def _recorded(outcome: int | Exception) -> int:
    """How many a recording delivered; its error, raised, if it could not record them."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _quiet(d: Deferred[None]) -> Deferred[None]:
    """A Deferred that fires when ``d`` does, without taking or changing its result."""
    out: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out
