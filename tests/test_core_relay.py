"""
The relay loop on a task.Clock with the memory store and a scripted primary: order, per-recipient
results, retries on the interval, DSNs, holds, expiry, connection failures.  No sockets, no sleeps.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from strata_twisted.config import RelaySettings
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.relay import (
    NULL_MX_REASON,
    PREFETCH,
    READ_AHEAD_BYTES,
    READ_AHEAD_MESSAGES,
    RelayLoop,
    _read_ahead_windows,
)
from strata_twisted.core.routes import NoRoute, NullMX, RouteTemporaryFailure
from strata_twisted.errors import StorageError
from strata_twisted.interfaces import IMessageStore, IQueueStore
from strata_twisted.model import (
    BOUNCED,
    DELIVERED,
    HELD,
    POSTMASTER_HOLD,
    QUEUED,
    AttemptResult,
    Delivery,
    Domain,
    QueueEntry,
    RelayTarget,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import FakeMXResolver, ScriptedPrimary, result_of, store_message

INTERVAL = 300.0
T0 = 1_800_000_000.0


def parts(message: email.message.Message) -> list[email.message.Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, email.message.Message)]


class Relay:
    def __init__(self, resolver: FakeMXResolver | None = None, **domain: Any) -> None:
        """``resolver``: routes for domains that are not protected (none by default)."""
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore(self.clock)
        result_of(self.store.add_domain(Domain("example.test", RelayTarget("10.0.0.1"), **domain)))
        self.domains = DomainCache(self.clock, self.store, 1.0)
        result_of(self.domains.refresh())
        self.primary = ScriptedPrimary()
        self.loop = RelayLoop(
            self.clock, self.store, self.store, self.store, self.domains, self.primary,
            RelaySettings(interval=INTERVAL, queue_lifetime=5 * 86400, batch_size=3),
            "strata.test", resolver,
        )  # fmt: skip
        self._n = 0

    def queue(self, *recipients: str, sender: str = "s@sender.test") -> str:
        self._n += 1
        queue_id = f"Q{self._n:04d}"
        body = (f"From: {sender}\r\nMessage-ID: <{queue_id}@sender.test>\r\nSubject: {queue_id}"
                f"\r\n\r\nbody {queue_id}\r\n").encode()  # fmt: skip
        deliveries = [Delivery(r, r.split("@")[1].lower()) for r in recipients]
        result_of(store_message(self.store, queue_id, body, deliveries, sender=sender,
                                received_at=self.clock.seconds()))  # fmt: skip
        return queue_id

    def entries(self) -> dict[str, Any]:
        return {e.id: e for e in result_of(self.store.list_entries())}

    def dsns(self) -> list[email.message.Message]:
        out = []
        for e in result_of(self.store.list_entries()):
            if e.sender == "":
                raw = result_of(self.store.read_body(e.message_id))
                parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
                if parsed.get_content_type() == "multipart/report":
                    out.append(parsed)
        return out


def test_drains_in_arrival_order_over_one_connection_in_batches() -> None:
    r = Relay()
    ids = [r.queue("u@example.test") for _ in range(7)]
    result_of(r.loop.run())
    assert [queue_id for queue_id, _ in r.primary.received] == ids
    assert r.primary.sessions == 3  # batch_size 3: three batches, one connection each
    entries = r.entries()
    assert {e.state for e in entries.values()} == {DELIVERED}
    first = entries[f"{ids[0]}.1"]
    assert first.delivered_at == T0 and first.delivery_reply == "250 2.0.0 Ok: queued"
    assert first.attempts == 1
    # Delivered means done: the next run sends nothing again.
    r.clock.advance(INTERVAL)
    assert len(r.primary.received) == 7


def test_recipients_of_one_message_share_a_transaction() -> None:
    r = Relay()
    queue_id = r.queue("a@example.test", "b@example.test", "c@example.test")
    result_of(r.loop.run())
    assert r.primary.received == [(queue_id, ("a@example.test", "b@example.test",
                                              "c@example.test"))]  # fmt: skip


def test_4xx_is_retried_on_the_next_run_without_blocking_the_rest() -> None:
    r = Relay()
    r.primary.script("busy@example.test", (451, "451 4.3.0 try later"))
    first = r.queue("busy@example.test")
    second = r.queue("ok@example.test")
    r.loop.start()
    assert [q for q, _ in r.primary.received] == [second]
    busy = r.entries()[f"{first}.1"]
    assert (busy.state, busy.attempts, busy.last_error) == (QUEUED, 1, "451 4.3.0 try later")
    assert busy.next_attempt_at == T0 + INTERVAL
    r.clock.advance(INTERVAL - 1)
    assert [q for q, _ in r.primary.received] == [second]
    r.clock.advance(1)  # the next run
    assert [q for q, _ in r.primary.received] == [second, first]
    assert r.entries()[f"{first}.1"].state == DELIVERED
    r.loop.stop()


def test_5xx_bounces_with_exactly_one_dsn_to_the_sender() -> None:
    r = Relay()
    r.primary.script("gone@example.test", (550, "550 5.1.1 <gone@example.test>: user unknown"))
    r.primary.script("later@example.test", (450, "450 4.2.1 mailbox busy"))
    queue_id = r.queue("gone@example.test", "later@example.test", "ok@example.test")
    result_of(r.loop.run())
    entries = r.entries()
    assert entries[f"{queue_id}.1"].state == BOUNCED
    assert entries[f"{queue_id}.2"].state == QUEUED
    assert entries[f"{queue_id}.3"].state == DELIVERED
    (dsn,) = r.dsns()
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["To"] == "<s@sender.test>"
    human, status, headers = parts(dsn)
    assert "gone@example.test" in str(human.get_payload())
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = parts(status)
    assert per_message["Reporting-MTA"] == "dns; strata.test"
    assert per_recipient["Final-Recipient"] == "rfc822; gone@example.test"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert "user unknown" in per_recipient["Diagnostic-Code"]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert f"Message-ID: <{queue_id}@sender.test>" in str(headers.get_payload())
    dsn_entry = next(e for e in r.entries().values() if e.sender == "")
    assert (dsn_entry.recipient, dsn_entry.domain) == ("s@sender.test", "sender.test")
    # Retrying the 4xx recipient later does not bounce anything again.
    r.clock.advance(INTERVAL)
    result_of(r.loop.run())
    assert len(r.dsns()) == 1


def test_no_dsn_for_the_null_sender() -> None:
    r = Relay()
    r.primary.script("gone@example.test", (550, "550 5.1.1 user unknown"))
    queue_id = r.queue("gone@example.test", sender="")
    result_of(r.loop.run())
    assert r.entries()[f"{queue_id}.1"].state == BOUNCED
    assert r.dsns() == []


def test_hold_rejected_holds_instead_of_bouncing() -> None:
    r = Relay(hold_rejected=True)
    r.primary.script("gone@example.test", (554, "554 5.7.1 rejected by policy"))
    queue_id = r.queue("gone@example.test")
    result_of(r.loop.run())
    held = r.entries()[f"{queue_id}.1"]
    assert (held.state, held.last_error) == (HELD, "554 5.7.1 rejected by policy")
    assert r.dsns() == []
    events = result_of(r.store.list_events("example.test"))
    assert [e.kind for e in events] == ["relay.drain_started", "relay.held", "relay.drain_finished"]
    assert events[-1].data["held"] == events[-1].data["failed"] == 1


def test_unreachable_primary_leaves_everything_queued_and_the_next_run_delivers() -> None:
    r = Relay()
    r.primary.up = False
    ids = [r.queue("u@example.test") for _ in range(2)]
    r.loop.start()
    entries = r.entries()
    # Each entry shows the failed attempt, not only the event log.
    reason = "cannot connect to 10.0.0.1:25: connection to 10.0.0.1:25 refused"
    assert {(e.state, e.attempts, e.last_error, e.last_attempt_at, e.next_attempt_at)
            for e in entries.values()} == {(QUEUED, 1, reason, T0, T0 + INTERVAL)}  # fmt: skip
    (event,) = result_of(r.store.list_events())
    assert (event.kind, event.message) == ("relay.unreachable", f"{reason}; 2 kept queued")
    r.primary.up = True
    r.clock.advance(INTERVAL)
    assert [q for q, _ in r.primary.received] == ids
    assert {(e.state, e.attempts) for e in r.entries().values()} == {(DELIVERED, 2)}
    r.loop.stop()


# -- what operators see: each drain in the events, each failed attempt on its entry ----------


@implementer(IQueueStore)
class CountedWrites:
    """The memory store's queue, counting how the relay writes delivery results: ``single``
    record_result calls, the size of each record_results call (``bulk``), and how many entries
    each defer_due call changed (``set_wise``)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.single = 0
        self.bulk: list[int] = []
        self.set_wise: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record_result(self, result: AttemptResult) -> Deferred[QueueEntry]:
        self.single += 1
        return self._store.record_result(result)

    def record_results(self, results: Sequence[AttemptResult]) -> Deferred[list[QueueEntry]]:
        self.bulk.append(len(results))
        return self._store.record_results(results)

    def defer_due(
        self, domain: str, due: float, reason: str, at: float, next_attempt_at: float
    ) -> Deferred[int]:
        def count(changed: int) -> int:
            self.set_wise.append(changed)
            return changed

        return self._store.defer_due(domain, due, reason, at, next_attempt_at).addCallback(count)


