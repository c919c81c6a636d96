"""
One conformance suite per storage role.  Each starts with ``verifyObject`` and then checks every
method and every rule the interface's docstrings promise.

A backend binds a suite by subclassing it in its own test module (``class TestSQLiteQueueStore(
QueueStoreSuite): pass``) and providing these pytest fixtures:

- ``clock``: a ``task.Clock``; the suites advance it to control every timestamp the store makes.
- ``store``: a fresh, open store built with that clock, whose Deferreds have fired by the time
  the call returns (memory store, or a disk store on a ``SyncExecutor``).  The message, queue and
  shadow suites need the store to provide ``IMessageStore`` as well: commit is the only way to
  create queue entries and shadow copies.
- ``set_entry_state``: ``f(store, entry_id, state)`` moves a queue entry to another state (the
  relay's queue methods do that in production; the stats rules need held and delivered entries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from strata_twisted.errors import (
    DomainExists,
    NoSuchDomain,
    NoSuchEntry,
    StorageError,
)
from strata_twisted.interfaces import (
    IDomainStore,
    IEventStore,
    IMessageStore,
    IMessageWriter,
    IQueueStore,
    IShadowStore,
)
from strata_twisted.model import (
    DELIVERED,
    HELD,
    QUEUED,
    Delivery,
    Domain,
    Envelope,
    Event,
    IncomingMessage,
    QueueEntry,
    QueueStats,
    RelayTarget,
    ShadowCopy,
    StoredMessage,
)
from strata_twisted.testing import failure_of, result_of, store_message

SetEntryState = Callable[[Any, str, str], None]

ALICE = Delivery("alice@example.com", "example.com")
BOB = Delivery("bob@example.com", "example.com", shadow=True)
CAROL = Delivery("carol@example.net", "example.net")
DAVE = Delivery("dave@example.net", "example.net", shadow=True)

# Bytes are sacred (DESIGN decision 3): CRLF and bare LF, 8-bit, NUL, a lone dot, trailing space.
BODY = (
    b"Received: from client.example (client.example [192.0.2.1])\r\n"
    b"\tby strata.test with ESMTP id M1; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"caf\xc3\xa9 \xff\xfe\x00 bare LF\n"
    b".\r\n"
    b"\r\n"
    b"trailing space \r\n"
)
HEADERS = BODY[: BODY.index(b"\r\n\r\n") + 4]


def fails_with(d: Any, error: type[BaseException]) -> BaseException:
    """The exception a fired Deferred failed with, asserted to be an ``error``."""
    failure = failure_of(d)
    assert failure.check(error), f"expected {error.__name__}, got {failure.value!r}"
    assert failure.value is not None
    return failure.value


def deliver(
    store: Any,
    message_id: str,
    deliveries: tuple[Delivery, ...] = (ALICE,),
    body: bytes = BODY,
    received_at: float = 1000.0,
    **kwargs: Any,
) -> StoredMessage:
    """Store a message (begin, write, commit) and return what the commit returned."""
    return result_of(
        store_message(store, message_id, body, deliveries, received_at=received_at, **kwargs)
    )


def assert_nothing_stored(store: Any, message_id: str) -> None:
    """No trace of ``message_id`` in any role the store provides."""
    assert result_of(store.get_message(message_id)) is None
    assert result_of(store.message_count()) == 0
    fails_with(store.read_body(message_id), NoSuchEntry)
    fails_with(store.read_headers(message_id), NoSuchEntry)
    if IQueueStore.providedBy(store):
        assert result_of(store.entries_for_message(message_id)) == []
        assert result_of(store.list_entries()) == []
        assert result_of(store.queue_stats()) == []
    if IShadowStore.providedBy(store):
        assert result_of(store.list_shadow_copies()) == []


class DomainStoreSuite:
    """L{IDomainStore}: protected domains, their errors, and the version that tracks changes."""

    def domain(self, name: str = "example.com", **kwargs: Any) -> Domain:
        return Domain(name, RelayTarget("mx.example.com", 25), **kwargs)

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IDomainStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.list_domains()) == []
        assert result_of(store.get_domain("example.com")) is None

    def test_add_stamps_zero_times_from_the_clock(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        added = result_of(store.add_domain(self.domain(mode="both")))
        assert added == self.domain(mode="both", created_at=1000.0, updated_at=1000.0)
        assert result_of(store.get_domain("example.com")) == added
        assert result_of(store.list_domains()) == [added]

    def test_add_keeps_given_times(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        given = self.domain(created_at=5.0, updated_at=7.0)
        assert result_of(store.add_domain(given)) == given
        assert result_of(store.get_domain("example.com")) == given

    def test_relay_target_round_trips(self, store: Any) -> None:
        domain = Domain("example.com", RelayTarget("2001:db8::25", 2525), created_at=1.0)
        result_of(store.add_domain(domain))
        stored = result_of(store.get_domain("example.com"))
        assert stored.relay == RelayTarget("2001:db8::25", 2525)

    def test_list_is_sorted_by_name(self, store: Any) -> None:
        for name in ("b.example", "xn--bcher-kva.example", "a.example"):
            result_of(store.add_domain(self.domain(name)))
        names = [d.name for d in result_of(store.list_domains())]
        assert names == ["a.example", "b.example", "xn--bcher-kva.example"]

    def test_add_existing_fails_and_changes_nothing(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        original = result_of(store.add_domain(self.domain()))
        version = result_of(store.domains_version())
        clock.advance(10)
        fails_with(store.add_domain(self.domain(mode="both")), DomainExists)
        assert result_of(store.get_domain("example.com")) == original
        assert result_of(store.domains_version()) == version

    def test_update_replaces_settings_and_refreshes_updated_at(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(1000)
        result_of(store.add_domain(self.domain()))
        clock.advance(500)
        changed = Domain("example.com", RelayTarget("mx2.example.com", 2525), mode="both")
        updated = result_of(store.update_domain(changed))
        assert updated == replace(changed, created_at=1000.0, updated_at=1500.0)
        assert result_of(store.get_domain("example.com")) == updated

    def test_update_unknown_fails(self, store: Any) -> None:
        fails_with(store.update_domain(self.domain()), NoSuchDomain)
        assert result_of(store.list_domains()) == []

    def test_remove(self, store: Any) -> None:
        result_of(store.add_domain(self.domain("a.example")))
        result_of(store.add_domain(self.domain("b.example")))
        assert result_of(store.remove_domain("a.example")) is None
        assert result_of(store.get_domain("a.example")) is None
        assert [d.name for d in result_of(store.list_domains())] == ["b.example"]

    def test_remove_unknown_fails(self, store: Any) -> None:
        fails_with(store.remove_domain("example.com"), NoSuchDomain)

    def test_version_changes_with_every_change(self, store: Any) -> None:
        seen = [result_of(store.domains_version())]
        result_of(store.add_domain(self.domain()))
        seen.append(result_of(store.domains_version()))
        result_of(store.update_domain(self.domain(mode="both")))
        seen.append(result_of(store.domains_version()))
        result_of(store.remove_domain("example.com"))
        seen.append(result_of(store.domains_version()))
        assert all(isinstance(v, int) for v in seen)
        assert len(set(seen)) == 4, seen

    def test_version_stays_without_changes(self, store: Any) -> None:
        result_of(store.add_domain(self.domain()))
        version = result_of(store.domains_version())
        result_of(store.list_domains())
        result_of(store.get_domain("example.com"))
        fails_with(store.update_domain(self.domain("other.example")), NoSuchDomain)
        fails_with(store.remove_domain("other.example"), NoSuchDomain)
        assert result_of(store.domains_version()) == version


class MessageStoreSuite:
    """L{IMessageStore} and L{IMessageWriter}: two-phase delivery, bodies and headers."""

    def incoming(self, *deliveries: Delivery, received_at: float = 1000.0) -> IncomingMessage:
        deliveries = deliveries or (ALICE,)
        envelope = Envelope("sender@example.org", tuple(d.recipient for d in deliveries))
        return IncomingMessage(envelope, received_at, deliveries, "<1@example.org>")

    def test_provides_interfaces(self, store: Any) -> None:
        assert verifyObject(IMessageStore, store)
        writer = store.begin("M1")
        assert verifyObject(IMessageWriter, writer)
        assert writer.message_id == "M1"
        assert writer.size == 0
        result_of(writer.abort())

    def test_size_counts_bytes_written(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(b"abc"))
        result_of(writer.write(b""))
        result_of(writer.write(b"\r\n" * 200_000))
        assert writer.size == 3 + 400_000
        result_of(writer.abort())

    def test_begin_refuses_ids_that_are_not_file_names(self, store: Any) -> None:
        for bad in ("", "../x", "a/b", ".hidden", "a b", "x" * 129):
            with pytest.raises(ValueError):
                store.begin(bad)

    def test_uncommitted_message_is_invisible(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        result_of(writer.write(b"x" * 300_000))  # past any write buffer
        assert_nothing_stored(store, "M1")
        result_of(writer.abort())

    def test_commit_makes_everything_visible(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        stored = result_of(writer.commit(self.incoming(ALICE, BOB, CAROL)))
        assert stored == StoredMessage(
            id="M1",
            envelope=Envelope(
                "sender@example.org", ("alice@example.com", "bob@example.com", "carol@example.net")
            ),
            received_at=1000.0,
            size=len(BODY),
            header_message_id="<1@example.org>",
        )
        assert result_of(store.get_message("M1")) == stored
        assert result_of(store.message_count()) == 1
        assert result_of(store.read_body("M1")) == BODY
        assert result_of(store.read_headers("M1")) == HEADERS
        if IQueueStore.providedBy(store):
            entries = result_of(store.entries_for_message("M1"))
            assert [e.recipient for e in entries] == [d.recipient for d in (ALICE, BOB, CAROL)]
        if IShadowStore.providedBy(store):
            copies = result_of(store.list_shadow_copies())
            assert [(c.message_id, c.recipient) for c in copies] == [("M1", "bob@example.com")]

    def test_envelope_round_trips(self, store: Any) -> None:
        envelope = Envelope(
            sender="",  # the null sender <>
            recipients=("jörg@bücher.example", "x@example.com"),
            client_address="2001:db8::1",
            client_helo="client.example",
            body_8bitmime=True,
            smtputf8=True,
        )
        deliveries = (Delivery("jörg@bücher.example", "xn--bcher-kva.example"),)
        stored = deliver(store, "M1", deliveries, envelope=envelope, received_at=1234.5)
        assert stored.envelope == envelope
        assert stored.header_message_id is None
        assert result_of(store.get_message("M1")) == stored

    def test_body_bytes_are_kept_exactly(self, store: Any) -> None:
        # Uneven chunks across any buffer boundary; every byte value; no trailing newline.
        body = BODY + bytes(range(256)) * 5000 + b"\r\n.\r\nend without newline"
        stored = deliver(store, "M1", body=body, chunk_size=100_003)
        assert stored.size == len(body)
        assert result_of(store.read_body("M1")) == body

    def test_large_body(self, store: Any) -> None:
        body = HEADERS + b"0123456789abcdef" * (3 * 1024 * 1024 // 16)
        deliver(store, "M1", body=body, chunk_size=16 * 1024)
        assert result_of(store.read_body("M1")) == body
        assert result_of(store.read_headers("M1")) == HEADERS

    def test_empty_body(self, store: Any) -> None:
        stored = deliver(store, "M1", body=b"")
        assert stored.size == 0
        assert result_of(store.read_body("M1")) == b""
        assert result_of(store.read_headers("M1")) == b""

    def test_abort_leaves_nothing(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        result_of(writer.write(b"x" * 600_000))
        assert result_of(writer.abort()) is None
        assert_nothing_stored(store, "M1")

    def test_abort_before_any_write(self, store: Any) -> None:
        result_of(store.begin("M1").abort())
        assert_nothing_stored(store, "M1")

    def test_abort_twice_is_safe(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        result_of(writer.abort())
        result_of(writer.abort())
        assert_nothing_stored(store, "M1")

    def test_aborted_writer_is_finished(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.abort())
        fails_with(writer.write(b"more"), StorageError)
        fails_with(writer.commit(self.incoming()), StorageError)
        assert_nothing_stored(store, "M1")

    def test_committed_writer_is_finished(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        stored = result_of(writer.commit(self.incoming()))
        fails_with(writer.write(b"more"), StorageError)
        fails_with(writer.commit(self.incoming()), StorageError)
        # Abort after a commit cannot take the message back.
        result_of(writer.abort())
        assert result_of(store.get_message("M1")) == stored
        assert result_of(store.read_body("M1")) == BODY

    def test_id_of_a_stored_message_cannot_be_reused(self, store: Any) -> None:
        first = deliver(store, "M1", (ALICE, BOB))
        writer = store.begin("M1")
        result_of(writer.write(b"Subject: other\r\n\r\nother\r\n"))
        fails_with(writer.commit(self.incoming(CAROL)), StorageError)
        result_of(writer.abort())
        assert result_of(store.get_message("M1")) == first
        assert result_of(store.read_body("M1")) == BODY
        assert result_of(store.message_count()) == 1
        if IQueueStore.providedBy(store):
            assert [e.recipient for e in result_of(store.entries_for_message("M1"))] == [
                ALICE.recipient,
                BOB.recipient,
            ]

    def test_writers_are_independent(self, store: Any) -> None:
        one, two = store.begin("M1"), store.begin("M2")
        result_of(one.write(b"A: 1\r\n\r\none\r\n"))
        result_of(two.write(b"B: 2\r\n\r\ntwo\r\n"))
        result_of(one.abort())
        result_of(two.commit(self.incoming()))
        assert result_of(store.get_message("M1")) is None
        assert result_of(store.read_body("M2")) == b"B: 2\r\n\r\ntwo\r\n"
        assert result_of(store.message_count()) == 1

    def test_message_count(self, store: Any) -> None:
        assert result_of(store.message_count()) == 0
        for n in range(3):
            deliver(store, f"M{n}")
        assert result_of(store.message_count()) == 3

    def test_unknown_message(self, store: Any) -> None:
        assert result_of(store.get_message("NOPE")) is None
        fails_with(store.read_body("NOPE"), NoSuchEntry)
        fails_with(store.read_headers("NOPE"), NoSuchEntry)

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n", b"A: 1\r\nB: 2\r\n\r\n"),
            (b"A: 1\nB: 2\n\nbody\n\nmore\n", b"A: 1\nB: 2\n\n"),
            (b"A: 1\r\n folded\r\n\tagain\r\n\r\nbody", b"A: 1\r\n folded\r\n\tagain\r\n\r\n"),
            (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n"),  # no body: all of it
            (b"A: 1\r\nB: 2", b"A: 1\r\nB: 2"),
            (b"\r\nbody only\r\n", b"\r\n"),  # empty header section
            (
                b"A: 1\r\nB: " + b"x" * 300_000 + b"\r\n\r\nbody",
                b"A: 1\r\nB: " + b"x" * 300_000 + b"\r\n\r\n",
            ),
        ],
        ids=["crlf", "bare-lf", "folded", "no-body", "no-final-newline", "empty", "long-header"],
    )
    def test_read_headers_stops_at_the_blank_line(
        self, store: Any, body: bytes, headers: bytes
    ) -> None:
        deliver(store, "M1", body=body, chunk_size=7)
        assert result_of(store.read_headers("M1")) == headers
        assert result_of(store.read_body("M1")) == body


class QueueStoreSuite:
    """L{IQueueStore}: one entry per recipient, in arrival order, per domain, with stats."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IQueueStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.list_entries()) == []
        assert result_of(store.list_entries("example.com")) == []
        assert result_of(store.get_entry("M1.1")) is None
        assert result_of(store.entries_for_message("M1")) == []
        assert result_of(store.queue_stats()) == []

    def test_one_queued_entry_per_delivery(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB, CAROL), received_at=1234.5, header_message_id="<x@y>")
        entries = result_of(store.entries_for_message("M1"))
        expected = [
            QueueEntry(
                id=f"M1.{n}",
                seq=entry.seq,
                message_id="M1",
                domain=delivery.domain,
                recipient=delivery.recipient,
                sender="sender@example.org",
                header_message_id="<x@y>",
                size=len(BODY),
                received_at=1234.5,
                state=QUEUED,
                attempts=0,
                last_error=None,
                next_attempt_at=1234.5,
            )
            for n, (delivery, entry) in enumerate(
                zip((ALICE, BOB, CAROL), entries, strict=True), start=1
            )
        ]
        assert entries == expected
        assert [result_of(store.get_entry(e.id)) for e in expected] == expected

    def test_entry_ids_number_recipients_from_one(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB, CAROL, DAVE))
        deliver(store, "M2", (CAROL,))
        assert [e.id for e in result_of(store.list_entries())] == [
            "M1.1",
            "M1.2",
            "M1.3",
            "M1.4",
            "M2.1",
        ]

    def test_entries_are_ordered_by_seq_across_messages_and_domains(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, CAROL))
        deliver(store, "M2", (DAVE,))
        deliver(store, "M3", (BOB,))
        deliver(store, "M4", (CAROL, ALICE))
        entries = result_of(store.list_entries())
        assert [e.id for e in entries] == ["M1.1", "M1.2", "M2.1", "M3.1", "M4.1", "M4.2"]
        seqs = [e.seq for e in entries]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    def test_list_entries_filters_by_domain(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, CAROL))
        deliver(store, "M2", (DAVE,))
        deliver(store, "M3", (BOB,))
        assert [e.id for e in result_of(store.list_entries("example.com"))] == ["M1.1", "M3.1"]
        assert [e.id for e in result_of(store.list_entries("example.net"))] == ["M1.2", "M2.1"]
        assert result_of(store.list_entries("example.org")) == []

    def test_seq_follows_commit_order_not_begin_order(self, store: Any) -> None:
        first, second = store.begin("FIRST"), store.begin("SECOND")
        result_of(first.write(BODY))
        result_of(second.write(BODY))
        incoming = IncomingMessage(Envelope("s@example.org", ("alice@example.com",)), 1.0, (ALICE,))
        result_of(second.commit(incoming))
        result_of(first.commit(incoming))
        assert [e.id for e in result_of(store.list_entries())] == ["SECOND.1", "FIRST.1"]

    def test_seq_keeps_growing(self, store: Any, set_entry_state: SetEntryState) -> None:
        deliver(store, "M1", (ALICE,))
        last = result_of(store.get_entry("M1.1")).seq
        set_entry_state(store, "M1.1", DELIVERED)
        deliver(store, "M2", (ALICE,))
        assert result_of(store.get_entry("M2.1")).seq > last

    def test_entries_for_message_is_in_recipient_order(self, store: Any) -> None:
        deliver(store, "M1", (CAROL, ALICE, DAVE, BOB))
        deliver(store, "M2", (ALICE,))
        entries = result_of(store.entries_for_message("M1"))
        assert [e.recipient for e in entries] == [d.recipient for d in (CAROL, ALICE, DAVE, BOB)]
        assert [e.id for e in entries] == ["M1.1", "M1.2", "M1.3", "M1.4"]

    def test_unknown_entry(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        assert result_of(store.get_entry("M1.2")) is None
        assert result_of(store.get_entry("M1")) is None
        assert result_of(store.entries_for_message("M2")) == []

    def test_queue_stats(self, store: Any, set_entry_state: SetEntryState) -> None:
        deliver(store, "M1", (ALICE, BOB), received_at=200.0)
        deliver(store, "M2", (ALICE, CAROL), received_at=100.0)
        deliver(store, "M3", (DAVE,), received_at=300.0)
        assert result_of(store.queue_stats()) == [
            QueueStats("example.com", queued=3, held=0, oldest_received_at=100.0),
            QueueStats("example.net", queued=2, held=0, oldest_received_at=100.0),
        ]
        set_entry_state(store, "M2.1", HELD)  # held entries count, and age the queue
        set_entry_state(store, "M1.1", DELIVERED)  # done: not counted
        set_entry_state(store, "M2.2", DELIVERED)
        assert result_of(store.queue_stats()) == [
            QueueStats("example.com", queued=1, held=1, oldest_received_at=100.0),
            QueueStats("example.net", queued=1, held=0, oldest_received_at=300.0),
        ]
        set_entry_state(store, "M3.1", DELIVERED)  # a domain with nothing waiting disappears
        set_entry_state(store, "M2.1", DELIVERED)
        assert result_of(store.queue_stats()) == [
            QueueStats("example.com", queued=1, held=0, oldest_received_at=200.0),
        ]
        # list_entries still shows entries in every state.
        assert len(result_of(store.list_entries())) == 5
        assert result_of(store.get_entry("M3.1")).state == DELIVERED

    def test_removing_a_domain_keeps_its_queue(self, store: Any) -> None:
        domains = store
        if not IDomainStore.providedBy(domains):
            pytest.skip("the store does not keep domains")
        result_of(domains.add_domain(Domain("example.com", RelayTarget("mx.example.com"))))
        deliver(store, "M1", (ALICE,))
        result_of(domains.remove_domain("example.com"))
        assert [e.id for e in result_of(store.list_entries("example.com"))] == ["M1.1"]
        assert [s.domain for s in result_of(store.queue_stats())] == ["example.com"]

    def test_aborted_message_queues_nothing(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        writer = store.begin("M2")
        result_of(writer.write(BODY))
        result_of(writer.abort())
        assert [e.id for e in result_of(store.list_entries())] == ["M1.1"]
        assert result_of(store.entries_for_message("M2")) == []


class ShadowStoreSuite:
    """L{IShadowStore}: copies for the recipients whose delivery asks for one."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IShadowStore, store)
        assert result_of(store.list_shadow_copies()) == []
        assert result_of(store.list_shadow_copies("bob@example.com")) == []

    def test_only_shadow_deliveries_get_a_copy(self, store: Any, clock: task.Clock) -> None:
        clock.advance(500)
        deliver(store, "M1", (ALICE, BOB, CAROL, DAVE))
        assert result_of(store.list_shadow_copies()) == [
            ShadowCopy("M1", "bob@example.com", "INBOX", 500.0),
            ShadowCopy("M1", "dave@example.net", "INBOX", 500.0),
        ]

    def test_copies_in_arrival_order_filtered_by_recipient(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(500)
        deliver(store, "M1", (BOB,))
        clock.advance(100)
        deliver(store, "M2", (DAVE, BOB))
        clock.advance(100)
        deliver(store, "M3", (ALICE,))
        assert [(c.message_id, c.recipient) for c in result_of(store.list_shadow_copies())] == [
            ("M1", "bob@example.com"),
            ("M2", "dave@example.net"),
            ("M2", "bob@example.com"),
        ]
        assert result_of(store.list_shadow_copies("bob@example.com")) == [
            ShadowCopy("M1", "bob@example.com", "INBOX", 500.0),
            ShadowCopy("M2", "bob@example.com", "INBOX", 600.0),
        ]
        assert result_of(store.list_shadow_copies("alice@example.com")) == []

    def test_aborted_message_leaves_no_copy(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        result_of(writer.abort())
        assert result_of(store.list_shadow_copies()) == []


class EventStoreSuite:
    """L{IEventStore}: an append-only log, read newest-N oldest-first."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IEventStore, store)
        assert result_of(store.list_events()) == []

    def test_record_event(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        data = {"relay": "mx.example.com:25", "nested": {"list": [1, "two", None, True]}}
        event = result_of(store.record_event("domain.added", "protecting x", "example.com", data))
        assert isinstance(event.id, int)
        assert event == Event(event.id, 1000.0, "domain.added", "protecting x", "example.com", data)
        assert result_of(store.list_events()) == [event]

    def test_defaults(self, store: Any) -> None:
        event = result_of(store.record_event("startup", "Strata started"))
        assert event.domain is None
        assert event.data == {}
        assert result_of(store.list_events()) == [event]

    def test_ids_grow(self, store: Any) -> None:
        ids = [result_of(store.record_event("k", f"m{n}")).id for n in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5

    def test_newest_n_oldest_first(self, store: Any, clock: task.Clock) -> None:
        for n in range(5):
            clock.advance(10)
            result_of(store.record_event("k", f"m{n}"))
        events = result_of(store.list_events(limit=3))
        assert [e.message for e in events] == ["m2", "m3", "m4"]
        assert [e.at for e in events] == [30.0, 40.0, 50.0]
        assert [e.message for e in result_of(store.list_events(limit=50))] == [
            f"m{n}" for n in range(5)
        ]
        assert result_of(store.list_events(limit=0)) == []

    def test_default_limit_is_100(self, store: Any) -> None:
        for n in range(105):
            result_of(store.record_event("k", f"m{n}"))
        events = result_of(store.list_events())
        assert len(events) == 100
        assert events[0].message == "m5" and events[-1].message == "m104"

    def test_domain_filter(self, store: Any) -> None:
        for n in range(4):
            result_of(store.record_event("k", f"a{n}", "a.example"))
            result_of(store.record_event("k", f"b{n}", "b.example"))
            result_of(store.record_event("k", f"none{n}"))
        assert [e.message for e in result_of(store.list_events("a.example", limit=2))] == [
            "a2",
            "a3",
        ]
        assert [e.message for e in result_of(store.list_events("b.example"))] == [
            "b0",
            "b1",
            "b2",
            "b3",
        ]
        assert result_of(store.list_events("c.example")) == []
        assert len(result_of(store.list_events())) == 12

    def test_data_that_is_not_json_fails(self, store: Any) -> None:
        fails_with(store.record_event("k", "m", data={"when": object()}), StorageError)
        assert result_of(store.list_events()) == []
