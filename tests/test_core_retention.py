"""
The retention job on a task.Clock with the memory store: old shadow mail is purged and its bodies
deleted, a body the relay still needs is kept, per-domain periods, one domain's failure does not
stop the others, and the loop runs soon after start and then daily.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from strata_twisted.core.domains import DomainCache
from strata_twisted.core.retention import (
    DAY,
    DEFAULT_RETENTION_DAYS,
    FIRST_RUN_DELAY,
    DomainPurge,
    RetentionJob,
)
from strata_twisted.errors import NoSuchEntry, StorageError
from strata_twisted.model import (
    DELIVERED,
    HELD,
    Delivery,
    Domain,
    PurgedMessage,
    RelayTarget,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import failure_of, result_of, store_message

T0 = 1_800_000_000.0
A = "a.example"
B = "b.example"
ALICE = "alice@a.example"
BOB = "bob@b.example"
BODY = b"Subject: hello\r\n\r\nhello\r\n"


class FlakyStore(MemoryStore):
    """The memory store; ``broken`` domains fail to purge."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.broken: set[str] = set()

    def purge_older_than(self, domain: str, before: float) -> Deferred[list[PurgedMessage]]:
        if domain in self.broken:
            return fail(StorageError("database is locked"))
        return super().purge_older_than(domain, before)


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = FlakyStore(self.clock)
        self.domains = DomainCache(self.clock, self.store, 1.0)
        self.job = RetentionJob(self.clock, self.domains, self.store, self.store, self.store)

    def protect(self, name: str, **kwargs: Any) -> None:
        domain = Domain(name, RelayTarget("mx." + name), mode="both", **kwargs)
        result_of(self.store.add_domain(domain))
        result_of(self.domains.refresh())

    def receive(self, message_id: str, age_days: float, *recipients: str) -> None:
        """Intake in mode both: queued for the primary, and a copy in each recipient's INBOX."""
        deliveries = [Delivery(r, r.split("@")[1], shadow=True) for r in recipients or (ALICE,)]
        received_at = self.clock.seconds() - age_days * DAY
        result_of(store_message(self.store, message_id, BODY, deliveries, received_at=received_at))

    def delivered(self, message_id: str) -> None:
        """The relay delivered every recipient of the message to the primary."""
        for entry in result_of(self.store.entries_for_message(message_id)):
            self.store._set_entry_state(entry.id, DELIVERED)

    def inbox(self, user: str = ALICE) -> list[str]:
        return [m.message_id for m in result_of(self.store.list_messages(user, "INBOX"))]

    def stored(self, message_id: str) -> bool:
        return result_of(self.store.get_message(message_id)) is not None

    def run(self) -> list[DomainPurge]:
        return result_of(Deferred.fromCoroutine(self.job.run_once()))

    def events(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        return [(e.kind, e.domain, e.data) for e in result_of(self.store.list_events())]


@pytest.fixture
def world() -> World:
    return World()


def test_old_messages_are_purged_and_their_bodies_deleted(world: World) -> None:
    world.protect(A)
    world.receive("OLD", DEFAULT_RETENTION_DAYS + 1)
    world.receive("EDGE", DEFAULT_RETENTION_DAYS - 0.01)
    world.receive("NEW", 1)
    for message_id in ("OLD", "EDGE", "NEW"):
        world.delivered(message_id)
    done = world.run()
    assert done == [DomainPurge(A, 30, T0 - 30 * DAY, purged=1, deleted=1)]
    assert world.inbox() == ["EDGE", "NEW"]
    assert not world.stored("OLD")
    assert world.stored("EDGE") and world.stored("NEW")
    assert failure_of(world.store.read_body("OLD")).check(NoSuchEntry)
    assert result_of(world.store.entries_for_message("OLD")) == []
    # One event for the domain, with the counts.
    [(kind, domain, data)] = world.events()
    assert (kind, domain) == ("retention.purged", A)
    assert data == {"days": 30, "before": T0 - 30 * DAY, "purged": 1, "messages": 1, "deleted": 1}
    # Nothing more to do: no second event.
    assert world.run() == []
    assert len(world.events()) == 1


def test_a_body_still_queued_for_the_primary_is_kept(world: World) -> None:
    world.protect(A)
    world.receive("QUEUED", 40)  # the primary has been down for 40 days: still in the queue
    world.receive("HELD", 40)
    world.store._set_entry_state("HELD.1", HELD)
    done = world.run()
    assert done == [DomainPurge(A, 30, T0 - 30 * DAY, purged=2, deleted=0)]
    assert world.inbox() == []
    assert result_of(world.store.read_body("QUEUED")) == BODY
    assert result_of(world.store.read_body("HELD")) == BODY
    assert [e.state for e in result_of(world.store.entries_for_message("QUEUED"))] == ["queued"]
    [(_, _, data)] = world.events()
    assert (data["purged"], data["deleted"]) == (2, 0)


def test_a_body_in_another_domains_mailbox_waits_for_that_domains_purge(world: World) -> None:
    world.protect(A)
    world.protect(B, retention_days=60)
    world.receive("SHARED", 40, ALICE, BOB)
    world.delivered("SHARED")
    assert world.run() == [DomainPurge(A, 30, T0 - 30 * DAY, purged=1, deleted=0)]
    assert world.inbox(ALICE) == [] and world.inbox(BOB) == ["SHARED"]
    assert world.stored("SHARED")
    world.clock.advance(21 * DAY)
    assert world.run() == [DomainPurge(B, 60, T0 - 39 * DAY, purged=1, deleted=1)]
    assert not world.stored("SHARED")


def test_a_domains_own_retention_period_wins(world: World) -> None:
    world.protect(A, retention_days=7)
    world.protect(B)
    world.receive("A10", 10, ALICE)
    world.receive("B10", 10, BOB)
    world.receive("B31", 31, BOB)
    for message_id in ("A10", "B10", "B31"):
        world.delivered(message_id)
    done = world.run()
    assert [(p.domain, p.days, p.purged) for p in done] == [(A, 7, 1), (B, 30, 1)]
    assert world.inbox(ALICE) == []
    assert world.inbox(BOB) == ["B10"]


def test_the_default_period_is_a_constructor_argument(world: World) -> None:
    job = RetentionJob(world.clock, world.domains, world.store, world.store, world.store, 5)
    world.protect(A)
    world.receive("M6", 6)
    assert [p.days for p in result_of(Deferred.fromCoroutine(job.run_once()))] == [5]
    assert world.inbox() == []


def test_a_failing_domain_does_not_stop_the_others(world: World) -> None:
    world.protect(A)
    world.protect(B)
    world.receive("A40", 40, ALICE)
    world.receive("B40", 40, BOB)
    world.store.broken.add(A)
    assert [p.domain for p in world.run()] == [B]
    assert world.inbox(ALICE) == ["A40"]
    # The next run tries again.
    world.store.broken.clear()
    assert [p.domain for p in world.run()] == [A]


def test_a_failed_event_does_not_undo_or_stop_the_purge(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.protect(A)
    world.protect(B)
    world.receive("A40", 40, ALICE)
    world.receive("B40", 40, BOB)
    monkeypatch.setattr(
        world.store, "record_event", lambda *a, **k: fail(StorageError("disk full"))
    )
    assert [p.domain for p in world.run()] == [A, B]


def test_the_loop_runs_soon_after_start_then_daily(world: World) -> None:
    world.protect(A)
    world.receive("M1", 31)
    world.job.start()
    world.clock.advance(FIRST_RUN_DELAY - 1)
    assert world.inbox() == ["M1"]  # not yet
    world.clock.advance(1)
    assert world.inbox() == []  # the first run
    # Mail that becomes old during the day waits for the next daily run.
    world.receive("M2", 30 - 0.5)
    world.clock.advance(DAY - 1)
    assert world.inbox() == ["M2"]
    world.clock.advance(1)
    assert world.inbox() == []
    # A day with a failing store does not stop the loop.
    world.receive("M3", 31)
    world.store.broken.add(A)
    world.clock.advance(DAY)
    assert world.inbox() == ["M3"]
    world.store.broken.clear()
    world.clock.advance(DAY)
    assert world.inbox() == []
    assert [data["purged"] for _, _, data in world.events()] == [1, 1, 1]
    world.job.stop()
    world.receive("M4", 31)
    world.clock.advance(2 * DAY)
    assert world.inbox() == ["M4"]
    assert world.clock.getDelayedCalls() == []


def test_stop_before_the_first_run_cancels_it(world: World) -> None:
    world.protect(A)
    world.receive("M1", 31)
    world.job.start()
    world.job.start()  # twice: still one schedule
    world.job.stop()
    world.clock.advance(2 * DAY)
    assert world.inbox() == ["M1"]
    assert world.clock.getDelayedCalls() == []


def test_a_run_asked_for_during_a_run_does_nothing(world: World) -> None:
    world.protect(A)
    world.receive("M1", 31)
    gate: Deferred[list[PurgedMessage]] = Deferred()
    purge = world.store.purge_older_than
    world.store.purge_older_than = lambda domain, before: gate  # type: ignore[method-assign]
    first = Deferred.fromCoroutine(world.job.run_once())
    assert world.run() == []
    world.store.purge_older_than = purge  # type: ignore[method-assign]
    gate.callback(result_of(purge(A, T0 - 30 * DAY)))
    assert [p.purged for p in result_of(first)] == [1]