class SlowPrimary:
    """The scripted primary, taking ``delay`` seconds of the clock to answer each message."""

    def __init__(self, primary: ScriptedPrimary, clock: Clock, delay: float) -> None:
        self._primary = primary
        self._clock = clock
        self._delay = delay

    def connect(self, domain: Domain) -> Deferred[Any]:
        return self._primary.connect(domain).addCallback(self._slow)

    def _slow(self, inner: Any) -> Any:
        clock, delay = self._clock, self._delay

        class Slow:
            remote = inner.remote

            @property
            def alive(self) -> bool:
                return bool(inner.alive)

            def send(self, message: Any, after: Deferred[bool] | None = None) -> Deferred[Any]:
                d = task.deferLater(clock, delay, lambda: None)
                return d.addCallback(lambda _: inner.send(message, after))

            def close(self) -> Deferred[None]:
                d: Deferred[None] = inner.close()
                return d

        return Slow()


def drain_events(r: Relay) -> list[Any]:
    return [e for e in result_of(r.store.list_events()) if e.kind.startswith("relay.drain_")]


def test_a_drain_is_recorded_once_with_its_counts_and_its_duration() -> None:
    r = Relay()
    r.loop._connector = SlowPrimary(r.primary, r.clock, 2.0)
    old = r.queue("old@example.test")
    r.clock.advance(5 * 86400)  # old is past the queue lifetime now
    r.primary.script("busy@example.test", (451, "451 4.3.0 try later"))
    r.primary.script("gone@example.test", (550, "550 5.1.1 user unknown"))
    queued = [r.queue("ok@example.test"), r.queue("busy@example.test")]
    queued += [r.queue("gone@example.test"), r.queue("ok@example.test")]
    start = r.clock.seconds()
    run = r.loop.run()
    # batch_size 3: [old (expires), ok, busy] then [gone, ok]; two sessions, one drain.
    r.clock.pump([2.0] * 3)
    assert not run.called
    assert [e.kind for e in drain_events(r)] == ["relay.drain_started"]
    r.clock.advance(2.0)
    assert run.called
    assert r.primary.sessions == 2
    started, finished = drain_events(r)
    assert (started.domain, started.at, started.data) == (
        "example.test", start, {"relay": "10.0.0.1:25"},
    )  # fmt: skip
    assert finished.domain == "example.test" and finished.at == start + 8.0
    assert finished.data == {
        "relay": "10.0.0.1:25", "delivered": 2, "deferred": 1, "failed": 2, "bounced": 1,
        "held": 0, "expired": 1, "duration": 8.0,
    }  # fmt: skip
    assert finished.message == (
        "drain to 10.0.0.1:25 finished in 8.0 s: 2 delivered, 1 deferred, 2 failed "
        "(1 bounced, 0 held, 1 expired)"
    )
    assert r.entries()[f"{old}.1"].state == BOUNCED
    # The next drain counts afresh: only the deferred one is left.
    r.clock.advance(INTERVAL)
    run = r.loop.run()
    r.clock.advance(2.0)
    assert run.called
    assert [e.data["delivered"] for e in drain_events(r) if e.kind.endswith("finished")] == [2, 1]
    assert queued[1] in [q for q, _ in r.primary.received]  # the deferred one


def test_a_drain_asked_for_again_while_it_runs_is_one_drain_and_no_kick_is_lost() -> None:
    r = Relay()
    r.loop._connector = SlowPrimary(r.primary, r.clock, 1.0)
    first = r.queue("u@example.test")
    run = r.loop.run()
    second = r.queue("u@example.test")
    r.loop.kick("example.test")  # while the first message is on the wire
    r.clock.pump([1.0, 1.0])
    assert run.called
    assert [q for q, _ in r.primary.received] == [first, second]
    started, finished = drain_events(r)
    assert (finished.data["delivered"], finished.data["duration"]) == (2, 2.0)
    # A kick right after the drain ended starts a new one.
    third = r.queue("u@example.test")
    kicked = r.loop.kick("example.test")
    r.clock.advance(1.0)
    assert kicked.called and r.primary.received[-1][0] == third
    assert [e.kind for e in drain_events(r)] == ["relay.drain_started", "relay.drain_finished"] * 2


def test_no_drain_events_for_an_empty_queue_or_an_unreachable_primary() -> None:
    r = Relay()
    r.loop.start()
    r.clock.advance(INTERVAL)  # two runs, nothing queued
    assert result_of(r.store.list_events()) == []
    r.primary.up = False
    queue_id = r.queue("u@example.test")
    for _ in range(3):
        r.clock.advance(INTERVAL)
    # The outage speaks once per run, through relay.unreachable and on the entry.
    assert [e.kind for e in result_of(r.store.list_events())] == ["relay.unreachable"] * 3
    assert r.entries()[f"{queue_id}.1"].attempts == 3
    r.primary.up = True
    r.clock.advance(INTERVAL)
    assert [e.kind for e in drain_events(r)] == ["relay.drain_started", "relay.drain_finished"]
    assert drain_events(r)[-1].data["delivered"] == 1
    r.loop.stop()


def test_an_unreachable_primary_marks_every_due_entry_in_one_storage_call() -> None:
    # During an outage the queue holds far more than a batch: every due entry waited for the
    # session, so every one shows the failed attempt, written in one set-wise call per run.
    r = Relay()
    writes = CountedWrites(r.store)
    r.loop._queue = writes
    r.primary.up = False
    old = r.queue("old@example.test")
    r.clock.advance(5 * 86400)
    ids = [r.queue("u@example.test", "v@example.test") for _ in range(5)]  # 10 entries
    result_of(r.loop.run())
    entries = r.entries()
    reason = "cannot connect to 10.0.0.1:25: connection to 10.0.0.1:25 refused"
    now = r.clock.seconds()
    waiting = [entries[f"{q}.{n}"] for q in ids for n in (1, 2)]
    assert {(e.state, e.attempts, e.last_error, e.last_attempt_at, e.next_attempt_at)
            for e in waiting} == {(QUEUED, 1, reason, now, now + INTERVAL)}  # fmt: skip
    assert entries[f"{old}.1"].state == BOUNCED  # expired, not deferred
    assert (writes.set_wise, writes.bulk) == ([10], [])
    assert writes.single == 1  # the expiry alone
    (event,) = [e for e in result_of(r.store.list_events()) if e.kind == "relay.unreachable"]
    assert event.message == f"{reason}; 10 kept queued"
    # A forced run (a flush) during the outage: the same, once more.
    result_of(r.loop.kick())
    assert (writes.set_wise, writes.bulk) == ([10, 10], [])
    assert {e.attempts for e in r.entries().values() if e.domain == "example.test"
            and e.state == QUEUED} == {2}  # fmt: skip


class TimingOutPrimary:
    """A primary that never answers: each connection attempt fails after ``timeout`` seconds."""

    def __init__(self, clock: Clock, timeout: float) -> None:
        self._clock = clock
        self._timeout = timeout

    def connect(self, domain: Domain) -> Deferred[Any]:
        def fail_now() -> Any:
            raise TimeoutError(f"cannot connect to {domain.relay} within {self._timeout:g} s")

        return task.deferLater(self._clock, self._timeout, fail_now)


def test_an_attempt_that_took_time_is_still_retried_at_the_next_run() -> None:
    # Recording the failed attempt must not push the entry past the next run: a connection
    # that times out after 5 s would otherwise make it due 305 s after the run, and the relay
    # would try only every other run.
    r = Relay()
    r.loop._connector = TimingOutPrimary(r.clock, 5.0)
    queue_id = r.queue("u@example.test")
    r.loop.start()
    r.clock.advance(5.0)
    first = r.entries()[f"{queue_id}.1"]
    assert (first.attempts, first.last_attempt_at) == (1, T0 + 5.0)
    assert first.next_attempt_at == T0 + INTERVAL  # the next run, not 5 s after it
    for _ in range(3):
        r.clock.advance(INTERVAL - 5.0)
        r.clock.advance(5.0)
    assert r.entries()[f"{queue_id}.1"].attempts == 4
    r.loop.stop()


def test_no_route_marks_its_entries_through_the_same_bulk_call() -> None:
    r, resolver, connector = routed({"sender.test": NoRoute("sender.test: no such domain")})
    writes = CountedWrites(r.store)
    r.loop._queue = writes
    for _ in range(2):
        r.queue("s@sender.test", sender="")  # our own DSNs, routed by MX
    result_of(r.loop.run())
    assert (writes.bulk, writes.single) == ([2], 0)
    assert {e.attempts for e in r.entries().values()} == {1}
    assert drain_events(r) == []


def test_a_lost_connection_stops_the_drain_and_keeps_order() -> None:
    r = Relay()
    r.primary.die_after = 1
    ids = [r.queue("u@example.test") for _ in range(3)]
    result_of(r.loop.run())
    assert [q for q, _ in r.primary.received] == ids[:1]
    entries = r.entries()
    # The message in flight when the session died stays due as it was (not deferred to the
    # next interval), so it cannot be overtaken by the ones behind it.
    lost = entries[f"{ids[1]}.1"]
    assert (lost.state, lost.next_attempt_at, lost.attempts) == (QUEUED, T0, 1)
    assert entries[f"{ids[2]}.1"].attempts == 0
    r.primary.die_after = None
    result_of(r.loop.run())  # a normal run, not forced: the lost one is due and goes first
    assert [q for q, _ in r.primary.received] == ids


@implementer(IQueueStore)
class HeldResults:
    """The memory store's queue, with every record_result held until the test releases it;
    ``synced`` counts what the primary had received at each sync_results()."""

    def __init__(self, store: MemoryStore, primary: ScriptedPrimary) -> None:
        self._store = store
        self._primary = primary
        self.held: list[tuple[AttemptResult, Deferred[QueueEntry]]] = []
        self.fail_next = False
        self.synced: list[int] = []

    def sync_results(self) -> Deferred[None]:
        self.synced.append(len(self._primary.received))
        return succeed(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record_result(self, result: AttemptResult) -> Deferred[QueueEntry]:
        d: Deferred[QueueEntry] = Deferred()
        self.held.append((result, d))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for result, d in held:
            if self.fail_next:
                d.errback(StorageError("disk full"))
            else:
                self._store.record_result(result).chainDeferred(d)


def test_the_next_message_starts_while_results_are_recorded_but_completes_after() -> None:
    r = Relay()
    queue = HeldResults(r.store, r.primary)
    r.loop._queue = queue
    ids = [r.queue("u@example.test") for _ in range(3)]
    run = r.loop.run()
    # The first message is delivered; while its result is on its way to disk the second
    # message is already under way, but its completion (the delivery) waits.
    assert [q for q, _ in r.primary.received] == ids[:1]
    assert r.primary.started == ids[:2]
    assert [x.entry_id for x, _ in queue.held] == [f"{ids[0]}.1"]
    queue.release()
    assert [q for q, _ in r.primary.received] == ids[:2]
    assert r.primary.started == ids
    queue.release()
    queue.release()
    assert run.called
    assert [q for q, _ in r.primary.received] == ids
    assert {e.state for e in r.entries().values()} == {DELIVERED}


def test_results_that_cannot_be_recorded_end_the_session_before_the_next_delivery() -> None:
    r = Relay()
    queue = HeldResults(r.store, r.primary)
    r.loop._queue = queue
    ids = [r.queue("u@example.test") for _ in range(3)]
    logged: list[Failure] = []

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            logged.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        run = r.loop.run()
        queue.fail_next = True
        queue.release()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert run.called
    # The store's error is what stopped the drain (and nothing was left unhandled).
    assert [f.type for f in logged] == [StorageError]
    # The second message never went: the drain stopped, and all but the first stay queued
    # (the first was delivered, but its result is lost: it will go again, a duplicate).
    assert [q for q, _ in r.primary.received] == ids[:1]
    assert {e.state for e in r.entries().values()} == {QUEUED}
    queue.fail_next = False
    r.loop._queue = r.store
    result_of(r.loop.run())
    assert [q for q, _ in r.primary.received] == [ids[0], *ids]


def test_results_go_to_disk_after_every_batch() -> None:
    r = Relay()
    queue = HeldResults(r.store, r.primary)
    r.loop._queue = queue
    ids = [r.queue("u@example.test") for _ in range(7)]
    run = r.loop.run()
    while not run.called:
        queue.release()
    assert [q for q, _ in r.primary.received] == ids
    assert queue.synced == [3, 6, 7]  # batch_size 3


@implementer(IMessageStore)
class UnreadableBodies:
    """The memory store, failing to read the bodies of the messages in ``broken``."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.broken: set[str] = set()
        self.read_heads_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_heads(self, message_ids: Sequence[str], length: int) -> Deferred[Any]:
        self.read_heads_calls += 1
        if self.broken & set(message_ids):
            return fail(StorageError("cannot read a body"))
        return self._store.read_heads(message_ids, length)

    def read_body_range(self, message_id: str, offset: int, length: int) -> Deferred[bytes]:
        if message_id in self.broken:
            return fail(StorageError(f"cannot read {message_id}"))
        return self._store.read_body_range(message_id, offset, length)


def test_a_message_that_cannot_be_read_is_skipped_and_stays_queued() -> None:
    r = Relay()
    messages = UnreadableBodies(r.store)
    r.loop._messages = messages
    ids = [r.queue("u@example.test") for _ in range(3)]
    messages.broken = {ids[1]}
    result_of(r.loop.run())
    assert [q for q, _ in r.primary.received] == [ids[0], ids[2]]
    entries = r.entries()
    assert (entries[f"{ids[1]}.1"].state, entries[f"{ids[1]}.1"].attempts) == (QUEUED, 0)
    messages.broken = set()
    result_of(r.loop.kick())
    assert [q for q, _ in r.primary.received] == [ids[0], ids[2], ids[1]]


def test_the_relay_reads_ahead_in_windows() -> None:
    r = Relay()
    r.loop._settings = replace(r.loop._settings, batch_size=100)
    messages = UnreadableBodies(r.store)
    r.loop._messages = messages
    ids = [r.queue("u@example.test") for _ in range(READ_AHEAD_MESSAGES * 2 + 1)]
    result_of(r.loop.run())
    assert [q for q, _ in r.primary.received] == ids
    assert messages.read_heads_calls == 3


def entries_of_size(*sizes: int) -> list[tuple[QueueEntry, ...]]:
    return [
        (QueueEntry(f"Q{n}.1", n, f"Q{n}", "example.test", "u@example.test", "s@x.test", None,
                    size, T0, QUEUED, 0, None, T0),)
        for n, size in enumerate(sizes)
    ]  # fmt: skip


def test_read_ahead_windows_are_bounded_by_count_and_bytes() -> None:
    def shape(sizes: list[int]) -> list[int]:
        return [len(w) for w in _read_ahead_windows(entries_of_size(*sizes))]

    assert shape([100] * (READ_AHEAD_MESSAGES + 1)) == [READ_AHEAD_MESSAGES, 1]
    # Heads count at most PREFETCH bytes each, however large the message.
    big = READ_AHEAD_BYTES // PREFETCH
    assert shape([10 * PREFETCH] * (big + 1)) == [big, 1]
    assert shape([READ_AHEAD_BYTES // 2, READ_AHEAD_BYTES // 2, 1]) == [3]
    assert shape([]) == []


def test_kick_retries_deferred_mail_at_once() -> None:
    r = Relay()
    r.primary.script("u@example.test", (421, "421 4.3.2 shutting down"))
    queue_id = r.queue("u@example.test")
    result_of(r.loop.run())
    assert r.primary.received == []
    result_of(r.loop.run())  # not due yet: nothing happens
    assert r.primary.received == []
    result_of(r.loop.kick())
    assert [q for q, _ in r.primary.received] == [queue_id]


def test_expired_entries_bounce_at_the_lifetime_with_a_4_4_7_dsn() -> None:
    r = Relay()
    r.primary.up = False
    queue_id = r.queue("u@example.test")
    r.loop.start()
    r.clock.advance(5 * 86400 - INTERVAL)
    assert r.entries()[f"{queue_id}.1"].state == QUEUED
    r.primary.up = True
    r.primary.script("u@example.test", (450, "450 4.2.0 still busy"))
    r.clock.advance(INTERVAL)  # now 5 days old: expired before any attempt
    entry = r.entries()[f"{queue_id}.1"]
    assert entry.state == BOUNCED
    assert r.primary.received == []
    (dsn,) = r.dsns()
    assert parts(parts(dsn)[1])[1]["Status"] == "4.4.7"
    assert "relay.expired" in [e.kind for e in result_of(r.store.list_events())]
    r.loop.stop()


def test_mail_for_a_domain_without_route_stays_queued() -> None:
    r = Relay()
    queue_id = r.queue("u@elsewhere.test")
    result_of(r.loop.run())
    assert r.primary.sessions == 0
    assert r.entries()[f"{queue_id}.1"].state == QUEUED


# -- MX routing for domains that are not protected (DSNs to senders) ---------------------------


class RecordingConnector:
    """The scripted primary behind a connector that remembers each Domain it was asked for and
    refuses the hosts in ``refuse``."""

    def __init__(self, primary: ScriptedPrimary) -> None:
        self.primary = primary
        self.asked: list[Domain] = []
        self.refuse: set[str] = set()

    def connect(self, domain: Domain) -> Deferred[Any]:
        self.asked.append(domain)
        if domain.relay.host in self.refuse:
            return Deferred.fromCoroutine(_refused(domain))
        return self.primary.connect(domain)


async def _refused(domain: Domain) -> Any:
    raise ConnectionRefusedError(f"connection to {domain.relay} refused")


def routed(routes: dict[str, Any]) -> tuple[Relay, FakeMXResolver, RecordingConnector]:
    r = Relay()
    resolver = FakeMXResolver(routes)
    connector = RecordingConnector(r.primary)
    r.loop = RelayLoop(
        r.clock, r.store, r.store, r.store, r.domains, connector,
        RelaySettings(interval=INTERVAL, queue_lifetime=5 * 86400, batch_size=3),
        "strata.test", resolver,
    )  # fmt: skip
    return r, resolver, connector


def kinds(r: Relay) -> list[str]:
    return sorted(e.kind for e in result_of(r.store.list_events()))


def test_a_dsn_goes_to_the_first_mx_host_of_the_senders_domain_that_answers() -> None:
    r, resolver, connector = routed({"sender.test": [("10.0.0.20", 25), ("10.0.0.21", 2525)]})
    connector.refuse = {"10.0.0.20"}
    r.primary.script("gone@example.test", (550, "550 5.1.1 <gone@example.test>: user unknown"))
    queue_id = r.queue("gone@example.test")
    result_of(r.loop.run())
    (dsn,) = [e for e in r.entries().values() if e.sender == ""]
    assert (dsn.domain, dsn.state) == ("sender.test", QUEUED)
    # The protected domain went to its --relay host, with no MX lookup.
    assert [d.relay for d in connector.asked] == [RelayTarget("10.0.0.1")]
    assert resolver.lookups == []
    result_of(r.loop.run())  # the DSN is due now
    assert resolver.lookups == ["sender.test"]
    assert connector.asked[1:] == [
        Domain("sender.test", RelayTarget(host, port), tls_policy="opportunistic",
               monitored=False)
        for host, port in [("10.0.0.20", 25), ("10.0.0.21", 2525)]
    ]  # fmt: skip
    assert r.primary.received[-1] == (dsn.message_id, ("s@sender.test",))
    delivered = r.entries()[dsn.id]
    assert delivered.state == DELIVERED
    assert r.entries()[f"{queue_id}.1"].state == BOUNCED
    assert "relay.no_route" not in kinds(r)


def test_null_mx_bounces_at_once_without_a_dsn_for_a_dsn() -> None:
    r, resolver, connector = routed({"sender.test": NullMX("sender.test")})
    queue_id = r.queue("s@sender.test", sender="")  # a DSN: from <>
    result_of(r.loop.run())
    entry = r.entries()[f"{queue_id}.1"]
    assert (entry.state, entry.last_error) == (BOUNCED, NULL_MX_REASON)
    assert connector.asked == []
    assert r.dsns() == []  # never a DSN about a DSN
    (event,) = result_of(r.store.list_events())
    assert event.kind == "relay.null_mx" and "s@sender.test" in event.message


def test_mail_from_a_real_sender_to_an_unprotected_domain_is_never_routed_by_mx() -> None:
    # Only our own DSNs go by MX: anything else for a domain we do not protect was accepted
    # while it was protected, and waits for an admin (see the test above).
    r, resolver, _ = routed({"nomail.test": NullMX("nomail.test")})
    queue_id = r.queue("u@nomail.test", sender="s@sender.test")
    result_of(r.loop.run())
    assert resolver.lookups == []
    assert r.entries()[f"{queue_id}.1"].state == QUEUED
    assert r.dsns() == []
    assert kinds(r) == ["relay.unprotected"]


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (NoRoute("sender.test: domain does not exist"), "domain does not exist"),
        (RouteTemporaryFailure("sender.test: MX lookup failed: timed out"), "timed out"),
        ([("10.0.0.20", 25)], "no MX host answered: 10.0.0.20:25: connection to"),
    ],
)
def test_no_route_keeps_the_mail_queued_and_reports_once_per_run(route: Any, reason: str) -> None:
    r, resolver, connector = routed({"sender.test": route})
    connector.refuse = {"10.0.0.20"}
    first = r.queue("s@sender.test", sender="")
    second = r.queue("t@sender.test", sender="")
    r.loop.start()
    entries = r.entries()
    for queue_id in (first, second):
        entry = entries[f"{queue_id}.1"]
        assert (entry.state, entry.attempts, entry.next_attempt_at) == (QUEUED, 1, T0 + INTERVAL)
        assert entry.last_error is not None and reason in entry.last_error
    assert kinds(r) == ["relay.no_route"]
    assert resolver.lookups == ["sender.test"]
    r.clock.advance(INTERVAL - 1)
    assert kinds(r) == ["relay.no_route"]
    r.clock.advance(1)  # the next run: asked again, reported again, still queued
    assert resolver.lookups == ["sender.test"] * 2
    assert kinds(r) == ["relay.no_route"] * 2
    assert {e.state for e in r.entries().values()} == {QUEUED}
    # The route appears: the next run delivers, in order.
    resolver.routes["sender.test"] = [("10.0.0.30", 25)]
    r.clock.advance(INTERVAL)
    assert [q for q, _ in r.primary.received] == [first, second]
    assert {e.state for e in r.entries().values()} == {DELIVERED}
    r.loop.stop()


def test_mail_for_a_domain_no_longer_protected_stays_queued_while_dsns_go_by_mx() -> None:
    r, resolver, connector = routed({"example.test": [("10.0.0.40", 25)]})
    r.primary.up = False
    kept = r.queue("u@example.test")  # accepted while example.test was protected
    dsn = r.queue("v@example.test", sender="")  # one of our own DSNs to a user there
    result_of(r.store.remove_domain("example.test"))
    result_of(r.domains.refresh())
    r.primary.up = True
    result_of(r.loop.run())
    # The DSN went to the domain's MX; the mail accepted for the primary did not.
    assert [q for q, _ in r.primary.received] == [dsn]
    assert connector.asked[-1].relay == RelayTarget("10.0.0.40", 25)
    entry = r.entries()[f"{kept}.1"]
    assert (entry.state, entry.next_attempt_at) == (QUEUED, T0 + INTERVAL)
    assert entry.last_error is not None and "no longer protected" in entry.last_error
    assert "relay.unprotected" in kinds(r)
    # Protected again (say, a removal by mistake): it goes to the primary on the next run.
    result_of(r.store.add_domain(Domain("example.test", RelayTarget("10.0.0.1"))))
    result_of(r.domains.refresh())
    r.clock.advance(INTERVAL)
    result_of(r.loop.run())
    assert [q for q, _ in r.primary.received] == [dsn, kept]
    assert connector.asked[-1].relay == RelayTarget("10.0.0.1")


def test_a_dsn_to_an_address_literal_sender_goes_to_that_address() -> None:
    # RFC 5321 §5.1: mail to an address literal goes straight to it, with no DNS.
    r, resolver, connector = routed({})
    r.primary.script("gone@example.test", (550, "550 5.1.1 <gone@example.test>: user unknown"))
    r.queue("gone@example.test", sender="ana@[192.0.2.1]")
    result_of(r.loop.run())
    (dsn,) = [e for e in r.entries().values() if e.sender == ""]
    assert (dsn.domain, dsn.recipient) == ("[192.0.2.1]", "ana@[192.0.2.1]")
    result_of(r.loop.run())
    assert r.entries()[dsn.id].state == DELIVERED
    assert connector.asked[-1].relay == RelayTarget("192.0.2.1", 25)


# -- no recipient gets a message twice (issue #11) ------------------------------------------------


def test_a_message_with_more_recipients_than_the_batch_goes_once_each_in_one_transaction() -> None:
    # The bug: a transaction's entries fell into two batches and the primary got it twice.
    # batch_size 3 here; 20 recipients, each named up to three times (a queue from before intake
    # kept one entry per recipient), the domain part in any case.
    r = Relay()
    before = r.queue("first@example.test")
    recipients = [f"u{n}@example.test" for n in range(20)]
    named = [r for n, r in enumerate(recipients) for _ in range(1 + n % 3)]
    named += [r.replace("example.test", "EXAMPLE.test") for r in recipients[:5]]
    queue_id = r.queue(*named)
    after = r.queue("last@example.test")
    result_of(r.loop.run())
    assert r.primary.received == [
        (before, ("first@example.test",)),
        (queue_id, tuple(recipients)),  # once each, in one transaction
        (after, ("last@example.test",)),
    ]
    entries = [e for e in r.entries().values() if e.message_id == queue_id]
    assert len(entries) == len(named) == 44
    assert {(e.state, e.attempts, e.delivery_reply) for e in entries} == {
        (DELIVERED, 1, "250 2.0.0 Ok: queued")
    }
    assert r.primary.sessions == 2  # batches [before, the whole message] and [after]


def test_a_duplicate_entry_shares_its_recipients_refusal_and_one_dsn_names_it_once() -> None:
    r = Relay()
    r.primary.script("gone@example.test", (550, "550 5.1.1 <gone@example.test>: user unknown"))
    r.primary.script("busy@example.test", (451, "451 4.3.0 try later"))
    queue_id = r.queue("gone@example.test", "busy@example.test", "gone@example.test",
                       "busy@example.test", "ok@example.test")  # fmt: skip
    result_of(r.loop.run())
    states = {e.id: (e.state, e.last_error) for e in r.entries().values()
              if e.message_id == queue_id}  # fmt: skip
    gone = (BOUNCED, "550 5.1.1 <gone@example.test>: user unknown")
    busy = (QUEUED, "451 4.3.0 try later")
    assert states == {f"{queue_id}.1": gone, f"{queue_id}.2": busy, f"{queue_id}.3": gone,
                      f"{queue_id}.4": busy, f"{queue_id}.5": (DELIVERED, None)}  # fmt: skip
    (dsn,) = r.dsns()
    recipients = [p["Final-Recipient"] for p in parts(parts(dsn)[1])[1:]]
    assert recipients == ["rfc822; gone@example.test"]
    # The deferred recipient is tried again once, for both its entries.
    r.clock.advance(INTERVAL)
    result_of(r.loop.run())
    assert r.primary.received[-1] == (queue_id, ("busy@example.test",))
    assert {r.entries()[f"{queue_id}.{n}"].state for n in (2, 4)} == {DELIVERED}


def test_duplicate_entries_that_expire_send_one_dsn() -> None:
    r = Relay()
    r.primary.up = False
    queue_id = r.queue("u@example.test", "u@example.test", "v@example.test")
    r.clock.advance(5 * 86400)
    r.primary.up = True
    result_of(r.loop.run())
    assert {e.state for e in r.entries().values() if e.message_id == queue_id} == {BOUNCED}
    # One DSN per expired entry, as ever, but none for the duplicate.
    recipients = [p["Final-Recipient"] for dsn in r.dsns() for p in parts(parts(dsn)[1])[1:]]
    assert recipients == ["rfc822; u@example.test", "rfc822; v@example.test"]


def test_postmaster_mail_released_before_an_operator_is_set_waits_and_never_expires() -> None:
    r = Relay(resolver=FakeMXResolver())  # it would route unprotected domains by MX
    waiting = Delivery("Postmaster", POSTMASTER_HOLD, held="set [server] postmaster")
    result_of(store_message(r.store, "PM1", b"Subject: hi\r\n\r\nhello\r\n", [waiting],
                            received_at=T0))  # fmt: skip
    result_of(r.store.change_state("PM1.1", (HELD,), QUEUED, T0, ""))  # an admin released it
    r.loop.start()
    r.clock.advance(6 * 86400)  # past the queue lifetime, every run due
    entry = r.entries()["PM1.1"]
    assert (entry.state, entry.attempts, entry.last_error) == (
        QUEUED, 0, "set [server] postmaster"
    )  # fmt: skip
    assert r.primary.sessions == 0 and r.dsns() == []
    r.loop.stop()
