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
- ``set_entry_state``: ``f(store, entry_id, state)`` moves a queue entry to another state whatever
  state it is in (``change_state`` and ``record_result`` keep rules; the stats and due rules need
  entries in every state, delivered ones included).
- ``body_files``: ``f(store)`` lists the body files the store keeps beside its records (SQLite's
  ``messages/`` directory; ``[]`` for a store that keeps none), so the mailbox suite can check
  that deleting a message deletes its file.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from strata_twisted.errors import (
    AlreadyExists,
    DomainExists,
    InvalidDomainName,
    NoSuchDomain,
    NoSuchEntry,
    NotFound,
    QueueStateError,
    StorageError,
)
from strata_twisted.interfaces import (
    IAdminStore,
    IAuditStore,
    IControlStore,
    ICredentialStore,
    IDomainStore,
    IEventStore,
    IMailboxStore,
    IMessageStore,
    IMessageWriter,
    IMonitorStore,
    IQueueStore,
    IShadowStore,
    ITenantStore,
)
from strata_twisted.model import (
    BOUNCED,
    BOUNCED_OUTCOME,
    DEFERRED_OUTCOME,
    DELETED,
    DELIVERED,
    DELIVERED_OUTCOME,
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_SET,
    HELD,
    HELD_OUTCOME,
    OUTCOMES,
    QUEUE_STATES,
    QUEUED,
    AdminAccount,
    ApiKey,
    AttemptResult,
    AuditRecord,
    Branding,
    ControlRequest,
    CopyResult,
    Customer,
    Delivery,
    Domain,
    DomainStatus,
    Envelope,
    Event,
    EventFilter,
    IncomingMessage,
    InvalidFlag,
    InvalidMailboxName,
    InvalidPasswordHash,
    InvalidUser,
    MailboxError,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxRefused,
    MailboxStatus,
    MailMessage,
    NewEvent,
    NoSuchMailbox,
    NoSuchUser,
    Outage,
    PurgedMessage,
    QueueEntry,
    QueueFilter,
    QueueStats,
    RelayTarget,
    Reseller,
    ResellerLogo,
    ShadowCopy,
    StoredMessage,
    UserCredential,
    UserListChange,
)
from strata_twisted.proto.mime import index_message, index_to_json
from strata_twisted.storage._admin_memory import entry_matches, event_matches
from strata_twisted.testing import failure_of, result_of, store_message

SetEntryState = Callable[[Any, str, str], None]

ALICE = Delivery("alice@example.com", "example.com")
BOB = Delivery("bob@example.com", "example.com", shadow=True)
CAROL = Delivery("carol@example.net", "example.net")
DAVE = Delivery("dave@example.net", "example.net", shadow=True)
ERIN = Delivery("erin@a.example", "a.example")
# Submission (#5): recipients outside the protected domains, for the outbound queue.
ZOE = Delivery("zoe@elsewhere.example", "elsewhere.example", outbound=True)
YURI = Delivery("yuri@elsewhere.example", "elsewhere.example", outbound=True)

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
MULTIPART = (
    b"From: Bob <bob@example.org>\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename=a.bin\r\n"
    b"\r\n"
    b"\x00\x01\x02\r\n"
    b"--b1--\r\n"
)


def mime_index_of(body: bytes) -> bytes:
    """The MIME index a store keeps for this body (proto.mime, as the IMAP layer reads it)."""
    return index_to_json(index_message(io.BytesIO(body), len(body)))


def store_boxes(store: Any, user: str) -> list[MailboxInfo]:
    boxes = result_of(store.list_mailboxes(user))
    assert isinstance(boxes, list)
    return boxes


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


def entry(store: Any, entry_id: str) -> QueueEntry:
    """The queue entry with this id, asserted to exist."""
    found = result_of(store.get_entry(entry_id))
    assert isinstance(found, QueueEntry), f"no queue entry {entry_id}"
    return found


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

    def test_relay_settings_default(self, store: Any) -> None:
        result_of(store.add_domain(self.domain()))
        stored = result_of(store.get_domain("example.com"))
        assert (stored.tls_policy, stored.hold_rejected, stored.monitored) == (
            "opportunistic",
            False,
            True,
        )
        assert (
            stored.queue_lifetime,
            stored.probe_interval,
            stored.down_after,
            stored.up_after,
        ) == (None, None, None, None)
        # The webmail portal opens during outages; retention follows the global default.
        assert (stored.portal, stored.retention_days) == ("outage", None)
        # The operator's own until a customer is given (#13).
        assert stored.customer == ""
        # No alert targets until the admin sets them.
        assert (stored.alert_email, stored.alert_webhook, stored.alert_webhook_auth) == (
            None,
            None,
            None,
        )

    def test_every_field_round_trips(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        domain = Domain(
            "example.com",
            RelayTarget("2001:db8::25", 2525),
            mode="both",
            created_at=5.0,
            updated_at=7.0,
            tls_policy="verify",
            hold_rejected=True,
            queue_lifetime=5 * 86400.0,
            probe_interval=30.5,
            down_after=3,
            up_after=2,
            monitored=False,
            accept_unknown=True,
            portal="always",
            retention_days=7,
            alert_email="noc@example.net",
            alert_webhook="https://sms.example.net/hook?key=s3cret",
            alert_webhook_auth="Bearer s3cret",
            customer="acme",
        )
        assert result_of(store.add_domain(domain)) == domain
        assert result_of(store.get_domain("example.com")) == domain
        assert result_of(store.list_domains()) == [domain]

        clock.advance(500)
        # Every setting changes, overrides go back to None ("use the global value"), the domain
        # goes back to the operator ("").
        changed = Domain("example.com", RelayTarget("mx.example.com"), tls_policy="none")
        expected = replace(changed, created_at=5.0, updated_at=1500.0)
        assert result_of(store.update_domain(changed)) == expected
        assert result_of(store.get_domain("example.com")) == expected
        assert result_of(store.list_domains()) == [expected]

        again = replace(domain, tls_policy="required", up_after=0, queue_lifetime=0.0)
        assert result_of(store.update_domain(again)) == replace(again, updated_at=1500.0)
        assert result_of(store.get_domain("example.com")) == replace(again, updated_at=1500.0)

    @pytest.mark.parametrize("portal", ["outage", "always", "off", "open"])
    def test_portal_policy_round_trips(self, store: Any, portal: str) -> None:
        result_of(store.add_domain(self.domain(portal=portal)))
        assert result_of(store.get_domain("example.com")).portal == portal
        # A drill ("open") is put back to "outage" with an update, like any setting.
        result_of(store.update_domain(self.domain(portal="outage")))
        assert result_of(store.get_domain("example.com")).portal == "outage"
        result_of(store.update_domain(self.domain(portal=portal)))
        assert [d.portal for d in result_of(store.list_domains())] == [portal]

    def test_retention_days_round_trip_and_go_back_to_the_default(self, store: Any) -> None:
        result_of(store.add_domain(self.domain(retention_days=1)))
        assert result_of(store.get_domain("example.com")).retention_days == 1
        result_of(store.update_domain(self.domain(retention_days=36500)))
        assert result_of(store.get_domain("example.com")).retention_days == 36500
        result_of(store.update_domain(self.domain(retention_days=None)))
        assert result_of(store.get_domain("example.com")).retention_days is None

    def test_alert_settings_round_trip_and_clear(self, store: Any) -> None:
        alerts = {
            "alert_email": "nöc@bücher.example",  # a UTF-8 local part and domain
            "alert_webhook": "http://127.0.0.1:8080/alert",
            "alert_webhook_auth": "Basic dXNlcjpwYXNz",
        }
        result_of(store.add_domain(self.domain(**alerts)))
        stored = result_of(store.get_domain("example.com"))
        assert (stored.alert_email, stored.alert_webhook, stored.alert_webhook_auth) == tuple(
            alerts.values()
        )
        # Only the webhook's secret goes; the rest stays.
        result_of(store.update_domain(replace(stored, alert_webhook_auth=None)))
        (listed,) = result_of(store.list_domains())
        assert (listed.alert_email, listed.alert_webhook, listed.alert_webhook_auth) == (
            alerts["alert_email"],
            alerts["alert_webhook"],
            None,
        )
        assert listed.as_json()["alert_webhook_auth_set"] is False
        result_of(store.update_domain(self.domain()))
        cleared = result_of(store.get_domain("example.com"))
        assert (cleared.alert_email, cleared.alert_webhook, cleared.alert_webhook_auth) == (
            None,
            None,
            None,
        )

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
        fails_with(store.read_body_range("NOPE", 0, 10), NoSuchEntry)
        deliver(store, "M1")
        fails_with(store.read_body_range("NOPE", 0, 10), NoSuchEntry)

    @pytest.mark.parametrize(
        ("offset", "length"),
        [
            (0, 10),
            (0, len(BODY)),
            (0, len(BODY) + 1),
            (60, 47),
            (len(BODY) - 5, 5),
            (len(BODY) - 5, 1000),
            (len(BODY), 10),
            (len(BODY) + 1000, 10),
            (60, 0),
        ],
        ids=[
            "start",
            "whole",
            "whole-and-more",
            "middle",
            "end",
            "across-end",
            "at-end",
            "past-end",
            "zero-length",
        ],
    )
    def test_read_body_range(self, store: Any, offset: int, length: int) -> None:
        deliver(store, "M1")
        assert result_of(store.read_body_range("M1", offset, length)) == BODY[offset:][:length]

    def test_read_body_range_of_a_large_body(self, store: Any) -> None:
        # Past any write buffer and inline limit, with bytes that tell every offset apart.
        body = HEADERS + bytes(range(251)) * (1024 * 1024 // 251 * 3)
        deliver(store, "M1", body=body, chunk_size=100_003)
        size = len(body)
        for offset, length in [
            (0, 100),
            (256 * 1024 - 7, 14),  # across the writer's buffer boundary
            (size // 2, 65536),
            (size - 100, 100),
            (size - 100, 10**9),  # more than there is: what there is
            (size, 1),
            (size * 2, 1),
        ]:
            got = result_of(store.read_body_range("M1", offset, length))
            assert got == body[offset : offset + length], (offset, length)
        # The relay streams a body in chunks: they add up to the body.
        chunks = []
        offset = 0
        while chunk := result_of(store.read_body_range("M1", offset, 64 * 1024 + 3)):
            chunks.append(chunk)
            offset += len(chunk)
        assert b"".join(chunks) == body

    def test_read_body_range_of_an_empty_body(self, store: Any) -> None:
        deliver(store, "M1", body=b"")
        assert result_of(store.read_body_range("M1", 0, 10)) == b""
        assert result_of(store.read_body_range("M1", 5, 10)) == b""

    def test_read_body_range_refuses_negative_numbers(self, store: Any) -> None:
        deliver(store, "M1")
        fails_with(store.read_body_range("M1", -1, 10), ValueError)
        fails_with(store.read_body_range("M1", 0, -1), ValueError)

    def test_read_heads(self, store: Any) -> None:
        # Past any write buffer and inline limit: a body that lives in its own file.
        large = HEADERS + bytes(range(251)) * (1024 * 1024 // 251)
        deliver(store, "M1")
        deliver(store, "M2", body=large, chunk_size=100_003)
        deliver(store, "M3", body=b"")
        heads = result_of(store.read_heads(["M3", "GONE", "M1", "M2"], 1000))
        # In the order asked, without the id that has no message.
        assert [h.message for h in heads] == [
            result_of(store.get_message(message_id)) for message_id in ("M3", "M1", "M2")
        ]
        assert [h.head for h in heads] == [b"", BODY[:1000], large[:1000]]
        assert result_of(store.read_heads([], 10)) == []
        assert [h.head for h in result_of(store.read_heads(["M2"], 10**9))] == [large]
        fails_with(store.read_heads(["M1"], -1), ValueError)

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

    # -- what is due, and in which order

    def interleaved(self, store: Any) -> None:
        """Four messages whose entries alternate between example.com and example.net."""
        deliver(store, "M1", (ALICE, CAROL), received_at=100.0)
        deliver(store, "M2", (DAVE,), received_at=200.0)
        deliver(store, "M3", (BOB,), received_at=300.0)
        deliver(store, "M4", (CAROL, ALICE), received_at=400.0)

    def due_ids(self, store: Any, domain: str, now: float, limit: int = 100) -> list[str]:
        return [e.id for e in result_of(store.due_entries(domain, now, limit))]

    def test_nothing_is_due_in_an_empty_queue(self, store: Any) -> None:
        assert result_of(store.due_domains(1e12)) == []
        assert result_of(store.due_entries("example.com", 1e12, 10)) == []

    def test_due_entries_are_in_arrival_order_per_domain(self, store: Any) -> None:
        self.interleaved(store)
        assert self.due_ids(store, "example.com", 1000.0) == ["M1.1", "M3.1", "M4.2"]
        assert self.due_ids(store, "example.net", 1000.0) == ["M1.2", "M2.1", "M4.1"]
        assert self.due_ids(store, "example.org", 1000.0) == []
        due = result_of(store.due_entries("example.com", 1000.0, 100))
        assert due == [entry(store, e.id) for e in due]  # whole entries, as get_entry has them

    def test_due_means_next_attempt_at_or_before_now(self, store: Any) -> None:
        self.interleaved(store)
        assert self.due_ids(store, "example.com", 99.9) == []
        assert self.due_ids(store, "example.com", 100.0) == ["M1.1"]
        assert self.due_ids(store, "example.com", 299.9) == ["M1.1"]
        assert self.due_ids(store, "example.com", 300.0) == ["M1.1", "M3.1"]
        assert result_of(store.due_domains(99.9)) == []
        assert result_of(store.due_domains(100.0)) == ["example.com", "example.net"]

    def test_due_order_is_arrival_not_next_attempt(self, store: Any) -> None:
        self.interleaved(store)
        deferred = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 busy", 400.0, next_attempt_at=500.0)
        result_of(store.record_result(deferred))
        assert self.due_ids(store, "example.com", 499.0) == ["M3.1", "M4.2"]
        # Due again: it goes first, where it arrived, not after the entries due before it.
        assert self.due_ids(store, "example.com", 500.0) == ["M1.1", "M3.1", "M4.2"]
        # The limit takes the oldest arrivals, not the longest due.
        assert self.due_ids(store, "example.com", 500.0, limit=1) == ["M1.1"]
        assert self.due_ids(store, "example.com", 500.0, limit=2) == ["M1.1", "M3.1"]

    def test_only_queued_entries_are_due(self, store: Any, set_entry_state: SetEntryState) -> None:
        self.interleaved(store)
        set_entry_state(store, "M1.1", HELD)
        set_entry_state(store, "M3.1", DELIVERED)
        set_entry_state(store, "M1.2", BOUNCED)
        set_entry_state(store, "M2.1", DELETED)
        assert self.due_ids(store, "example.com", 1000.0) == ["M4.2"]
        assert self.due_ids(store, "example.net", 1000.0) == ["M4.1"]
        set_entry_state(store, "M4.2", HELD)
        assert self.due_ids(store, "example.com", 1000.0) == []
        assert result_of(store.due_domains(1000.0)) == ["example.net"]

    def test_due_entries_respects_limit(self, store: Any) -> None:
        self.interleaved(store)
        assert self.due_ids(store, "example.com", 1000.0, limit=2) == ["M1.1", "M3.1"]
        assert self.due_ids(store, "example.com", 1000.0, limit=1) == ["M1.1"]
        assert self.due_ids(store, "example.com", 1000.0, limit=0) == []
        assert self.due_ids(store, "example.com", 1000.0, limit=3) == ["M1.1", "M3.1", "M4.2"]
        # The largest limit there is takes every due entry.
        every = self.due_ids(store, "example.com", 1000.0, limit=sys.maxsize)
        assert every == ["M1.1", "M3.1", "M4.2"]

    def test_due_entries_never_cut_a_message_in_two(self, store: Any) -> None:
        # Issue #11: a message whose entries fell into two relay batches reached the primary
        # twice.  The limit ends a batch at a message's end, however many entries that takes.
        ann = Delivery("ann@example.com", "example.com")
        deliver(store, "M1", (ALICE, CAROL, BOB, ann, ALICE), received_at=100.0)
        deliver(store, "M2", (BOB,), received_at=200.0)
        deliver(store, "M3", (ann, ALICE), received_at=300.0)
        whole_m1 = ["M1.1", "M1.3", "M1.4", "M1.5"]
        assert self.due_ids(store, "example.com", 1000.0, limit=1) == whole_m1
        assert self.due_ids(store, "example.com", 1000.0, limit=4) == whole_m1
        assert self.due_ids(store, "example.com", 1000.0, limit=5) == [*whole_m1, "M2.1"]
        assert self.due_ids(store, "example.com", 1000.0, limit=6) == [
            *whole_m1, "M2.1", "M3.1", "M3.2"
        ]  # fmt: skip
        # Only due entries of the message, and only the domain's.
        later = AttemptResult("M1.4", DEFERRED_OUTCOME, "451 later", 400.0, next_attempt_at=5e3)
        result_of(store.record_result(later))
        assert self.due_ids(store, "example.com", 1000.0, limit=2) == ["M1.1", "M1.3", "M1.5"]
        assert self.due_ids(store, "example.net", 1000.0, limit=1) == ["M1.2"]

    def test_a_held_delivery_is_committed_held_with_its_reason(self, store: Any) -> None:
        waiting = Delivery("Postmaster", "(postmaster)", held="set [server] postmaster")
        deliver(store, "M1", (ALICE, waiting), received_at=100.0)
        held = entry(store, "M1.2")
        assert (held.recipient, held.domain, held.state) == ("Postmaster", "(postmaster)", HELD)
        assert (held.last_error, held.attempts, held.outbound) == (
            "set [server] postmaster", 0, False
        )  # fmt: skip
        assert entry(store, "M1.1").state == QUEUED
        assert result_of(store.due_domains(1e12)) == ["example.com"]
        assert self.due_ids(store, "(postmaster)", 1e12) == []
        assert QueueStats("(postmaster)", 0, 1, 100.0) in result_of(store.queue_stats())

    def test_reroute_sends_a_waiting_entry_elsewhere(self, store: Any) -> None:
        waiting = Delivery("Postmaster", "(postmaster)", held="set [server] postmaster")
        deliver(store, "M1", (waiting, ALICE), received_at=100.0)
        before = entry(store, "M1.1")
        note = "routed to the operator"
        after = result_of(
            store.reroute("M1.1", "ops@elsewhere.example", "elsewhere.example", True, 500.0, note)
        )
        assert after == replace(
            before, recipient="ops@elsewhere.example", domain="elsewhere.example", outbound=True,
            state=QUEUED, next_attempt_at=500.0, last_error="routed to the operator",
        )  # fmt: skip
        assert entry(store, "M1.1") == after
        assert result_of(store.list_entries("(postmaster)")) == []
        assert self.due_ids(store, "elsewhere.example", 499.0) == []
        assert self.due_ids(store, "elsewhere.example", 500.0) == ["M1.1"]
        # A queued entry may be routed again (no note: the last error stays).
        again = result_of(store.reroute("M1.1", "ops@example.com", "example.com", False, 600.0, ""))
        assert (again.domain, again.outbound, again.last_error) == (
            "example.com", False, "routed to the operator"
        )  # fmt: skip
        assert self.due_ids(store, "example.com", 600.0) == ["M1.1", "M1.2"]  # arrival order
        result_of(store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 700.0)))
        fails_with(store.reroute("M1.1", "x@example.com", "example.com", False, 800.0, ""),
                   QueueStateError)  # fmt: skip
        fails_with(store.reroute("M9.1", "x@example.com", "example.com", False, 800.0, ""),
                   NoSuchEntry)  # fmt: skip

    def test_due_domains_are_sorted_and_only_those_with_due_mail(
        self, store: Any, set_entry_state: SetEntryState
    ) -> None:
        deliver(store, "M1", (CAROL,), received_at=100.0)  # example.net
        deliver(store, "M2", (ERIN,), received_at=200.0)  # a.example
        deliver(store, "M3", (ALICE,), received_at=300.0)  # example.com
        deliver(store, "M4", (DAVE,), received_at=400.0)  # example.net again
        assert result_of(store.due_domains(150.0)) == ["example.net"]
        assert result_of(store.due_domains(300.0)) == ["a.example", "example.com", "example.net"]
        set_entry_state(store, "M2.1", HELD)
        result_of(
            store.record_result(
                AttemptResult("M3.1", DEFERRED_OUTCOME, "421 later", 300.0, next_attempt_at=900.0)
            )
        )
        assert result_of(store.due_domains(500.0)) == ["example.net"]
        assert result_of(store.due_domains(900.0)) == ["example.com", "example.net"]

    # -- delivery results

    REPLY = "250 2.0.0 Ok: queued as 4Xyz"

    @pytest.mark.parametrize(
        ("outcome", "changes"),
        [
            (
                DELIVERED_OUTCOME,
                {"state": DELIVERED, "delivered_at": 2000.0, "delivery_reply": REPLY},
            ),
            (DEFERRED_OUTCOME, {"state": QUEUED, "last_error": REPLY, "next_attempt_at": 2600.0}),
            (BOUNCED_OUTCOME, {"state": BOUNCED, "last_error": REPLY}),
            (HELD_OUTCOME, {"state": HELD, "last_error": REPLY}),
        ],
        ids=list(OUTCOMES),
    )
    def test_record_result_sets_exactly_these_fields(
        self, store: Any, outcome: str, changes: dict[str, Any]
    ) -> None:
        deliver(store, "M1", (ALICE, BOB), received_at=1000.0)
        fresh = entry(store, "M1.1")
        # A first, deferred attempt, so that every field has a value the outcome may keep.
        first = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 4.3.2 busy", 1500.0, 1800.0)
        before = result_of(store.record_result(first))
        assert before == replace(
            fresh,
            attempts=1,
            last_attempt_at=1500.0,
            last_error="421 4.3.2 busy",
            next_attempt_at=1800.0,
        )
        other = entry(store, "M1.2")

        # next_attempt_at is given every time: only a deferral may use it.
        result = AttemptResult("M1.1", outcome, self.REPLY, at=2000.0, next_attempt_at=2600.0)
        after = result_of(store.record_result(result))
        assert after == replace(before, attempts=2, last_attempt_at=2000.0, **changes)
        assert entry(store, "M1.1") == after
        assert [e for e in result_of(store.list_entries()) if e.id == "M1.1"] == [after]
        assert entry(store, "M1.2") == other  # the message's other entry is untouched

    def test_first_attempt_from_a_fresh_entry(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,), received_at=1000.0)
        fresh = entry(store, "M1.1")
        assert (fresh.attempts, fresh.last_attempt_at, fresh.delivered_at) == (0, None, None)
        assert fresh.delivery_reply is None
        result = AttemptResult("M1.1", DELIVERED_OUTCOME, self.REPLY, at=1001.5)
        delivered = result_of(store.record_result(result))
        assert delivered == replace(
            fresh,
            state=DELIVERED,
            attempts=1,
            last_attempt_at=1001.5,
            delivered_at=1001.5,
            delivery_reply=self.REPLY,
        )

    def test_attempts_add_up(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        for n in range(1, 4):
            result = AttemptResult("M1.1", DEFERRED_OUTCOME, f"421 try {n}", 1000.0 + n, 2000.0 + n)
            assert result_of(store.record_result(result)).attempts == n
        final = entry(store, "M1.1")
        assert (final.attempts, final.last_error, final.next_attempt_at) == (3, "421 try 3", 2003.0)
        assert final.last_attempt_at == 1003.0

    @pytest.mark.parametrize("outcome", [DEFERRED_OUTCOME, BOUNCED_OUTCOME, HELD_OUTCOME])
    def test_an_admin_move_during_an_attempt_wins_unless_it_delivered(
        self, store: Any, outcome: str
    ) -> None:
        # The relay was sending M1 when an admin held it (and M2 when an admin deleted it): a
        # result that did not deliver counts the attempt and keeps the admin's state.
        deliver(store, "M1", (ALICE,))
        deliver(store, "M2", (ALICE,))
        result_of(store.change_state("M1.1", (QUEUED,), HELD, 1050.0, ""))
        result_of(store.change_state("M2.1", (QUEUED,), DELETED, 1050.0, ""))
        for entry_id, kept in (("M1.1", HELD), ("M2.1", DELETED)):
            result = AttemptResult(entry_id, outcome, "450 busy", 1100.0, next_attempt_at=1400.0)
            after = result_of(store.record_result(result))
            assert (after.state, after.attempts, after.last_error) == (kept, 1, "450 busy")
        assert self.due_ids(store, "example.com", 1e12) == []

    def test_a_delivery_during_an_admin_move_still_counts(self, store: Any) -> None:
        # The primary has the message: delivered applies even to an entry held meanwhile.
        deliver(store, "M1", (ALICE,))
        result_of(store.change_state("M1.1", (QUEUED,), HELD, 1050.0, ""))
        done = result_of(
            store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, self.REPLY, 1100.0))
        )
        assert (done.state, done.delivered_at) == (DELIVERED, 1100.0)

    @pytest.mark.parametrize("outcome", OUTCOMES)
    def test_delivered_is_final(self, store: Any, outcome: str) -> None:
        deliver(store, "M1", (ALICE,))
        done = result_of(
            store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, self.REPLY, 1100.0))
        )
        again = AttemptResult("M1.1", outcome, "421 again?", 1200.0, next_attempt_at=1300.0)
        fails_with(store.record_result(again), QueueStateError)
        for state in QUEUE_STATES:
            fails_with(
                store.change_state("M1.1", QUEUE_STATES, state, 1300.0, "x"), QueueStateError
            )
        assert entry(store, "M1.1") == done
        assert self.due_ids(store, "example.com", 1e12) == []

    def test_sync_results_keeps_every_result(self, store: Any) -> None:
        deliver(store, "M1", deliveries=(ALICE, BOB))
        delivered = AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1001.0)
        result_of(store.record_result(delivered))
        assert result_of(store.sync_results()) is None
        assert (entry(store, "M1.1").state, entry(store, "M1.2").state) == (DELIVERED, QUEUED)

    def test_record_result_for_an_unknown_entry(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        for entry_id in ("M1.2", "M2.1", "M1"):
            result = AttemptResult(entry_id, DELIVERED_OUTCOME, self.REPLY, 1100.0)
            fails_with(store.record_result(result), NoSuchEntry)
        assert entry(store, "M1.1").attempts == 0

    def test_record_result_refuses_an_unknown_outcome(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        before = entry(store, "M1.1")
        fails_with(store.record_result(AttemptResult("M1.1", "lost", "?", 1100.0)), QueueStateError)
        assert entry(store, "M1.1") == before

    # -- many delivery results at once (the relay's deferral of a whole queue)

    def test_record_results_records_each_as_record_result_would(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB), received_at=1000.0)
        deliver(store, "M2", (ALICE,), received_at=1001.0)
        deliver(store, "M3", (CAROL,), received_at=1002.0)
        result_of(store.record_result(AttemptResult("M2.1", DEFERRED_OUTCOME, "421", 1050.0, 1100)))
        before = {e.id: e for e in result_of(store.list_entries())}
        reason = "cannot connect to mail.example.com:25: Connection refused"
        results = [
            AttemptResult(entry_id, DEFERRED_OUTCOME, reason, 1200.0, next_attempt_at=1500.0 + n)
            for n, entry_id in enumerate(["M1.1", "M1.2", "M2.1"])
        ]
        changed = result_of(store.record_results(results))
        expected = [
            replace(before["M1.1"], attempts=1, last_attempt_at=1200.0, last_error=reason,
                    next_attempt_at=1500.0),
            replace(before["M1.2"], attempts=1, last_attempt_at=1200.0, last_error=reason,
                    next_attempt_at=1501.0),
            replace(before["M2.1"], attempts=2, last_attempt_at=1200.0, last_error=reason,
                    next_attempt_at=1502.0),
        ]  # fmt: skip
        assert changed == expected
        assert [entry(store, e.id) for e in expected] == expected
        assert entry(store, "M3.1") == before["M3.1"]  # not named: untouched
        # Every outcome follows record_result's rules, delivered included.
        done = result_of(
            store.record_results([AttemptResult("M3.1", DELIVERED_OUTCOME, self.REPLY, 1300.0)])
        )
        assert done == [
            replace(before["M3.1"], state=DELIVERED, attempts=1, last_attempt_at=1300.0,
                    delivered_at=1300.0, delivery_reply=self.REPLY),
        ]  # fmt: skip
        assert self.due_ids(store, "example.com", 1501.0) == ["M1.1", "M1.2"]

    def test_record_results_skips_unknown_and_delivered_entries(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB))
        result_of(store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, self.REPLY, 1100)))
        done = entry(store, "M1.1")
        results = [
            AttemptResult(entry_id, DEFERRED_OUTCOME, "421 down", 1200.0, next_attempt_at=1500.0)
            for entry_id in ("M9.1", "M1.1", "M1.2")
        ]
        changed = result_of(store.record_results(results))
        assert [(e.id, e.attempts, e.last_error) for e in changed] == [("M1.2", 1, "421 down")]
        assert entry(store, "M1.1") == done  # delivered is final
        assert entry(store, "M1.2") == changed[0]

    def test_record_results_with_an_unknown_outcome_changes_nothing(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB))
        before = result_of(store.list_entries())
        results = [
            AttemptResult("M1.1", DEFERRED_OUTCOME, "421", 1200.0, next_attempt_at=1500.0),
            AttemptResult("M1.2", "lost", "?", 1200.0),
        ]
        fails_with(store.record_results(results), QueueStateError)
        assert result_of(store.list_entries()) == before

    def test_record_results_applies_an_id_named_twice_in_order(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        first = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 one", 1200.0, next_attempt_at=1300.0)
        second = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 two", 1250.0, next_attempt_at=1400.0)
        changed = result_of(store.record_results([first, second]))
        assert [(e.attempts, e.last_error) for e in changed] == [(1, "421 one"), (2, "421 two")]
        assert entry(store, "M1.1") == changed[1]
        assert result_of(store.record_results([])) == []

    # -- a failed attempt on every due entry of a domain (its primary cannot be reached)

    def test_defer_due_records_a_deferral_on_every_due_entry_of_the_domain(
        self, store: Any, set_entry_state: SetEntryState
    ) -> None:
        deliver(store, "M1", (ALICE, BOB), received_at=1000.0)  # example.com, both
        deliver(store, "M2", (CAROL,), received_at=1001.0)  # example.net
        deliver(store, "M3", (ALICE,), received_at=1002.0)
        deliver(store, "M4", (ALICE,), received_at=1003.0)
        deliver(store, "M5", (ALICE,), received_at=1004.0)
        result_of(store.record_result(AttemptResult("M3.1", DEFERRED_OUTCOME, "421", 1050.0, 2000)))
        set_entry_state(store, "M4.1", HELD)
        result_of(store.record_result(AttemptResult("M5.1", DELIVERED_OUTCOME, self.REPLY, 1060)))
        before = {e.id: e for e in result_of(store.list_entries())}
        reason = "cannot connect to mail.example.com:25: Connection refused"
        assert result_of(store.defer_due("example.com", 1100.0, reason, 1100.0, 1400.0)) == 2
        for entry_id in ("M1.1", "M1.2"):
            assert entry(store, entry_id) == replace(
                before[entry_id], attempts=1, last_error=reason, last_attempt_at=1100.0,
                next_attempt_at=1400.0,
            )  # fmt: skip
        # Not due yet, held, delivered, or another domain's: untouched.
        for entry_id in ("M2.1", "M3.1", "M4.1", "M5.1"):
            assert entry(store, entry_id) == before[entry_id]
        assert self.due_ids(store, "example.com", 1399.0) == []
        assert self.due_ids(store, "example.com", 1400.0) == ["M1.1", "M1.2"]
        # Everything queued when forced (due = inf), the deferred one included.
        assert result_of(store.defer_due("example.com", math.inf, "again", 1500.0, 1800.0)) == 3
        assert [(entry(store, i).attempts, entry(store, i).last_error) for i in
                ("M1.1", "M1.2", "M3.1")] == [(2, "again"), (2, "again"), (2, "again")]  # fmt: skip
        assert result_of(store.defer_due("nothing.example", math.inf, "x", 1.0, 2.0)) == 0

    def test_defer_due_leaves_outbound_entries_to_their_backoff(self, store: Any) -> None:
        # Outbound mail for a domain goes by MX on its own schedule, never to a primary.
        deliver(store, "M1", (ZOE,))
        deliver(store, "M2", (Delivery("ann@elsewhere.example", "elsewhere.example"),))
        before = entry(store, "M1.1")
        assert result_of(store.defer_due("elsewhere.example", math.inf, "x", 1.0, 2.0)) == 1
        assert entry(store, "M1.1") == before
        assert entry(store, "M2.1").attempts == 1

    def test_record_results_lets_an_admin_move_win(self, store: Any) -> None:
        # As with record_result: an entry held while the relay tried it stays held; the attempt
        # still counts.
        deliver(store, "M1", (ALICE,))
        result_of(store.change_state("M1.1", (QUEUED,), HELD, 1050.0, ""))
        deferred = AttemptResult("M1.1", DEFERRED_OUTCOME, "421", 1100.0, next_attempt_at=1400.0)
        (held,) = result_of(store.record_results([deferred]))
        assert (held.state, held.attempts, held.last_error) == (HELD, 1, "421")
        assert entry(store, "M1.1") == held

    # -- an admin's moves

    @pytest.mark.parametrize(
        ("start", "from_states", "to_state", "note", "changes"),
        [
            ("queued", (QUEUED,), HELD, "held by admin", {"last_error": "held by admin"}),
            ("queued", (QUEUED, HELD), DELETED, "", {}),
            ("held", (HELD,), QUEUED, "", {"next_attempt_at": 5000.0}),
            (
                "held",
                (HELD,),
                QUEUED,
                "released",
                {"next_attempt_at": 5000.0, "last_error": "released"},
            ),
            (
                "held",
                (QUEUED, HELD),
                BOUNCED,
                "bounced by admin",
                {"last_error": "bounced by admin"},
            ),
            (
                "bounced",
                (BOUNCED,),
                QUEUED,
                "retry",
                {"next_attempt_at": 5000.0, "last_error": "retry"},
            ),
            ("queued", (QUEUED,), QUEUED, "", {"next_attempt_at": 5000.0}),  # "retry now"
        ],
        ids=["hold", "delete", "release", "release-with-note", "bounce", "requeue", "retry-now"],
    )
    def test_change_state_legal_moves(
        self,
        store: Any,
        start: str,
        from_states: tuple[str, ...],
        to_state: str,
        note: str,
        changes: dict[str, Any],
    ) -> None:
        deliver(store, "M1", (ALICE, BOB), received_at=1000.0)
        first = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 busy", 1500.0, next_attempt_at=9000.0)
        result_of(store.record_result(first))
        if start != QUEUED:
            outcome = {HELD: HELD_OUTCOME, BOUNCED: BOUNCED_OUTCOME}[start]
            result_of(store.record_result(AttemptResult("M1.1", outcome, "550 no", 1600.0)))
        before = entry(store, "M1.1")
        other = entry(store, "M1.2")
        assert before.state == start

        after = result_of(store.change_state("M1.1", from_states, to_state, 5000.0, note))
        assert after == replace(before, state=to_state, **changes)
        assert entry(store, "M1.1") == after
        assert entry(store, "M1.2") == other
        due = self.due_ids(store, "example.com", 5000.0)
        assert ("M1.1" in due) == (to_state == QUEUED)  # released: due at once

    @pytest.mark.parametrize(
        ("from_states", "to_state"),
        [
            ((HELD,), QUEUED),  # release an entry that is not held
            ((HELD, BOUNCED), DELETED),
            ((), HELD),
            ((QUEUED,), "lost"),  # not a state
            ((QUEUED,), DELIVERED),  # only a delivery attempt delivers
        ],
        ids=["release-queued", "delete-wrong-state", "no-from-states", "unknown-state", "deliver"],
    )
    def test_change_state_illegal_moves(
        self, store: Any, from_states: tuple[str, ...], to_state: str
    ) -> None:
        deliver(store, "M1", (ALICE,))
        before = entry(store, "M1.1")
        fails_with(store.change_state("M1.1", from_states, to_state, 5000.0, "x"), QueueStateError)
        assert entry(store, "M1.1") == before

    def test_change_state_of_an_unknown_entry(self, store: Any) -> None:
        deliver(store, "M1", (ALICE,))
        fails_with(store.change_state("M1.2", (QUEUED,), HELD, 5000.0, ""), NoSuchEntry)
        fails_with(store.change_state("M9.1", (QUEUED,), HELD, 5000.0, ""), NoSuchEntry)

    def test_change_states_moves_each_as_change_state_would_in_one_step(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB, CAROL), received_at=1000.0)
        deliver(store, "M2", (DAVE,), received_at=1001.0)
        result_of(store.change_state("M1.2", (QUEUED,), HELD, 1100.0, ""))
        before = {e.id: e for e in result_of(store.list_entries())}
        # Given out of order, with an unknown id, one not in from_states and one named twice.
        ids = ["M2.1", "M9.1", "M1.1", "M1.2", "M2.1", "M1.3"]
        changed = result_of(store.change_states(ids, (QUEUED,), HELD, 5000.0, "on hold"))
        assert [e.id for e in changed] == ["M2.1", "M1.1", "M1.3"]
        for after in changed:
            assert after == replace(before[after.id], state=HELD, last_error="on hold")
            assert entry(store, after.id) == after
        assert entry(store, "M1.2") == before["M1.2"]  # already held: left alone
        # And back: released entries are due at once, like change_state's.
        released = result_of(store.change_states(["M1.1", "M1.2"], (HELD,), QUEUED, 6000.0, ""))
        assert [(e.id, e.state, e.next_attempt_at) for e in released] == [
            ("M1.1", QUEUED, 6000.0),
            ("M1.2", QUEUED, 6000.0),
        ]
        assert {"M1.1", "M1.2"} <= set(self.due_ids(store, "example.com", 6000.0))

    def test_change_states_skips_delivered_entries(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, BOB))
        result_of(store.record_result(AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1500.0)))
        delivered = entry(store, "M1.1")
        changed = result_of(store.change_states(["M1.1", "M1.2"], QUEUE_STATES, DELETED, 2.0, ""))
        assert [e.id for e in changed] == ["M1.2"]
        assert entry(store, "M1.1") == delivered

    @pytest.mark.parametrize("to_state", ["lost", DELIVERED])
    def test_change_states_to_a_state_no_admin_may_set_changes_nothing(
        self, store: Any, to_state: str
    ) -> None:
        deliver(store, "M1", (ALICE,))
        before = entry(store, "M1.1")
        fails_with(store.change_states(["M1.1"], (QUEUED,), to_state, 5000.0, ""), QueueStateError)
        assert entry(store, "M1.1") == before
        fails_with(store.change_states([], (QUEUED,), to_state, 5000.0, ""), QueueStateError)

    def test_change_states_of_nothing(self, store: Any) -> None:
        assert result_of(store.change_states([], (QUEUED,), HELD, 5000.0, "")) == []
        assert result_of(store.change_states(["M9.1"], (QUEUED,), HELD, 5000.0, "")) == []

    # -- the last delivery, for `strata domain show`

    def test_last_delivered_at(self, store: Any) -> None:
        assert result_of(store.last_delivered_at("example.com")) is None
        deliver(store, "M1", (ALICE, BOB, CAROL))
        deliver(store, "M2", (ALICE,))
        assert result_of(store.last_delivered_at("example.com")) is None  # queued only
        for entry_id, at in (("M2.1", 3000.0), ("M1.1", 2000.0), ("M1.3", 4000.0)):
            result_of(store.record_result(AttemptResult(entry_id, DELIVERED_OUTCOME, "250", at)))
        # Bounced and deferred attempts are not deliveries.
        result_of(store.record_result(AttemptResult("M1.2", BOUNCED_OUTCOME, "550", 5000.0)))
        assert result_of(store.last_delivered_at("example.com")) == 3000.0  # newest, not last
        assert result_of(store.last_delivered_at("example.net")) == 4000.0
        assert result_of(store.last_delivered_at("a.example")) is None

    # -- outbound entries and delay notices (submission, #5)

    def test_outbound_round_trips(self, store: Any) -> None:
        deliver(store, "M1", (ALICE, ZOE), received_at=1000.0)
        deliver(store, "M2", (YURI,), received_at=2000.0)
        by_id = {e.id: e for e in result_of(store.list_entries())}
        assert {i: e.outbound for i, e in by_id.items()} == {
            "M1.1": False,
            "M1.2": True,
            "M2.1": True,
        }
        assert {e.delay_notified_at for e in by_id.values()} == {None}
        zoe = by_id["M1.2"]
        assert (zoe.domain, zoe.recipient, zoe.state) == (
            "elsewhere.example",
            ZOE.recipient,
            QUEUED,
        )
        assert entry(store, "M1.2") == zoe
        assert result_of(store.entries_for_message("M1")) == [by_id["M1.1"], zoe]
        assert result_of(store.list_entries("elsewhere.example")) == [zoe, by_id["M2.1"]]
        assert result_of(store.due_entries("elsewhere.example", 2000.0, 10)) == [zoe, by_id["M2.1"]]
        assert result_of(store.due_entries("example.com", 2000.0, 10)) == [by_id["M1.1"]]

    def test_delay_notified_is_set_once_and_kept(
        self, store: Any, set_entry_state: SetEntryState
    ) -> None:
        deliver(store, "M1", (ZOE, YURI, ALICE), received_at=1000.0)
        before = {e.id: e for e in result_of(store.list_entries())}
        # Unknown ids are ignored; an id given twice is set once.
        assert result_of(store.mark_delay_notified(["M1.1", "M9.1", "M1.1", "M1"], 5000.0)) is None
        assert entry(store, "M1.1") == replace(before["M1.1"], delay_notified_at=5000.0)
        assert entry(store, "M1.2") == before["M1.2"]
        assert entry(store, "M1.3") == before["M1.3"]
        # A second notice run keeps the first time and sets only the entries still without one,
        # whatever their state.
        set_entry_state(store, "M1.3", HELD)
        result_of(store.mark_delay_notified(("M1.1", "M1.2", "M1.3"), 9000.0))
        after = {e.id: e.delay_notified_at for e in result_of(store.list_entries())}
        assert after == {"M1.1": 5000.0, "M1.2": 9000.0, "M1.3": 9000.0}
        assert [e.delay_notified_at for e in result_of(store.due_entries(ZOE.domain, 1e12, 9))] == [
            5000.0,
            9000.0,
        ]
        result_of(store.mark_delay_notified([], 9500.0))  # nothing to do
        assert {e.id: e.delay_notified_at for e in result_of(store.list_entries())} == after

    def test_outbound_and_delay_notice_survive_results_and_moves(self, store: Any) -> None:
        deliver(store, "M1", (ZOE, YURI), received_at=1000.0)
        result_of(store.mark_delay_notified(["M1.1"], 1500.0))
        kept = {"outbound": True, "delay_notified_at": 1500.0}

        def fields(found: QueueEntry) -> dict[str, Any]:
            return {"outbound": found.outbound, "delay_notified_at": found.delay_notified_at}

        deferred = AttemptResult("M1.1", DEFERRED_OUTCOME, "421 later", 1600.0, 2000.0)
        assert fields(result_of(store.record_result(deferred))) == kept
        assert fields(entry(store, "M1.1")) == kept
        assert fields(result_of(store.change_state("M1.1", (QUEUED,), HELD, 1700.0, "x"))) == kept
        assert fields(result_of(store.change_state("M1.1", (HELD,), QUEUED, 1800.0, ""))) == kept
        delivered = AttemptResult("M1.1", DELIVERED_OUTCOME, "250 ok", 1900.0)
        assert fields(result_of(store.record_result(delivered))) == kept
        assert fields(entry(store, "M1.1")) == kept
        # A delivered entry may still be marked (a notice that was sent just before it went).
        result_of(store.mark_delay_notified(["M1.1"], 9000.0))
        assert fields(entry(store, "M1.1")) == kept
        # The other recipient: outbound, never notified, bounced.
        bounced = AttemptResult("M1.2", BOUNCED_OUTCOME, "550 no", 1900.0)
        assert fields(result_of(store.record_result(bounced))) == {
            "outbound": True,
            "delay_notified_at": None,
        }

    def test_received_since(self, store: Any, set_entry_state: SetEntryState) -> None:
        assert result_of(store.received_since("example.com", 0.0)) == (0, 0)
        deliver(store, "M1", (ALICE, BOB), received_at=100.0)
        deliver(store, "M2", (ALICE, CAROL), received_at=200.0)
        deliver(store, "M3", (BOB,), received_at=300.0)
        # At or after ``since``; entries of other domains do not count.
        assert result_of(store.received_since("example.com", 200.0)) == (2, 0)
        assert result_of(store.received_since("example.com", 100.0)) == (4, 0)
        assert result_of(store.received_since("example.com", 300.5)) == (0, 0)
        assert result_of(store.received_since("example.net", 150.0)) == (1, 0)
        assert result_of(store.received_since("a.example", 0.0)) == (0, 0)
        # Delivered now: only those received since then count as delivered.
        for entry_id in ("M1.1", "M2.1"):
            result_of(store.record_result(AttemptResult(entry_id, DELIVERED_OUTCOME, "250", 400.0)))
        assert result_of(store.received_since("example.com", 200.0)) == (2, 1)
        assert result_of(store.received_since("example.com", 0.0)) == (4, 2)
        # Every state counts as received; only DELIVERED as delivered.
        set_entry_state(store, "M3.1", BOUNCED)
        assert result_of(store.received_since("example.com", 200.0)) == (2, 1)
        result_of(store.change_state("M1.2", (QUEUED,), HELD, 500.0, ""))
        assert result_of(store.received_since("example.com", 100.0)) == (4, 2)


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

    def test_record_events_records_each_as_record_event_would(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(1000)
        first = result_of(store.record_event("k", "before"))
        clock.advance(5)
        events = result_of(
            store.record_events(
                [
                    NewEvent("queue.held", "M1.1 held", "a.example", {"entry": "M1.1"}),
                    NewEvent("queue.held", "M1.2 held", "b.example"),
                    NewEvent("startup", "no domain"),
                ]
            )
        )
        assert [(e.at, e.kind, e.message, e.domain, e.data) for e in events] == [
            (1005.0, "queue.held", "M1.1 held", "a.example", {"entry": "M1.1"}),
            (1005.0, "queue.held", "M1.2 held", "b.example", {}),
            (1005.0, "startup", "no domain", None, {}),
        ]
        ids = [e.id for e in events]
        assert ids == sorted(ids) and len(set(ids)) == 3 and ids[0] > first.id
        assert result_of(store.list_events()) == [first, *events]
        assert result_of(store.record_events([])) == []

    def test_record_events_with_data_that_is_not_json_records_none(self, store: Any) -> None:
        bad = [NewEvent("k", "fine"), NewEvent("k", "m", data={"when": object()})]
        fails_with(store.record_events(bad), StorageError)
        assert result_of(store.list_events()) == []


class MonitorStoreSuite:
    """L{IMonitorStore}: one status per primary (upserted), and outage events opened and closed."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IMonitorStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.get_status("example.com")) is None
        assert result_of(store.list_statuses()) == []
        assert result_of(store.list_outages()) == []
        assert result_of(store.close_outage("example.com", 100.0)) is None

    def test_save_status_round_trips_every_field(self, store: Any) -> None:
        status = DomainStatus(
            domain="example.com",
            health="down",
            since=1000.5,
            consecutive_failures=3,
            consecutive_successes=0,
            last_probe_at=1060.25,
            last_probe_error="connection refused",
            last_delivery_at=900.0,
            failing_since=940.75,
        )
        assert result_of(store.save_status(status)) == status
        assert result_of(store.get_status("example.com")) == status
        assert result_of(store.list_statuses()) == [status]
        assert result_of(store.get_status("example.net")) is None

    def test_a_run_of_failures_keeps_its_start_across_saves(self, store: Any) -> None:
        # What a restart during a run of failures needs: the run's start, read back as saved.
        failing = DomainStatus("example.com", "up", 10.0, 2, 0, 70.0, "refused", None, 62.5)
        result_of(store.save_status(failing))
        [loaded] = result_of(store.list_statuses())
        assert loaded == failing and loaded.failing_since == 62.5
        answered = replace(failing, consecutive_failures=0, consecutive_successes=1,
                           last_probe_error=None, failing_since=None)  # fmt: skip
        result_of(store.save_status(answered))
        assert result_of(store.get_status("example.com")) == answered

    def test_save_status_defaults(self, store: Any) -> None:
        status = DomainStatus("example.com")
        result_of(store.save_status(status))
        assert result_of(store.get_status("example.com")) == status

    def test_save_status_replaces(self, store: Any) -> None:
        result_of(store.save_status(DomainStatus("example.com", "down", 10.0, 3, 0, 10.0, "no")))
        up = DomainStatus("example.com", "up", 20.0, 0, 2, 20.0, None, None)
        assert result_of(store.save_status(up)) == up
        assert result_of(store.get_status("example.com")) == up
        assert result_of(store.list_statuses()) == [up]

    def test_list_statuses_is_sorted_by_domain(self, store: Any) -> None:
        for name in ("b.example", "xn--bcher-kva.example", "a.example"):
            result_of(store.save_status(DomainStatus(name)))
        assert [s.domain for s in result_of(store.list_statuses())] == [
            "a.example",
            "b.example",
            "xn--bcher-kva.example",
        ]

    def test_open_and_close_an_outage(self, store: Any) -> None:
        opened = result_of(store.open_outage("example.com", 1000.0, "3 probes failed"))
        assert isinstance(opened.id, int)
        assert opened == Outage(opened.id, "example.com", 1000.0, "3 probes failed", None)
        assert result_of(store.list_outages()) == [opened]

        closed = result_of(store.close_outage("example.com", 1600.0))
        assert closed == replace(opened, ended_at=1600.0)
        assert closed.duration == 600.0
        assert result_of(store.list_outages()) == [closed]
        assert result_of(store.close_outage("example.com", 1700.0)) is None
        assert result_of(store.list_outages()) == [closed]

    def test_open_returns_the_outage_already_open(self, store: Any) -> None:
        opened = result_of(store.open_outage("example.com", 1000.0, "first"))
        assert result_of(store.open_outage("example.com", 1100.0, "second")) == opened
        other = result_of(store.open_outage("example.net", 1100.0, "other"))
        assert other.id != opened.id
        assert result_of(store.list_outages()) == [opened, other]

    def test_closing_one_domain_leaves_the_others_open(self, store: Any) -> None:
        com = result_of(store.open_outage("example.com", 1000.0, "down"))
        net = result_of(store.open_outage("example.net", 1000.0, "down"))
        assert result_of(store.close_outage("example.net", 1200.0)) == replace(net, ended_at=1200.0)
        assert result_of(store.list_outages("example.com")) == [com]
        assert result_of(store.open_outage("example.com", 1300.0, "again")) == com

    def test_a_closed_outage_is_history_and_a_new_one_opens(self, store: Any) -> None:
        first = result_of(store.open_outage("example.com", 1000.0, "first"))
        first = result_of(store.close_outage("example.com", 1100.0))
        second = result_of(store.open_outage("example.com", 2000.0, "second"))
        assert second.id > first.id
        assert second == Outage(second.id, "example.com", 2000.0, "second")
        assert result_of(store.list_outages("example.com")) == [first, second]
        assert result_of(store.close_outage("example.com", 2100.0)) == replace(
            second, ended_at=2100.0
        )

    def test_list_outages_newest_n_oldest_first_by_domain(self, store: Any) -> None:
        for n in range(4):
            for domain in ("a.example", "b.example"):
                result_of(store.open_outage(domain, 100.0 * n, f"{domain} {n}"))
                result_of(store.close_outage(domain, 100.0 * n + 50))
        result_of(store.open_outage("a.example", 1000.0, "a.example open"))
        reasons = [o.reason for o in result_of(store.list_outages(limit=3))]
        assert reasons == ["a.example 3", "b.example 3", "a.example open"]
        reasons = [o.reason for o in result_of(store.list_outages("a.example", limit=2))]
        assert reasons == ["a.example 3", "a.example open"]
        assert len(result_of(store.list_outages("b.example"))) == 4
        assert len(result_of(store.list_outages())) == 9
        assert result_of(store.list_outages(limit=0)) == []
        assert result_of(store.list_outages("c.example")) == []

    def test_default_limit_is_100(self, store: Any) -> None:
        for n in range(105):
            result_of(store.open_outage("example.com", float(n), f"o{n}"))
            result_of(store.close_outage("example.com", n + 0.5))
        outages = result_of(store.list_outages())
        assert len(outages) == 100
        assert outages[0].reason == "o5" and outages[-1].reason == "o104"


class ControlStoreSuite:
    """L{IControlStore}: requests from the CLI to the running server, in id order."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IControlStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.requests_after(0)) == []
        assert result_of(store.last_request_id()) == 0

    def test_requests_round_trip_in_id_order(self, store: Any) -> None:
        first = result_of(store.request("flush", None, 1000.0))
        second = result_of(store.request("flush", "example.com", 1000.5))
        third = result_of(store.request("something-new", "xn--bcher-kva.example", 999.0))
        assert 0 < first < second < third  # ids grow whatever the times say
        assert result_of(store.requests_after(0)) == [
            ControlRequest(first, "flush", None, 1000.0),
            ControlRequest(second, "flush", "example.com", 1000.5),
            ControlRequest(third, "something-new", "xn--bcher-kva.example", 999.0),
        ]
        assert result_of(store.last_request_id()) == third

    def test_requests_after_an_id(self, store: Any) -> None:
        ids = [result_of(store.request("flush", None, float(n))) for n in range(5)]
        assert [r.id for r in result_of(store.requests_after(ids[2]))] == ids[3:]
        assert result_of(store.requests_after(ids[-1])) == []
        assert result_of(store.requests_after(ids[-1] + 100)) == []
        assert [r.at for r in result_of(store.requests_after(-1))] == [0.0, 1.0, 2.0, 3.0, 4.0]


# -- IMailboxStore ------------------------------------------------------------------------------

ALICE_USER = "alice@example.com"
BOB_USER = "bob@example.com"
DEFAULT_NAMES = ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


class MailboxStoreSuite:
    """
    L{IMailboxStore}: users' mailboxes, their messages, flags, CONDSTORE modseqs, COPY/MOVE with
    COPYUID pairs, expunge, retention, and which bodies nobody needs.  The store must provide
    L{IMessageStore} and L{IQueueStore} as well: mailbox messages refer to committed messages.
    """

    def stored(self, store: Any, message_id: str, *deliveries: Delivery, body: bytes = BODY) -> str:
        """Commit a message (by default as APPEND does: no queue entries) and return its id."""
        deliver(store, message_id, deliveries, body=body)
        return message_id

    def add(
        self,
        store: Any,
        message_id: str,
        mailbox: str = "INBOX",
        user: str = ALICE_USER,
        flags: tuple[str, ...] = (),
        internal_date: float = 5000.0,
    ) -> MailMessage:
        """Commit a message if it is not stored yet, then add it to ``user``'s ``mailbox``."""
        if result_of(store.get_message(message_id)) is None:
            self.stored(store, message_id)
        added = result_of(store.add_message(user, mailbox, message_id, internal_date, flags))
        assert isinstance(added, MailMessage)
        return added

    def box(self, store: Any, name: str, user: str = ALICE_USER) -> MailboxInfo:
        found = result_of(store.get_mailbox(user, name))
        assert isinstance(found, MailboxInfo), f"no mailbox {name}"
        return found

    def uids(self, store: Any, name: str, user: str = ALICE_USER) -> list[int]:
        return [m.uid for m in result_of(store.list_messages(user, name))]

    def names(self, store: Any, user: str = ALICE_USER) -> list[str]:
        return [b.name for b in result_of(store.list_mailboxes(user))]

    # -- users and the default mailboxes

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IMailboxStore, store)
        assert IMessageStore.providedBy(store)
        assert IQueueStore.providedBy(store)

    def test_a_new_user_has_no_mailboxes(self, store: Any) -> None:
        assert result_of(store.list_mailboxes(ALICE_USER)) == []
        assert result_of(store.get_mailbox(ALICE_USER, "INBOX")) is None
        fails_with(store.mailbox_status(ALICE_USER, "INBOX"), NoSuchMailbox)

    def test_ensure_user_creates_the_special_use_mailboxes_subscribed(self, store: Any) -> None:
        boxes = result_of(store.ensure_user(ALICE_USER))
        assert [b.name for b in boxes] == DEFAULT_NAMES
        assert {b.name: b.special_use for b in boxes} == {
            "INBOX": None,
            "Sent": "\\Sent",
            "Drafts": "\\Drafts",
            "Trash": "\\Trash",
            "Junk": "\\Junk",
        }
        assert all(b.subscribed and b.uidnext == 1 and b.highest_modseq == 1 for b in boxes)
        assert all(b.first_recent == 1 for b in boxes)
        assert result_of(store.list_subscriptions(ALICE_USER)) == DEFAULT_NAMES
        assert len({b.uidvalidity for b in boxes}) == 5
        assert all(0 < b.uidvalidity < 2**32 for b in boxes)
        assert result_of(store.list_mailboxes(ALICE_USER)) == boxes

    def test_ensure_user_is_idempotent(self, store: Any) -> None:
        first = result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        second = result_of(store.ensure_user(ALICE_USER))
        assert [b.uidvalidity for b in second] == [b.uidvalidity for b in first]
        assert self.uids(store, "INBOX") == [1]

    def test_ensure_user_recreates_only_what_is_missing(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.rename_mailbox(ALICE_USER, "Sent", "Sent Items"))
        result_of(store.delete_mailbox(ALICE_USER, "Junk"))
        boxes = result_of(store.ensure_user(ALICE_USER))
        # Sent Items still has \Sent, so no new Sent; Junk is gone, so it comes back.
        assert [b.name for b in boxes] == ["Drafts", "INBOX", "Junk", "Sent Items", "Trash"]
        assert self.box(store, "Sent Items").special_use == "\\Sent"
        assert self.box(store, "Junk").subscribed  # (its name never stopped being subscribed)

    def test_users_are_canonical_addresses(self, store: Any) -> None:
        result_of(store.ensure_user("Alice@EXAMPLE.com"))
        assert self.names(store, "alice@example.com") == DEFAULT_NAMES
        result_of(store.ensure_user("bob@Bücher.example"))
        assert self.names(store, "BOB@xn--bcher-kva.example") == DEFAULT_NAMES

    @pytest.mark.parametrize("user", ["", "alice", "@example.com", "alice@", "a b@example.com"])
    def test_invalid_users_are_refused(self, store: Any, user: str) -> None:
        fails_with(store.ensure_user(user), InvalidUser)
        fails_with(store.list_mailboxes(user), InvalidUser)
        fails_with(store.create_mailbox(user, "x"), InvalidUser)

    def test_uidvalidity_follows_the_clock_and_always_grows(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(1_700_000_000)
        a = result_of(store.create_mailbox(ALICE_USER, "a"))
        b = result_of(store.create_mailbox(ALICE_USER, "b"))
        assert a.uidvalidity == 1_700_000_000
        assert b.uidvalidity == 1_700_000_001  # same second: still a new value

    # -- names

    def test_inbox_is_case_insensitive(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        assert self.box(store, "inbox") == self.box(store, "INBOX")
        fails_with(store.create_mailbox(ALICE_USER, "Inbox"), MailboxExists)
        created = result_of(store.create_mailbox(ALICE_USER, "inBox/Lists"))
        assert created.name == "INBOX/Lists"
        # Other names keep their case, and differ by it.
        result_of(store.create_mailbox(ALICE_USER, "work"))
        result_of(store.create_mailbox(ALICE_USER, "Work"))
        assert {"work", "Work"} <= set(self.names(store))

    def test_names_are_unicode(self, store: Any) -> None:
        created = result_of(store.create_mailbox(ALICE_USER, "Entwürfe/日本語"))
        assert created.name == "Entwürfe/日本語"
        assert self.box(store, "Entwürfe/日本語") == created

    @pytest.mark.parametrize(
        "name",
        ["", "/", "/a", "a/", "a//b", "a*", "a%b", "a\x00b", "a\rb", "x" * 1001]
        # They look like paths (a parent directory, a user's home): refused, as Dovecot does.
        + [".", "..", "a/../b", "../a", "a/..", "a/.", "./a", "a/./b", "INBOX/.."]
        + ["~", "~/x", "~root", "~alice@example.com/INBOX"],
    )
    def test_invalid_names_are_refused(self, store: Any, name: str) -> None:
        result_of(store.ensure_user(ALICE_USER))
        fails_with(store.create_mailbox(ALICE_USER, name), InvalidMailboxName)
        fails_with(store.get_mailbox(ALICE_USER, name), InvalidMailboxName)
        fails_with(store.rename_mailbox(ALICE_USER, "Junk", name), InvalidMailboxName)
        fails_with(store.subscribe(ALICE_USER, name), InvalidMailboxName)
        fails_with(store.unsubscribe(ALICE_USER, name), InvalidMailboxName)
        fails_with(store.claim_recent(ALICE_USER, name), InvalidMailboxName)
        assert self.names(store) == DEFAULT_NAMES

    @pytest.mark.parametrize("name", [".hidden", "a/.b", "a..b", "...", "a/~b", "x~", "a/b."])
    def test_names_that_only_contain_dots_or_tildes_are_fine(self, store: Any, name: str) -> None:
        assert result_of(store.create_mailbox(ALICE_USER, name)).name == name
        assert self.box(store, name).name == name

    # -- create, delete, rename, subscribe

    def test_create_makes_missing_superiors(self, store: Any) -> None:
        created = result_of(store.create_mailbox(ALICE_USER, "a/b/c"))
        assert (created.name, created.uidnext, created.highest_modseq) == ("a/b/c", 1, 1)
        assert self.names(store) == ["a", "a/b", "a/b/c"]
        assert not any(b.subscribed for b in result_of(store.list_mailboxes(ALICE_USER)))
        fails_with(store.create_mailbox(ALICE_USER, "a/b"), MailboxExists)
        result_of(store.create_mailbox(ALICE_USER, "a/d"))
        assert self.names(store) == ["a", "a/b", "a/b/c", "a/d"]

    def test_create_with_a_special_use(self, store: Any) -> None:
        created = result_of(store.create_mailbox(ALICE_USER, "Archive", "\\archive"))
        assert created.special_use == "\\Archive"
        fails_with(store.create_mailbox(ALICE_USER, "X", "\\Bogus"), InvalidMailboxName)
        assert self.names(store) == ["Archive"]

    def test_delete_removes_messages_and_returns_their_ids(self, store: Any) -> None:
        result_of(store.create_mailbox(ALICE_USER, "Work"))
        self.add(store, "M1", "Work")
        self.add(store, "M2", "Work")
        result_of(store.copy_messages(ALICE_USER, "Work", [1], "Work"))
        assert result_of(store.delete_mailbox(ALICE_USER, "Work")) == ["M1", "M2"]
        assert result_of(store.get_mailbox(ALICE_USER, "Work")) is None
        fails_with(store.list_messages(ALICE_USER, "Work"), NoSuchMailbox)
        # The bodies stay: deleting a body is the caller's business.
        assert result_of(store.get_message("M1")) is not None

    def test_a_recreated_mailbox_gets_a_new_uidvalidity(self, store: Any) -> None:
        old = result_of(store.create_mailbox(ALICE_USER, "Work"))
        self.add(store, "M1", "Work")
        result_of(store.delete_mailbox(ALICE_USER, "Work"))
        new = result_of(store.create_mailbox(ALICE_USER, "Work"))
        assert new.uidvalidity > old.uidvalidity
        assert (new.uidnext, new.highest_modseq) == (1, 1)

    def test_delete_refusals(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        fails_with(store.delete_mailbox(ALICE_USER, "inbox"), MailboxRefused)
        fails_with(store.delete_mailbox(ALICE_USER, "Nope"), NoSuchMailbox)
        result_of(store.create_mailbox(ALICE_USER, "a/b"))
        error = fails_with(store.delete_mailbox(ALICE_USER, "a"), MailboxHasChildren)
        assert isinstance(error, MailboxError) and error.imap_code == "INUSE"
        # Inferiors first, then the parent.
        result_of(store.delete_mailbox(ALICE_USER, "a/b"))
        result_of(store.delete_mailbox(ALICE_USER, "a"))
        assert self.names(store) == DEFAULT_NAMES

    def test_a_name_that_only_shares_a_prefix_is_not_a_child(self, store: Any) -> None:
        result_of(store.create_mailbox(ALICE_USER, "a"))
        result_of(store.create_mailbox(ALICE_USER, "ab"))
        result_of(store.delete_mailbox(ALICE_USER, "a"))
        assert self.names(store) == ["ab"]

    def test_rename_moves_inferiors_and_keeps_uids(self, store: Any) -> None:
        result_of(store.create_mailbox(ALICE_USER, "a/b"))
        result_of(store.create_mailbox(ALICE_USER, "ab"))
        result_of(store.subscribe(ALICE_USER, "a/b"))
        self.add(store, "M1", "a/b", flags=("\\Seen",))
        before = self.box(store, "a/b")
        messages = result_of(store.list_messages(ALICE_USER, "a/b"))
        renamed = result_of(store.rename_mailbox(ALICE_USER, "a", "x/y"))
        assert renamed.name == "x/y"
        assert self.names(store) == ["ab", "x", "x/y", "x/y/b"]
        after = self.box(store, "x/y/b")
        assert after == replace(before, name="x/y/b")  # UIDVALIDITY, subscription kept
        assert result_of(store.list_messages(ALICE_USER, "x/y/b")) == messages
        assert not self.box(store, "x").subscribed

    def test_rename_refusals(self, store: Any) -> None:
        result_of(store.create_mailbox(ALICE_USER, "a"))
        result_of(store.create_mailbox(ALICE_USER, "b"))
        fails_with(store.rename_mailbox(ALICE_USER, "a", "b"), MailboxExists)
        fails_with(store.rename_mailbox(ALICE_USER, "a", "a/c"), MailboxRefused)
        error = fails_with(store.rename_mailbox(ALICE_USER, "nope", "c"), NoSuchMailbox)
        assert isinstance(error, NoSuchMailbox) and error.name == "nope"
        fails_with(store.rename_mailbox(ALICE_USER, "a", "c*"), InvalidMailboxName)
        assert self.names(store) == ["a", "b"]

    def test_renaming_inbox_moves_its_messages_and_leaves_it_empty(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.create_mailbox(ALICE_USER, "INBOX/Lists"))
        self.add(store, "M1", flags=("\\Seen",), internal_date=100.0)
        self.add(store, "M2", internal_date=200.0)
        result_of(store.expunge(ALICE_USER, "INBOX", None))  # nothing \Deleted: no change
        inbox = self.box(store, "INBOX")
        renamed = result_of(store.rename_mailbox(ALICE_USER, "inbox", "Old/Inbox"))
        assert renamed.name == "Old/Inbox" and renamed.uidvalidity != inbox.uidvalidity
        moved = result_of(store.list_messages(ALICE_USER, "Old/Inbox"))
        assert [(m.uid, m.message_id, m.flags, m.internal_date) for m in moved] == [
            (1, "M1", frozenset({"\\Seen"}), 100.0),
            (2, "M2", frozenset(), 200.0),
        ]
        assert self.uids(store, "INBOX") == []
        after = self.box(store, "INBOX")
        assert (after.uidvalidity, after.uidnext) == (inbox.uidvalidity, 3)
        assert after.highest_modseq > inbox.highest_modseq
        assert "INBOX/Lists" in self.names(store)  # INBOX's inferiors stay
        assert self.add(store, "M3").uid == 3  # UIDs of INBOX are not reused

    def test_subscriptions(self, store: Any) -> None:
        assert result_of(store.list_subscriptions(ALICE_USER)) == []
        result_of(store.create_mailbox(ALICE_USER, "Work"))
        result_of(store.create_mailbox(ALICE_USER, "Archive"))
        assert not self.box(store, "Work").subscribed
        result_of(store.subscribe(ALICE_USER, "Work"))
        result_of(store.subscribe(ALICE_USER, "Work"))
        result_of(store.subscribe(ALICE_USER, "Archive"))
        assert self.box(store, "Work").subscribed
        assert result_of(store.list_subscriptions("ALICE@example.COM")) == ["Archive", "Work"]
        result_of(store.unsubscribe(ALICE_USER, "Work"))
        assert not self.box(store, "Work").subscribed
        assert result_of(store.list_subscriptions(ALICE_USER)) == ["Archive"]
        # Subscribing needs a mailbox (RFC 3501 §6.3.6 allows refusing); unsubscribing any
        # valid name is fine, subscribed or not (as Dovecot answers).
        fails_with(store.subscribe(ALICE_USER, "Nope"), NoSuchMailbox)
        result_of(store.unsubscribe(ALICE_USER, "Nope"))
        result_of(store.unsubscribe(ALICE_USER, "Work"))
        assert result_of(store.list_subscriptions(ALICE_USER)) == ["Archive"]
        fails_with(store.list_subscriptions("alice"), InvalidUser)
        fails_with(store.unsubscribe("alice", "Work"), InvalidUser)

    def test_delete_keeps_the_subscription(self, store: Any) -> None:
        # RFC 3501 §6.3.6: the server MUST NOT remove a name from the subscription list
        # because its mailbox no longer exists.
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.create_mailbox(ALICE_USER, "Work/2024"))
        result_of(store.subscribe(ALICE_USER, "Work/2024"))
        result_of(store.subscribe(ALICE_USER, "Work"))
        result_of(store.delete_mailbox(ALICE_USER, "Work/2024"))
        result_of(store.delete_mailbox(ALICE_USER, "Work"))
        result_of(store.delete_mailbox(ALICE_USER, "Junk"))
        assert "Work" not in self.names(store)
        assert result_of(store.list_subscriptions(ALICE_USER)) == sorted(
            DEFAULT_NAMES + ["Work", "Work/2024"]
        )
        # A mailbox made again under a subscribed name is subscribed; others are not.
        assert result_of(store.create_mailbox(ALICE_USER, "Work/2024")).subscribed
        assert self.box(store, "Work").subscribed
        assert not result_of(store.create_mailbox(ALICE_USER, "Other")).subscribed
        # A name without a mailbox can still be unsubscribed (the only way to drop it).
        result_of(store.unsubscribe(ALICE_USER, "Junk"))
        assert "Junk" not in result_of(store.list_subscriptions(ALICE_USER))
        fails_with(store.subscribe(ALICE_USER, "Junk"), NoSuchMailbox)

    def test_rename_moves_the_subscriptions_of_the_mailbox_and_its_inferiors(
        self, store: Any
    ) -> None:
        for name in ("a/b", "a/c", "a/d", "gone", "z"):
            result_of(store.create_mailbox(ALICE_USER, name))
        for name in ("a", "a/b", "a/c", "gone"):
            result_of(store.subscribe(ALICE_USER, name))
        result_of(store.delete_mailbox(ALICE_USER, "a/c"))  # "a/c" stays subscribed
        renamed = result_of(store.rename_mailbox(ALICE_USER, "a", "x"))
        assert renamed.subscribed
        assert [(b.name, b.subscribed) for b in result_of(store.list_mailboxes(ALICE_USER))] == [
            ("gone", True),
            ("x", True),
            ("x/b", True),
            ("x/d", False),
            ("z", False),
        ]
        # A subscribed name without a mailbox is not a mailbox: it does not move.
        assert result_of(store.list_subscriptions(ALICE_USER)) == ["a/c", "gone", "x", "x/b"]
        # Renaming onto a name still subscribed from a deleted mailbox: the name is subscribed.
        result_of(store.delete_mailbox(ALICE_USER, "gone"))
        assert result_of(store.rename_mailbox(ALICE_USER, "z", "gone")).subscribed
        assert result_of(store.list_subscriptions(ALICE_USER)) == ["a/c", "gone", "x", "x/b"]

    # -- messages

    def test_add_message_assigns_growing_uids(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "M1", ALICE)  # as intake does: queued for the primary too
        first = result_of(store.add_message(ALICE_USER, "INBOX", "M1", 1234.5))
        assert first == MailMessage(1, "M1", frozenset(), 1234.5, len(BODY), 2)
        second = self.add(store, "M2", flags=("\\seen", "$Label1", "\\DRAFT"))
        assert second.uid == 2 and second.modseq == 3
        assert second.flags == frozenset({"\\Seen", "$Label1", "\\Draft"})
        assert result_of(store.list_messages(ALICE_USER, "INBOX")) == [first, second]
        box = self.box(store, "INBOX")
        assert (box.uidnext, box.highest_modseq) == (3, 3)

    def test_add_message_refusals(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "M1")
        error = fails_with(store.add_message(ALICE_USER, "Nope", "M1", 1.0), NoSuchMailbox)
        assert isinstance(error, NoSuchMailbox) and error.imap_code == "NONEXISTENT"
        fails_with(store.add_message(ALICE_USER, "INBOX", "M9", 1.0), NoSuchEntry)
        fails_with(store.add_message(ALICE_USER, "INBOX", "M1", 1.0, ["\\Recent"]), InvalidFlag)
        fails_with(store.add_message(ALICE_USER, "INBOX", "M1", 1.0, ["a b"]), InvalidFlag)
        assert self.box(store, "INBOX").uidnext == 1
        assert result_of(store.unreferenced_messages(["M1"])) == ["M1"]

    def test_uids_are_never_reused(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        for n in range(3):
            self.add(store, f"M{n}", flags=("\\Deleted",))
        assert [m.uid for m in result_of(store.expunge(ALICE_USER, "INBOX"))] == [1, 2, 3]
        assert self.add(store, "M0").uid == 4
        assert self.box(store, "INBOX").uidnext == 5

    def test_one_body_in_several_mailboxes(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        self.add(store, "M1", "Trash")
        self.add(store, "M1")
        assert [m.message_id for m in result_of(store.list_messages(ALICE_USER, "INBOX"))] == [
            "M1",
            "M1",
        ]
        assert self.uids(store, "Trash") == [1]
        assert result_of(store.message_count()) == 1

    def test_status(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",))
        self.add(store, "M2")
        self.add(store, "M3", flags=("\\Flagged",))
        status = result_of(store.mailbox_status(ALICE_USER, "inbox"))
        box = self.box(store, "INBOX")
        assert status == MailboxStatus(
            messages=3,
            recent=3,  # no session has claimed them
            uidnext=4,
            uidvalidity=box.uidvalidity,
            unseen=2,
            highest_modseq=4,
        )
        fails_with(store.mailbox_status(ALICE_USER, "Nope"), NoSuchMailbox)

    # -- \\Recent (RFC 3501 §2.3.2): one session claims what arrived since the last claim

    def test_claim_recent_hands_each_message_to_one_claim(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        self.add(store, "M2")
        before = self.box(store, "INBOX")
        assert (before.first_recent, before.uidnext) == (1, 3)
        assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).recent == 2
        # The first claim gets UIDs 1 and 2: the mailbox as it was before the claim.
        first = result_of(store.claim_recent(ALICE_USER, "inbox"))
        assert first == before
        after = self.box(store, "INBOX")
        assert after == replace(before, first_recent=3)  # nothing else changes, modseq neither
        assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).recent == 0
        # A second claim finds nothing; the next arrival is recent for the next claim only.
        second = result_of(store.claim_recent(ALICE_USER, "INBOX"))
        assert (second.first_recent, second.uidnext) == (3, 3)
        self.add(store, "M3")
        assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).recent == 1
        third = result_of(store.claim_recent(ALICE_USER, "INBOX"))
        assert (third.first_recent, third.uidnext, third.uidvalidity) == (3, 4, before.uidvalidity)
        assert self.box(store, "INBOX").first_recent == 4
        fails_with(store.claim_recent(ALICE_USER, "Nope"), NoSuchMailbox)
        fails_with(store.claim_recent("alice", "INBOX"), InvalidUser)

    def test_recent_counts_only_the_messages_still_there(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Deleted",))
        self.add(store, "M2")
        self.add(store, "M3", flags=("\\Seen",))  # seen or not, still recent
        result_of(store.expunge(ALICE_USER, "INBOX"))
        status = result_of(store.mailbox_status(ALICE_USER, "INBOX"))
        assert (status.messages, status.recent, status.unseen) == (2, 2, 1)

    def test_every_way_in_makes_a_message_recent(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        self.add(store, "M2")
        for name in ("INBOX", "Trash"):
            result_of(store.claim_recent(ALICE_USER, name))
        deliver(store, "M3", (Delivery(ALICE_USER, "example.com", shadow=True),))  # intake
        result_of(store.copy_messages(ALICE_USER, "INBOX", [1], "Trash"))
        result_of(store.move_messages(ALICE_USER, "INBOX", [2], "Trash"))
        self.add(store, "M4", "Trash")  # APPEND
        recent = {
            name: result_of(store.mailbox_status(ALICE_USER, name)).recent
            for name in ("INBOX", "Trash")
        }
        assert recent == {"INBOX": 1, "Trash": 3}
        claimed = result_of(store.claim_recent(ALICE_USER, "Trash"))
        assert [
            m.message_id
            for m in result_of(store.list_messages(ALICE_USER, "Trash"))
            if m.uid >= claimed.first_recent
        ] == ["M1", "M2", "M4"]

    def test_recent_across_rename_and_recreate(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.create_mailbox(ALICE_USER, "Work"))
        self.add(store, "M1", "Work")
        self.add(store, "M2", "Work")
        result_of(store.claim_recent(ALICE_USER, "Work"))
        self.add(store, "M3", "Work")
        # A rename keeps what was claimed.
        result_of(store.rename_mailbox(ALICE_USER, "Work", "Projects"))
        assert self.box(store, "Projects").first_recent == 3
        assert result_of(store.mailbox_status(ALICE_USER, "Projects")).recent == 1
        # A mailbox deleted and made again starts afresh.
        result_of(store.delete_mailbox(ALICE_USER, "Projects"))
        assert result_of(store.create_mailbox(ALICE_USER, "Projects")).first_recent == 1
        # Renaming INBOX: its messages arrive in the new mailbox, so they are recent there.
        self.add(store, "M1")
        self.add(store, "M2")
        inbox = result_of(store.claim_recent(ALICE_USER, "INBOX"))
        result_of(store.rename_mailbox(ALICE_USER, "INBOX", "Old"))
        assert result_of(store.mailbox_status(ALICE_USER, "Old")).recent == 2
        assert self.box(store, "INBOX").first_recent == inbox.uidnext

    def test_mime_index_is_kept_once_per_message(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "M1")
        self.stored(store, "M2")
        result_of(store.add_message(ALICE_USER, "INBOX", "M1", 1.0, (), b'{"v": 1}'))
        result_of(store.add_message(ALICE_USER, "INBOX", "M2", 1.0))
        result_of(store.copy_messages(ALICE_USER, "INBOX", [1], "Trash"))
        assert result_of(store.mime_indexes(ALICE_USER, "INBOX", [1, 2, 99])) == {1: b'{"v": 1}'}
        assert result_of(store.mime_indexes(ALICE_USER, "Trash", [1])) == {1: b'{"v": 1}'}
        # Given again (a newer index format), it replaces the one kept, for every copy.
        result_of(store.add_message(ALICE_USER, "Drafts", "M1", 1.0, (), b'{"v": 2}'))
        assert result_of(store.mime_indexes(ALICE_USER, "Trash", [1])) == {1: b'{"v": 2}'}
        assert result_of(store.mime_indexes(ALICE_USER, "INBOX", [])) == {}
        fails_with(store.mime_indexes(ALICE_USER, "Nope", [1]), NoSuchMailbox)

    # -- intake in delivery mode "both": the commit puts each shadow copy into the user's INBOX

    def test_commit_delivers_shadow_copies_into_the_inbox(self, store: Any) -> None:
        deliver(store, "M1", (BOB, CAROL, DAVE), received_at=1000.0)
        deliver(store, "M2", (DAVE, BOB), body=MULTIPART, received_at=2000.0)
        for user in ("bob@example.com", "dave@example.net"):
            # The default mailboxes, as ensure_user makes them.
            assert [(b.name, b.special_use, b.subscribed) for b in store_boxes(store, user)] == [
                ("Drafts", "\\Drafts", True),
                ("INBOX", None, True),
                ("Junk", "\\Junk", True),
                ("Sent", "\\Sent", True),
                ("Trash", "\\Trash", True),
            ]
            # A new UID each, no flags, INTERNALDATE = received_at, one modseq per delivery.
            assert result_of(store.list_messages(user, "INBOX")) == [
                MailMessage(1, "M1", frozenset(), 1000.0, len(BODY), 2),
                MailMessage(2, "M2", frozenset(), 2000.0, len(MULTIPART), 3),
            ]
            box = self.box(store, "INBOX", user)
            assert (box.uidnext, box.highest_modseq) == (3, 3)
            assert result_of(store.mime_indexes(user, "INBOX", [1, 2])) == {
                1: mime_index_of(BODY),
                2: mime_index_of(MULTIPART),
            }
            for name in ("Drafts", "Junk", "Sent", "Trash"):
                assert result_of(store.list_messages(user, name)) == []
        # The recipient without a shadow copy gets nothing; nor does anyone else.
        assert result_of(store.list_mailboxes("carol@example.net")) == []
        assert result_of(store.list_mailboxes(ALICE_USER)) == []
        # Both INBOX copies share the one stored body.
        assert result_of(store.message_count()) == 2

    def test_shadow_copy_of_a_large_body(self, store: Any) -> None:
        big = MULTIPART.replace(b"hello\r\n", b"x" * 76 + b"\r\n") + b"y" * (300 * 1024)
        assert len(big) > 300 * 1024  # past the disk store's inline limit: a body file
        deliver(store, "M1", (BOB,), body=big, received_at=1000.0)
        assert result_of(store.read_body("M1")) == big
        assert [m.size for m in result_of(store.list_messages("bob@example.com", "INBOX"))] == [
            len(big)
        ]
        indexes = result_of(store.mime_indexes("bob@example.com", "INBOX", [1]))
        assert indexes == {1: mime_index_of(big)}

    def test_shadow_copies_join_a_user_who_has_mailboxes(self, store: Any) -> None:
        result_of(store.ensure_user("Bob@Example.com"))
        result_of(store.delete_mailbox("bob@example.com", "Junk"))
        self.add(store, "M0", user="bob@example.com")
        # The same user spelled twice: one INBOX copy.
        twice = Delivery("BOB@example.COM", "example.com", shadow=True)
        deliver(store, "M1", (BOB, twice), received_at=1000.0)
        assert self.uids(store, "INBOX", "bob@example.com") == [1, 2]
        assert self.box(store, "INBOX", "bob@example.com").uidnext == 3
        # Missing default mailboxes are made again, as ensure_user would.
        assert "Junk" in self.names(store, "bob@example.com")
        assert len(result_of(store.entries_for_message("M1"))) == 2

    def test_a_message_without_shadow_copies_reaches_no_mailbox(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        deliver(store, "M1", (ALICE, CAROL))
        assert self.uids(store, "INBOX") == []
        assert result_of(store.list_mailboxes("carol@example.net")) == []

    def test_an_aborted_message_reaches_no_mailbox(self, store: Any) -> None:
        writer = store.begin("M1")
        result_of(writer.write(BODY))
        result_of(writer.abort())
        assert result_of(store.list_mailboxes("bob@example.com")) == []

    # -- flags and CONDSTORE

    def test_store_flags_set_add_remove(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",))
        self.add(store, "M2")
        added = result_of(
            store.store_flags(ALICE_USER, "INBOX", [1, 2, 7], FLAGS_ADD, ["\\flagged", "Work"])
        )
        assert [m.flags for m in added.messages] == [
            frozenset({"\\Seen", "\\Flagged", "Work"}),
            frozenset({"\\Flagged", "Work"}),
        ]
        assert (added.changed, added.failed, added.highest_modseq) == ((1, 2), (), 4)
        assert [m.modseq for m in added.messages] == [4, 4]
        removed = result_of(store.store_flags(ALICE_USER, "INBOX", [1], FLAGS_REMOVE, ["Work"]))
        assert removed.messages[0].flags == frozenset({"\\Seen", "\\Flagged"})
        replaced = result_of(store.store_flags(ALICE_USER, "INBOX", [2], FLAGS_SET, ["\\Seen"]))
        assert replaced.messages[0].flags == frozenset({"\\Seen"})
        assert [m.flags for m in result_of(store.list_messages(ALICE_USER, "INBOX"))] == [
            frozenset({"\\Seen", "\\Flagged"}),
            frozenset({"\\Seen"}),
        ]
        assert result_of(store.mailbox_status(ALICE_USER, "INBOX")).unseen == 0

    def test_a_store_that_changes_nothing_keeps_the_modseq(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",))
        self.add(store, "M2")
        before = self.box(store, "INBOX").highest_modseq
        update = result_of(store.store_flags(ALICE_USER, "INBOX", [1, 2], FLAGS_ADD, ["\\Seen"]))
        assert update.changed == (2,)
        assert [m.modseq for m in update.messages] == [2, before + 1]
        nothing = result_of(store.store_flags(ALICE_USER, "INBOX", [1, 2], FLAGS_ADD, ["\\Seen"]))
        assert (nothing.changed, nothing.highest_modseq) == ((), before + 1)
        assert result_of(store.store_flags(ALICE_USER, "INBOX", [], FLAGS_SET, [])).messages == ()

    def test_unchanged_since(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")  # modseq 2
        self.add(store, "M2")  # modseq 3
        update = result_of(store.store_flags(ALICE_USER, "INBOX", [1, 2], FLAGS_ADD, ["\\Seen"], 2))
        assert (update.changed, update.failed) == ((1,), (2,))
        assert [m.uid for m in update.messages] == [1]
        flags = {m.uid: m.flags for m in result_of(store.list_messages(ALICE_USER, "INBOX"))}
        assert flags == {1: frozenset({"\\Seen"}), 2: frozenset()}

    def test_store_flags_refusals(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        fails_with(
            store.store_flags(ALICE_USER, "INBOX", [1], FLAGS_ADD, ["\\Recent"]), InvalidFlag
        )
        fails_with(store.store_flags(ALICE_USER, "INBOX", [1], "toggle", ["x"]), InvalidFlag)
        fails_with(store.store_flags(ALICE_USER, "Nope", [1], FLAGS_ADD, ["x"]), NoSuchMailbox)
        assert result_of(store.list_messages(ALICE_USER, "INBOX"))[0].flags == frozenset()

    def test_changed_since(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        self.add(store, "M2")
        self.add(store, "M3")
        mark = self.box(store, "INBOX").highest_modseq
        assert result_of(store.list_messages(ALICE_USER, "INBOX", mark)) == []
        result_of(store.store_flags(ALICE_USER, "INBOX", [2], FLAGS_ADD, ["\\Seen"]))
        self.add(store, "M4")
        changed = result_of(store.list_messages(ALICE_USER, "INBOX", mark))
        assert [m.uid for m in changed] == [2, 4]
        assert [m.uid for m in result_of(store.list_messages(ALICE_USER, "INBOX", 0))] == [
            1,
            2,
            3,
            4,
        ]

    def test_list_only_some_uids(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        for name in ("M1", "M2", "M3", "M4"):
            self.add(store, name)
        some = result_of(store.list_messages(ALICE_USER, "INBOX", uids=[4, 2, 9, 2]))
        assert [m.uid for m in some] == [2, 4]  # in UID order, absent UIDs ignored
        assert [m.message_id for m in some] == ["M2", "M4"]
        assert result_of(store.list_messages(ALICE_USER, "INBOX", uids=[])) == []
        mark = self.box(store, "INBOX").highest_modseq
        result_of(store.store_flags(ALICE_USER, "INBOX", [3], FLAGS_ADD, ["\\Seen"]))
        both = result_of(store.list_messages(ALICE_USER, "INBOX", mark, uids=[1, 2, 3]))
        assert [m.uid for m in both] == [3]  # changed since the mark and among the UIDs

    # -- copy, move, expunge

    def test_copy_keeps_flags_and_dates_and_shares_the_body(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",), internal_date=100.0)
        self.add(store, "M2", internal_date=200.0)
        self.add(store, "M3", "Trash")
        trash = self.box(store, "Trash")
        result = result_of(store.copy_messages(ALICE_USER, "INBOX", [2, 1, 99], "Trash"))
        assert result == CopyResult(trash.uidvalidity, ((1, 2), (2, 3)))
        copied = result_of(store.list_messages(ALICE_USER, "Trash"))
        assert [(m.uid, m.message_id, m.flags, m.internal_date, m.modseq) for m in copied] == [
            (1, "M3", frozenset(), 5000.0, 2),
            (2, "M1", frozenset({"\\Seen"}), 100.0, 3),
            (3, "M2", frozenset(), 200.0, 3),
        ]
        assert self.uids(store, "INBOX") == [1, 2]
        assert result_of(store.message_count()) == 3

    def test_copy_into_the_same_mailbox(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        result = result_of(store.copy_messages(ALICE_USER, "INBOX", [1], "inbox"))
        assert result.pairs == ((1, 2),)
        assert self.uids(store, "INBOX") == [1, 2]

    def test_copy_of_nothing(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        before = self.box(store, "Trash")
        result = result_of(store.copy_messages(ALICE_USER, "INBOX", [5], "Trash"))
        assert result == CopyResult(before.uidvalidity, ())
        assert self.box(store, "Trash") == before

    def test_copy_and_move_to_a_missing_mailbox(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1")
        for call in (store.copy_messages, store.move_messages):
            error = fails_with(call(ALICE_USER, "INBOX", [1], "Archive"), NoSuchMailbox)
            assert isinstance(error, NoSuchMailbox) and error.name == "Archive"  # TRYCREATE
            error = fails_with(call(ALICE_USER, "Gone", [1], "Trash"), NoSuchMailbox)
            assert isinstance(error, NoSuchMailbox) and error.name == "Gone"
        assert self.uids(store, "INBOX") == [1]

    def test_move(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",))
        self.add(store, "M2")
        self.add(store, "M3")
        inbox = self.box(store, "INBOX")
        result = result_of(store.move_messages(ALICE_USER, "INBOX", [1, 3], "Trash"))
        assert result == CopyResult(self.box(store, "Trash").uidvalidity, ((1, 1), (3, 2)))
        assert self.uids(store, "INBOX") == [2]
        assert self.box(store, "INBOX").highest_modseq > inbox.highest_modseq
        moved = result_of(store.list_messages(ALICE_USER, "Trash"))
        assert [(m.message_id, m.flags) for m in moved] == [
            ("M1", frozenset({"\\Seen"})),
            ("M3", frozenset()),
        ]

    def test_changes_name_the_mailbox_they_mean_by_its_uidvalidity(self, store: Any) -> None:
        # A session's STORE, COPY, MOVE or EXPUNGE must not reach a mailbox created since under
        # the name of the one it selected (issue 12): the UIDVALIDITY it knows is a precondition.
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.create_mailbox(ALICE_USER, "proj"))
        old = self.box(store, "proj").uidvalidity
        result_of(store.delete_mailbox(ALICE_USER, "proj"))
        result_of(store.create_mailbox(ALICE_USER, "proj"))
        result_of(
            store.add_message(ALICE_USER, "proj", self.stored(store, "P1"), 1.0, ["\\Deleted"])
        )
        new = self.box(store, "proj")
        assert new.uidvalidity != old
        fails_with(
            store.store_flags(ALICE_USER, "proj", [1], "add", ["\\Seen"], uidvalidity=old),
            NoSuchMailbox,
        )
        fails_with(
            store.copy_messages(ALICE_USER, "proj", [1], "INBOX", uidvalidity=old), NoSuchMailbox
        )
        fails_with(
            store.move_messages(ALICE_USER, "proj", [1], "INBOX", uidvalidity=old), NoSuchMailbox
        )
        fails_with(store.expunge(ALICE_USER, "proj", uidvalidity=old), NoSuchMailbox)
        assert self.box(store, "proj") == new  # nothing changed
        assert [m.flags for m in result_of(store.list_messages(ALICE_USER, "proj"))] == [
            frozenset({"\\Deleted"})
        ]
        # With the right one they work as ever.
        update = result_of(
            store.store_flags(
                ALICE_USER, "proj", [1], "add", ["\\Seen"], uidvalidity=new.uidvalidity
            )
        )
        assert update.changed == (1,)
        assert len(result_of(store.expunge(ALICE_USER, "proj", uidvalidity=new.uidvalidity))) == 1

    def test_move_into_the_same_mailbox(self, store: Any) -> None:
        # RFC 6851 allows it (Dovecot answers OK with COPYUID): new UIDs, the old ones expunged.
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Seen",), internal_date=100.0)
        self.add(store, "M2")
        self.add(store, "M3", internal_date=300.0)
        inbox = self.box(store, "INBOX")
        result = result_of(store.move_messages(ALICE_USER, "INBOX", [3, 1, 9], "inbox"))
        assert result == CopyResult(inbox.uidvalidity, ((1, 4), (3, 5)))
        after = self.box(store, "INBOX")
        modseq = inbox.highest_modseq + 1  # one step, one modseq
        assert (after.uidnext, after.highest_modseq) == (6, modseq)
        moved = result_of(store.list_messages(ALICE_USER, "INBOX"))
        assert [(m.uid, m.message_id, m.flags, m.internal_date, m.modseq) for m in moved] == [
            (2, "M2", frozenset(), 5000.0, 3),
            (4, "M1", frozenset({"\\Seen"}), 100.0, modseq),
            (5, "M3", frozenset(), 300.0, modseq),
        ]
        assert result_of(store.list_messages(ALICE_USER, "INBOX", inbox.highest_modseq)) == [
            moved[1],
            moved[2],
        ]
        # Nothing to move: nothing changes.
        nothing = result_of(store.move_messages(ALICE_USER, "INBOX", [1, 3], "INBOX"))
        assert nothing == CopyResult(inbox.uidvalidity, ())
        assert self.box(store, "INBOX") == after

    def test_expunge_removes_only_deleted_messages(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Deleted",))
        self.add(store, "M2")
        self.add(store, "M3", flags=("\\Deleted", "\\Seen"))
        before = self.box(store, "INBOX").highest_modseq
        gone = result_of(store.expunge(ALICE_USER, "INBOX"))
        assert [(m.uid, m.message_id) for m in gone] == [(1, "M1"), (3, "M3")]
        assert gone[1].flags == frozenset({"\\Deleted", "\\Seen"})
        assert self.uids(store, "INBOX") == [2]
        assert self.box(store, "INBOX").highest_modseq == before + 1
        assert result_of(store.expunge(ALICE_USER, "INBOX")) == []
        assert self.box(store, "INBOX").highest_modseq == before + 1

    def test_uid_expunge_removes_only_the_given_deleted_uids(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.add(store, "M1", flags=("\\Deleted",))
        self.add(store, "M2", flags=("\\Deleted",))
        self.add(store, "M3")
        # RFC 4315 §2.1: another client's \Deleted message (UID 1) must survive.
        gone = result_of(store.expunge(ALICE_USER, "INBOX", [2, 3]))
        assert [m.uid for m in gone] == [2]
        assert self.uids(store, "INBOX") == [1, 3]
        fails_with(store.expunge(ALICE_USER, "Nope"), NoSuchMailbox)

    # -- retention and bodies

    def test_purge_older_than_covers_every_mailbox_of_the_domain(self, store: Any) -> None:
        carol = "carol@example.net"
        for user in (ALICE_USER, BOB_USER, carol):
            result_of(store.ensure_user(user))
        self.add(store, "M1", internal_date=100.0)
        self.add(store, "M2", internal_date=300.0)
        self.add(store, "M1", "Trash", internal_date=100.0)
        self.add(store, "M3", user=BOB_USER, internal_date=199.0)
        self.add(store, "M1", user=carol, internal_date=100.0)
        bob_before = self.box(store, "INBOX", BOB_USER)
        purged = result_of(store.purge_older_than("EXAMPLE.com", 200.0))
        assert sorted(purged, key=lambda p: (p.user, p.mailbox)) == [
            PurgedMessage(ALICE_USER, "INBOX", 1, "M1"),
            PurgedMessage(ALICE_USER, "Trash", 1, "M1"),
            PurgedMessage(BOB_USER, "INBOX", 1, "M3"),
        ]
        assert self.uids(store, "INBOX") == [2]
        assert self.uids(store, "INBOX", BOB_USER) == []
        assert self.uids(store, "INBOX", carol) == [1]  # another domain
        assert self.box(store, "INBOX", BOB_USER).highest_modseq > bob_before.highest_modseq
        assert result_of(store.purge_older_than("example.com", 200.0)) == []
        fails_with(store.purge_older_than("not a domain", 200.0), InvalidDomainName)

    def test_unreferenced_messages(self, store: Any, set_entry_state: SetEntryState) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "Q", ALICE)  # queued for the primary: its body is still needed
        self.stored(store, "H", ALICE)
        set_entry_state(store, "H.1", HELD)  # held for review: still needed
        self.stored(store, "D", ALICE, CAROL)
        set_entry_state(store, "D.1", DELIVERED)
        set_entry_state(store, "D.2", BOUNCED)  # nothing waits any more
        self.stored(store, "A")  # APPENDed, never added (a crash between the two steps)
        self.add(store, "I", flags=("\\Deleted",))  # in INBOX
        self.add(store, "Q")
        assert result_of(store.unreferenced_messages()) == ["A", "D"]
        assert result_of(store.unreferenced_messages(["D", "I", "Q", "nope"])) == ["D"]
        result_of(store.expunge(ALICE_USER, "INBOX"))
        assert result_of(store.unreferenced_messages(["I"])) == ["I"]
        set_entry_state(store, "Q.1", DELIVERED)
        assert result_of(store.unreferenced_messages(["Q"])) == []  # still in INBOX
        result_of(store.move_messages(ALICE_USER, "INBOX", [2], "Trash"))
        assert result_of(store.unreferenced_messages(["Q"])) == []
        result_of(store.delete_mailbox(ALICE_USER, "Trash"))
        assert result_of(store.unreferenced_messages(["Q"])) == ["Q"]

    def test_delete_messages_deletes_only_what_nobody_needs(
        self, store: Any, set_entry_state: SetEntryState
    ) -> None:
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "Q", ALICE)  # queued for the primary
        self.stored(store, "H", ALICE)
        set_entry_state(store, "H.1", HELD)  # held for review
        self.stored(store, "D", ALICE, CAROL)
        set_entry_state(store, "D.1", DELIVERED)
        set_entry_state(store, "D.2", BOUNCED)  # nothing waits any more
        self.stored(store, "X", ALICE)
        set_entry_state(store, "X.1", DELETED)
        self.stored(store, "A")  # APPENDed, never added
        self.add(store, "I")  # in INBOX
        assert result_of(store.delete_messages(["Q", "H", "D", "X", "A", "I", "nope"])) == 3
        for gone in ("D", "X", "A"):
            assert result_of(store.get_message(gone)) is None
            fails_with(store.read_body(gone), NoSuchEntry)
            assert result_of(store.entries_for_message(gone)) == []  # their finished entries
        for kept in ("Q", "H", "I"):
            assert result_of(store.read_body(kept)) == BODY
        assert [e.state for e in result_of(store.entries_for_message("Q"))] == [QUEUED]
        assert [e.state for e in result_of(store.entries_for_message("H"))] == [HELD]
        assert self.uids(store, "INBOX") == [1]
        assert result_of(store.message_count()) == 3
        assert result_of(store.unreferenced_messages()) == []
        # Idempotent: nothing left to delete among them; no ids at all is fine too.
        assert result_of(store.delete_messages(["D", "X", "A"])) == 0
        assert result_of(store.delete_messages([])) == 0
        assert result_of(store.message_count()) == 3

    def test_delete_messages_checks_again_whatever_the_caller_saw(
        self, store: Any, set_entry_state: SetEntryState
    ) -> None:
        # The caller's list is stale by the time it deletes: an admin released the entry, or
        # the message went into a mailbox (APPEND's second step).  Neither body may go.
        result_of(store.ensure_user(ALICE_USER))
        self.stored(store, "R", ALICE)
        set_entry_state(store, "R.1", BOUNCED)
        self.stored(store, "P")
        assert result_of(store.unreferenced_messages(["R", "P"])) == ["P", "R"]
        set_entry_state(store, "R.1", QUEUED)
        self.add(store, "P")
        assert result_of(store.delete_messages(["P", "R"])) == 0
        assert result_of(store.read_body("R")) == BODY
        assert result_of(store.read_body("P")) == BODY

    def test_delete_messages_of_a_purged_shadow_copy_with_a_large_body(
        self, store: Any, set_entry_state: SetEntryState, body_files: Any
    ) -> None:
        # Past any write buffer and inline limit: a body in its own file, with a MIME index and
        # a shadow-copy record (mode both); the retention job's three steps.
        large = HEADERS + bytes(range(251)) * (600 * 1024 // 251)
        deliver(store, "BIG", (ALICE, BOB), body=large, chunk_size=100_003)
        deliver(store, "SMALL", (ALICE, BOB))
        before = body_files(store)
        assert before == [] or any(f.endswith("/BIG") for f in before)
        for message_id in ("BIG", "SMALL"):
            for e in result_of(store.entries_for_message(message_id)):
                set_entry_state(store, e.id, DELIVERED)
        purged = result_of(store.purge_older_than("example.com", 2000.0))
        assert sorted(p.message_id for p in purged) == ["BIG", "SMALL"]
        unreferenced = result_of(store.unreferenced_messages([p.message_id for p in purged]))
        assert unreferenced == ["BIG", "SMALL"]
        assert result_of(store.delete_messages(unreferenced)) == 2
        assert result_of(store.message_count()) == 0
        fails_with(store.read_body("BIG"), NoSuchEntry)
        fails_with(store.read_body_range("BIG", 0, 10), NoSuchEntry)
        assert result_of(store.read_heads(["BIG", "SMALL"], 10)) == []
        assert result_of(store.list_shadow_copies()) == []
        assert result_of(store.list_entries()) == []
        assert body_files(store) == []
        # Nothing of it is left: its id (and file name) takes a new message from scratch.
        deliver(store, "BIG", (ALICE,))
        assert result_of(store.read_body("BIG")) == BODY
        assert result_of(store.delete_messages(["BIG"])) == 0  # queued

    # -- isolation

    def test_a_user_never_reaches_another_users_mailboxes(self, store: Any) -> None:
        result_of(store.ensure_user(ALICE_USER))
        result_of(store.ensure_user(BOB_USER))
        result_of(store.create_mailbox(ALICE_USER, "Secret"))
        self.add(store, "M1", flags=("\\Deleted",))
        self.add(store, "M2", "Secret")
        bob_inbox = self.box(store, "INBOX", BOB_USER)
        assert self.box(store, "INBOX").uidvalidity != bob_inbox.uidvalidity
        assert "Secret" not in self.names(store, BOB_USER)
        assert result_of(store.get_mailbox(BOB_USER, "Secret")) is None
        for d in (
            store.list_messages(BOB_USER, "Secret"),
            store.mailbox_status(BOB_USER, "Secret"),
            store.copy_messages(BOB_USER, "Secret", [1], "INBOX"),
            store.move_messages(BOB_USER, "Secret", [1], "INBOX"),
            store.store_flags(BOB_USER, "Secret", [1], FLAGS_ADD, ["\\Seen"]),
            store.expunge(BOB_USER, "Secret"),
            store.mime_indexes(BOB_USER, "Secret", [1]),
            store.delete_mailbox(BOB_USER, "Secret"),
            store.rename_mailbox(BOB_USER, "Secret", "Mine"),
            store.subscribe(BOB_USER, "Secret"),
            store.add_message(BOB_USER, "Secret", "M1", 1.0),
            store.claim_recent(BOB_USER, "Secret"),
        ):
            fails_with(d, NoSuchMailbox)
        # Subscriptions are per user too: Bob's unsubscribing is his own business.
        result_of(store.subscribe(ALICE_USER, "Secret"))
        result_of(store.unsubscribe(BOB_USER, "Secret"))
        result_of(store.unsubscribe(BOB_USER, "INBOX"))
        assert "Secret" not in result_of(store.list_subscriptions(BOB_USER))
        assert self.box(store, "Secret").subscribed
        assert self.box(store, "INBOX").subscribed
        # Bob's own INBOX is empty: Alice's UID 1 is not his.
        assert result_of(store.list_messages(BOB_USER, "INBOX")) == []
        assert result_of(store.store_flags(BOB_USER, "INBOX", [1], FLAGS_SET, [])).messages == ()
        assert result_of(store.copy_messages(BOB_USER, "INBOX", [1], "Trash")).pairs == ()
        assert result_of(store.expunge(BOB_USER, "INBOX", [1])) == []
        assert result_of(store.mime_indexes(BOB_USER, "INBOX", [1])) == {}
        # Bob creating and deleting his own "Secret" leaves Alice's alone.
        result_of(store.create_mailbox(BOB_USER, "Secret"))
        result_of(store.delete_mailbox(BOB_USER, "Secret"))
        result_of(store.rename_mailbox(BOB_USER, "Trash", "Bin"))
        assert self.uids(store, "INBOX") == [1]
        assert self.uids(store, "Secret") == [1]
        assert "Trash" in self.names(store)
        assert self.box(store, "INBOX") == result_of(store.get_mailbox(ALICE_USER, "INBOX"))


# -- ICredentialStore ---------------------------------------------------------------------------

# Stored forms only: the store checks the {SCHEME}value shape, never the hash itself.
H1 = "{SHA512-CRYPT}$6$salt1$aaaa"
H2 = "{BLF-CRYPT}$2y$05$bbbb"
H3 = "{SSHA512}c3NoYTUxMg=="


def users(*pairs: tuple[str, str]) -> list[UserCredential]:
    return [UserCredential(address, hash_text) for address, hash_text in pairs]


class CredentialStoreSuite:
    """
    L{ICredentialStore}: per-domain user lists of password hashes; atomic replace, merge, one
    user at a time, canonical addresses, and a version that moves with every change.
    """

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(ICredentialStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.list_users("example.com")) == []
        assert result_of(store.has_user_list("example.com")) is False
        assert result_of(store.get_user("alice@example.com")) is None

    def test_replace_users_sets_the_whole_list(self, store: Any) -> None:
        change = result_of(
            store.replace_users(
                "example.com", users(("bob@example.com", H2), ("alice@example.com", H1))
            )
        )
        assert change == UserListChange(added=2)
        assert result_of(store.list_users("example.com")) == users(
            ("alice@example.com", H1), ("bob@example.com", H2)
        )
        assert result_of(store.has_user_list("example.com")) is True
        assert result_of(store.get_user("alice@example.com")) == H1

        change = result_of(
            store.replace_users(
                "example.com",
                users(
                    ("alice@example.com", H1), ("bob@example.com", H3), ("carol@example.com", H1)
                ),
            )
        )
        assert change == UserListChange(added=1, updated=1, unchanged=1)
        change = result_of(store.replace_users("example.com", users(("carol@example.com", H2))))
        assert change == UserListChange(updated=1, removed=2)
        assert result_of(store.list_users("example.com")) == users(("carol@example.com", H2))
        assert result_of(store.get_user("alice@example.com")) is None

    def test_replace_touches_only_its_domain(self, store: Any) -> None:
        result_of(store.replace_users("example.com", users(("alice@example.com", H1))))
        result_of(store.replace_users("example.net", users(("carol@example.net", H2))))
        result_of(store.replace_users("example.com", users(("bob@example.com", H3))))
        assert result_of(store.list_users("example.net")) == users(("carol@example.net", H2))
        assert result_of(store.list_users("example.com")) == users(("bob@example.com", H3))

    def test_replacing_with_nothing_removes_the_list(self, store: Any) -> None:
        result_of(store.replace_users("example.com", users(("alice@example.com", H1))))
        assert result_of(store.replace_users("example.com", [])) == UserListChange(removed=1)
        assert result_of(store.has_user_list("example.com")) is False

    def test_merge_keeps_the_others(self, store: Any) -> None:
        result_of(
            store.replace_users(
                "example.com", users(("alice@example.com", H1), ("bob@example.com", H2))
            )
        )
        change = result_of(
            store.merge_users(
                "example.com", users(("bob@example.com", H3), ("carol@example.com", H1))
            )
        )
        assert change == UserListChange(added=1, updated=1)
        assert result_of(store.list_users("example.com")) == users(
            ("alice@example.com", H1), ("bob@example.com", H3), ("carol@example.com", H1)
        )
        assert result_of(store.merge_users("example.com", [])) == UserListChange()

    def test_a_bad_list_changes_nothing(self, store: Any) -> None:
        result_of(store.replace_users("example.com", users(("alice@example.com", H1))))
        version = result_of(store.credentials_version())
        for bad, error in (
            (users(("bob@example.com", H2), ("carol@example.net", H1)), InvalidUser),
            (users(("bob@example.com", H2), ("Bob@Example.COM", H1)), InvalidUser),
            (users(("bob@example.com", H2), ("not-an-address", H1)), InvalidUser),
            (users(("bob@example.com", "$6$salt$bare")), InvalidPasswordHash),
            (users(("bob@example.com", "{PLAIN}secret")), InvalidPasswordHash),
            (users(("bob@example.com", "{CLEARTEXT}secret")), InvalidPasswordHash),
            (users(("bob@example.com", "{SHA512-CRYPT}")), InvalidPasswordHash),
            (users(("bob@example.com", "{SHA512-CRYPT}a b")), InvalidPasswordHash),
        ):
            for method in (store.replace_users, store.merge_users):
                fails_with(method("example.com", bad), error)
        fails_with(store.replace_users("not a domain", []), InvalidDomainName)
        assert result_of(store.list_users("example.com")) == users(("alice@example.com", H1))
        assert result_of(store.credentials_version()) == version

    def test_errors_never_echo_the_hash(self, store: Any) -> None:
        error = fails_with(store.set_user("bob@example.com", "{PLAIN}hunter2"), InvalidPasswordHash)
        assert "hunter2" not in str(error)
        assert "hunter2" not in repr(UserCredential("bob@example.com", "{X}hunter2"))

    def test_addresses_and_domains_are_canonical(self, store: Any) -> None:
        result_of(
            store.replace_users("B\u00fccher.example", users(("Alice@XN--BCHER-KVA.example", H1)))
        )
        expected = users(("alice@xn--bcher-kva.example", H1))
        assert result_of(store.list_users("xn--bcher-kva.example")) == expected
        assert result_of(store.list_users("bücher.example")) == expected
        assert result_of(store.get_user("ALICE@bücher.example")) == H1
        assert result_of(store.has_user_list("BÜCHER.example")) is True
        assert expected[0].domain == "xn--bcher-kva.example"
        assert expected[0].scheme == "SHA512-CRYPT"

    def test_set_user_adds_and_updates(self, store: Any) -> None:
        assert result_of(store.set_user("Alice@Example.com", H1)) is True
        assert result_of(store.has_user_list("example.com")) is True
        assert result_of(store.set_user("alice@example.com", H2)) is False
        assert result_of(store.get_user("alice@example.com")) == H2
        assert result_of(store.list_users("example.com")) == users(("alice@example.com", H2))
        fails_with(store.set_user("alice", H1), InvalidUser)
        fails_with(store.set_user("alice@example.com", "secret"), InvalidPasswordHash)
        assert result_of(store.get_user("alice@example.com")) == H2

    def test_remove_user(self, store: Any) -> None:
        result_of(
            store.replace_users(
                "example.com", users(("alice@example.com", H1), ("bob@example.com", H2))
            )
        )
        assert result_of(store.remove_user("ALICE@example.com")) is None
        assert result_of(store.get_user("alice@example.com")) is None
        fails_with(store.remove_user("alice@example.com"), NoSuchUser)
        fails_with(store.remove_user("nobody@example.net"), NoSuchUser)
        result_of(store.remove_user("bob@example.com"))
        assert result_of(store.has_user_list("example.com")) is False
        assert result_of(store.list_users("example.com")) == []

    def test_version_moves_with_every_change(self, store: Any) -> None:
        seen = [result_of(store.credentials_version())]

        def changed() -> None:
            version = result_of(store.credentials_version())
            assert version != seen[-1]
            seen.append(version)

        result_of(store.replace_users("example.com", users(("alice@example.com", H1))))
        changed()
        result_of(store.merge_users("example.com", users(("bob@example.com", H1))))
        changed()
        result_of(store.set_user("alice@example.com", H2))
        changed()
        result_of(store.remove_user("alice@example.com"))
        changed()
        fails_with(store.remove_user("alice@example.com"), NoSuchUser)
        assert result_of(store.credentials_version()) == seen[-1]
        result_of(store.get_user("bob@example.com"))
        result_of(store.list_users("example.com"))
        assert result_of(store.credentials_version()) == seen[-1]

    # -- send-as aliases

    def test_aliases_start_empty(self, store: Any) -> None:
        assert result_of(store.list_aliases()) == []
        assert result_of(store.list_aliases("alice@example.com")) == []

    def test_add_alias_in_the_users_domain_or_any_other(self, store: Any) -> None:
        result_of(store.set_user("alice@example.com", H1))
        result_of(store.set_user("bob@example.com", H2))
        assert result_of(store.add_alias("Sales@Example.COM", "ALICE@example.com")) is None
        result_of(store.add_alias("alice@B\u00fccher.example", "alice@example.com"))
        result_of(store.add_alias("help@example.net", "bob@example.com"))
        assert result_of(store.list_aliases()) == [
            ("alice@xn--bcher-kva.example", "alice@example.com"),
            ("help@example.net", "bob@example.com"),
            ("sales@example.com", "alice@example.com"),
        ]
        assert result_of(store.list_aliases("Alice@Example.com")) == [
            ("alice@xn--bcher-kva.example", "alice@example.com"),
            ("sales@example.com", "alice@example.com"),
        ]
        assert result_of(store.list_aliases("carol@example.com")) == []

    def test_an_alias_belongs_to_one_user(self, store: Any) -> None:
        result_of(store.set_user("alice@example.com", H1))
        result_of(store.set_user("bob@example.com", H2))
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        result_of(store.add_alias("sales@example.com", "alice@example.com"))  # again: no change
        assert result_of(store.list_aliases()) == [("sales@example.com", "alice@example.com")]
        result_of(store.add_alias("SALES@example.com", "bob@example.com"))
        assert result_of(store.list_aliases()) == [("sales@example.com", "bob@example.com")]
        assert result_of(store.list_aliases("alice@example.com")) == []

    def test_an_alias_of_another_users_address_is_allowed(self, store: Any) -> None:
        # A shared mailbox that is a synced user too (the admin decides, the store keeps it).
        result_of(store.set_user("alice@example.com", H1))
        result_of(store.set_user("office@example.com", H2))
        result_of(store.add_alias("office@example.com", "alice@example.com"))
        assert result_of(store.list_aliases()) == [("office@example.com", "alice@example.com")]

    def test_bad_aliases_change_nothing(self, store: Any) -> None:
        result_of(store.set_user("alice@example.com", H1))
        version = result_of(store.credentials_version())
        fails_with(store.add_alias("sales", "alice@example.com"), InvalidUser)
        fails_with(store.add_alias("sales@-bad-.example", "alice@example.com"), InvalidUser)
        fails_with(store.add_alias("sales@example.com", "alice"), InvalidUser)
        fails_with(store.add_alias("Alice@Example.com", "alice@example.com"), InvalidUser)
        fails_with(store.add_alias("sales@example.com", "nobody@example.com"), NoSuchUser)
        fails_with(store.remove_alias("not an address"), InvalidUser)
        fails_with(store.list_aliases("alice"), InvalidUser)
        assert result_of(store.list_aliases()) == []
        assert result_of(store.credentials_version()) == version

    def test_remove_alias(self, store: Any) -> None:
        result_of(store.set_user("alice@example.com", H1))
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        result_of(store.add_alias("alice@example.net", "alice@example.com"))
        assert result_of(store.remove_alias("Sales@Example.com")) is True
        assert result_of(store.remove_alias("sales@example.com")) is False
        assert result_of(store.remove_alias("alice@example.com")) is False  # a user, no alias
        assert result_of(store.list_aliases()) == [("alice@example.net", "alice@example.com")]
        assert result_of(store.get_user("alice@example.com")) == H1

    def test_removing_a_user_removes_its_aliases(self, store: Any) -> None:
        result_of(
            store.replace_users(
                "example.com", users(("alice@example.com", H1), ("bob@example.com", H2))
            )
        )
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        result_of(store.add_alias("help@example.com", "bob@example.com"))
        result_of(store.remove_user("alice@example.com"))
        assert result_of(store.list_aliases()) == [("help@example.com", "bob@example.com")]
        # Back again, alice has no aliases: they went with her.
        result_of(store.set_user("alice@example.com", H1))
        assert result_of(store.list_aliases("alice@example.com")) == []

    def test_a_replaced_list_takes_the_aliases_of_the_users_it_drops(self, store: Any) -> None:
        result_of(
            store.replace_users(
                "example.com", users(("alice@example.com", H1), ("bob@example.com", H2))
            )
        )
        result_of(store.set_user("carol@example.net", H3))
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        result_of(store.add_alias("help@example.com", "bob@example.com"))
        result_of(store.add_alias("carol@example.com", "carol@example.net"))
        # A merge and an update keep every alias; a replace drops bob's, nobody else's.
        result_of(store.merge_users("example.com", users(("dave@example.com", H1))))
        result_of(store.set_user("alice@example.com", H2))
        assert len(result_of(store.list_aliases())) == 3
        result_of(store.replace_users("example.com", users(("alice@example.com", H3))))
        assert result_of(store.list_aliases()) == [
            ("carol@example.com", "carol@example.net"),
            ("sales@example.com", "alice@example.com"),
        ]
        result_of(store.replace_users("example.com", []))
        assert result_of(store.list_aliases()) == [("carol@example.com", "carol@example.net")]

    def test_version_moves_with_every_alias_change(self, store: Any) -> None:
        result_of(store.set_user("alice@example.com", H1))
        before = result_of(store.credentials_version())
        result_of(store.add_alias("sales@example.com", "alice@example.com"))
        added = result_of(store.credentials_version())
        assert added != before
        result_of(store.list_aliases())
        assert result_of(store.remove_alias("nothing@example.com")) is False
        assert result_of(store.credentials_version()) == added
        result_of(store.remove_alias("sales@example.com"))
        assert result_of(store.credentials_version()) != added


# -- The admin listings (#13): IQueueStore.query_entries/count_entries, IEventStore.query_events --

# A queue with something for every filter: mixed-case and non-ASCII senders and recipients, a
# sender with LIKE's wildcards in it, three domains, three states, four arrival times.
JORG = Delivery("Jörg@Bücher.example", "xn--bcher-kva.example")
ALL_ENTRIES = ["M1.1", "M1.2", "M2.1", "M3.1", "M3.2", "M4.1"]


def entry_ids(entries: list[QueueEntry]) -> list[str]:
    return [e.id for e in entries]


class QueueQuerySuite:
    """
    L{IQueueStore.query_entries} and L{IQueueStore.count_entries}: the admin API's filtered,
    paged queue listing (model: storage._admin_memory.entry_matches).
    """

    @pytest.fixture
    def queue(self, store: Any, set_entry_state: SetEntryState) -> Any:
        deliver(store, "M1", (ALICE, CAROL), sender="Alice.Sender@Example.ORG", received_at=1000.0)
        deliver(store, "M2", (BOB,), sender="bob_100%@example.org", received_at=2000.0)
        deliver(store, "M3", (JORG, ERIN), sender="JÖRG@bücher.example", received_at=3000.0)
        deliver(store, "M4", (DAVE,), sender="x@example.org", received_at=4000.0)
        set_entry_state(store, "M1.2", DELIVERED)
        set_entry_state(store, "M2.1", HELD)
        set_entry_state(store, "M3.2", HELD)
        return store

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IQueueStore, store)
        assert result_of(store.query_entries(QueueFilter())) == []
        assert result_of(store.count_entries(QueueFilter())) == 0

    def test_no_filter_lists_everything_in_arrival_order(self, queue: Any) -> None:
        found = result_of(queue.query_entries(QueueFilter()))
        assert found == result_of(queue.list_entries())
        assert entry_ids(found) == ALL_ENTRIES
        assert result_of(queue.count_entries(QueueFilter())) == 6

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (QueueFilter(domains=("example.com",)), ["M1.1", "M2.1"]),
            # Several domains: merged in arrival order, not one domain after the other.
            (QueueFilter(domains=("example.net", "example.com")), ["M1.1", "M1.2", "M2.1", "M4.1"]),
            (QueueFilter(domains=("example.com", "example.com")), ["M1.1", "M2.1"]),
            (QueueFilter(domains=("xn--bcher-kva.example",)), ["M3.1"]),
            (QueueFilter(domains=("example.org",)), []),
            # An empty tuple is a tenant with no domains: nothing, never everything.
            (QueueFilter(domains=()), []),
            (QueueFilter(states=(QUEUED,)), ["M1.1", "M3.1", "M4.1"]),
            (QueueFilter(states=(HELD, DELIVERED)), ["M1.2", "M2.1", "M3.2"]),
            (QueueFilter(states=(BOUNCED,)), []),
            (QueueFilter(states=()), []),
            (
                QueueFilter(domains=("example.com", "example.net"), states=(QUEUED, HELD)),
                ["M1.1", "M2.1", "M4.1"],
            ),
            (QueueFilter(domains=("a.example",), states=(QUEUED,)), []),
            # Sender and recipient: case-insensitive substrings, non-ASCII letters included.
            (QueueFilter(sender="alice.sender@example.org"), ["M1.1", "M1.2"]),
            (QueueFilter(sender="EXAMPLE.org"), ["M1.1", "M1.2", "M2.1", "M4.1"]),
            (QueueFilter(sender="jörg"), ["M3.1", "M3.2"]),
            (QueueFilter(sender="BÜCHER"), ["M3.1", "M3.2"]),
            (QueueFilter(sender=""), ALL_ENTRIES),
            # "%" and "_" are letters here, not LIKE's wildcards.
            (QueueFilter(sender="%"), ["M2.1"]),
            (QueueFilter(sender="_"), ["M2.1"]),
            (QueueFilter(sender="x_example"), []),
            (QueueFilter(sender="x@%"), []),
            (QueueFilter(recipient="CAROL@"), ["M1.2"]),
            (QueueFilter(recipient="example.net"), ["M1.2", "M4.1"]),
            (QueueFilter(recipient="jöRG@bü"), ["M3.1"]),
            (QueueFilter(recipient="%"), []),
            (QueueFilter(recipient="_"), []),
            # Received strictly before.
            (QueueFilter(received_before=2000.0), ["M1.1", "M1.2"]),
            (QueueFilter(received_before=2000.5), ["M1.1", "M1.2", "M2.1"]),
            (QueueFilter(received_before=1000.0), []),
            # Every condition must hold.
            (QueueFilter(domains=("example.net",), sender="example.org"), ["M1.2", "M4.1"]),
            (
                QueueFilter(
                    domains=("example.com", "example.net", "a.example"),
                    states=(HELD, QUEUED),
                    sender="example",
                    recipient="e",
                    received_before=3500.0,
                ),
                ["M1.1", "M2.1", "M3.2"],
            ),
        ],
    )
    def test_filters(self, queue: Any, query: QueueFilter, expected: list[str]) -> None:
        found = result_of(queue.query_entries(query))
        assert entry_ids(found) == expected
        assert found == [entry(queue, entry_id) for entry_id in expected]
        assert result_of(queue.count_entries(query)) == len(expected)

    def test_a_page_starts_after_seq(self, queue: Any) -> None:
        seqs = {e.id: e.seq for e in result_of(queue.list_entries())}
        after = seqs["M2.1"]
        assert entry_ids(result_of(queue.query_entries(QueueFilter(), after))) == [
            "M3.1",
            "M3.2",
            "M4.1",
        ]
        query = QueueFilter(domains=("example.com", "example.net"))
        assert entry_ids(result_of(queue.query_entries(query, after_seq=after))) == ["M4.1"]
        assert result_of(queue.query_entries(QueueFilter(), seqs["M4.1"])) == []
        # count_entries counts the whole selection, not a page.
        assert result_of(queue.count_entries(query)) == 4

    def test_limit(self, queue: Any) -> None:
        assert entry_ids(result_of(queue.query_entries(QueueFilter(), limit=2))) == ALL_ENTRIES[:2]
        two_domains = QueueFilter(domains=("example.net", "example.com"))
        assert entry_ids(result_of(queue.query_entries(two_domains, limit=3))) == [
            "M1.1",
            "M1.2",
            "M2.1",
        ]
        assert result_of(queue.query_entries(QueueFilter(), limit=0)) == []
        assert result_of(queue.query_entries(QueueFilter(), limit=-1)) == []

    @pytest.mark.parametrize(
        "query",
        [
            QueueFilter(),
            QueueFilter(domains=("a.example", "example.net", "example.com")),
            QueueFilter(domains=("example.net",), states=(QUEUED, HELD)),
            QueueFilter(states=(HELD,)),
            QueueFilter(sender="S7"),
        ],
        ids=["all", "three-domains", "domain-and-states", "held", "sender"],
    )
    def test_pages_cover_the_selection_once_in_order(
        self, store: Any, set_entry_state: SetEntryState, query: QueueFilter
    ) -> None:
        recipients = (ALICE, CAROL, ERIN, DAVE)
        for n in range(30):
            deliver(
                store,
                f"P{n}",
                recipients[n % 4 : n % 4 + 1 + n % 2],
                sender=f"s{n % 10}@example.org",
                received_at=float(n),
            )
        everything = result_of(store.list_entries())
        for n, queued in enumerate(everything):
            if n % 3 == 0:
                set_entry_state(store, queued.id, HELD)
        expected = [e.id for e in result_of(store.list_entries()) if entry_matches(query, e)]
        assert expected  # the selection is not empty

        pages: list[list[str]] = []
        after = 0
        while True:
            page = result_of(store.query_entries(query, after_seq=after, limit=4))
            if not page:
                break
            assert len(page) <= 4
            pages.append(entry_ids(page))
            after = page[-1].seq
        assert [entry_id for page in pages for entry_id in page] == expected
        assert all(len(page) == 4 for page in pages[:-1])
        assert result_of(store.count_entries(query)) == len(expected)

    def test_the_default_limit_is_100(self, store: Any) -> None:
        deliver(
            store, "M1", tuple(Delivery(f"u{n}@example.com", "example.com") for n in range(105))
        )
        page = result_of(store.query_entries(QueueFilter(domains=("example.com",))))
        assert entry_ids(page) == [f"M1.{n}" for n in range(1, 101)]
        assert result_of(store.count_entries(QueueFilter(domains=("example.com",)))) == 105


class EventQuerySuite:
    """
    L{IEventStore.query_events}: the admin API's filtered event listing, newest first, paged by
    id (model: storage._admin_memory.event_matches).
    """

    @pytest.fixture
    def events(self, store: Any, clock: task.Clock) -> list[Event]:
        recorded: list[Event] = []
        for kind, domain in [
            ("domain.added", "a.example"),
            ("queue.held", "a.example"),
            ("queue.released", "b.example"),
            ("startup", None),
            ("queue", "a.example"),
            ("queued.late", "b.example"),
            ("relay_ok.done", "c.example"),
            ("relayXok.done", "c.example"),
            ("queue.held.bulk", None),
            ("domain.removed", "b.example"),
        ]:
            clock.advance(10)
            recorded.append(
                result_of(
                    store.record_event(kind, f"{kind} {domain}", domain, {"n": len(recorded)})
                )
            )
        return recorded  # at 10, 20, ..., 100

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IEventStore, store)
        assert result_of(store.query_events(EventFilter())) == []

    def test_newest_first(self, store: Any, events: list[Event]) -> None:
        assert result_of(store.query_events(EventFilter())) == events[::-1]
        assert result_of(store.query_events(EventFilter(), limit=3)) == events[:-4:-1]
        assert result_of(store.query_events(EventFilter(), limit=0)) == []
        assert result_of(store.query_events(EventFilter(), limit=-1)) == []

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (EventFilter(domains=("a.example",)), [4, 1, 0]),
            (EventFilter(domains=("b.example", "a.example")), [9, 5, 4, 2, 1, 0]),
            (EventFilter(domains=("a.example", "a.example")), [4, 1, 0]),
            (EventFilter(domains=("d.example",)), []),
            # A tenant with no domains sees nothing, not even the events without a domain.
            (EventFilter(domains=()), []),
            (EventFilter(kinds=("queue.held",)), [1]),
            (EventFilter(kinds=("queue",)), [4]),
            (EventFilter(kinds=("queue.",)), [8, 2, 1]),
            (EventFilter(kinds=("queue.", "startup")), [8, 3, 2, 1]),
            (EventFilter(kinds=("domain.", "queue.held")), [9, 1, 0]),
            # "_" in a prefix is a letter, not LIKE's wildcard.
            (EventFilter(kinds=("relay_ok.",)), [6]),
            (EventFilter(kinds=("nothing.",)), []),
            (EventFilter(kinds=()), []),
            (EventFilter(since=80.0), [9, 8, 7]),
            (EventFilter(since=80.5), [9, 8]),
            (EventFilter(since=1000.0), []),
            (EventFilter(domains=("a.example", "b.example"), kinds=("queue.",), since=30.0), [2]),
        ],
    )
    def test_filters(
        self, store: Any, events: list[Event], query: EventFilter, expected: list[int]
    ) -> None:
        assert result_of(store.query_events(query)) == [events[n] for n in expected]

    def test_pages_before_an_id(self, store: Any, events: list[Event]) -> None:
        ids = [e.id for e in events]
        assert result_of(store.query_events(EventFilter(), before_id=ids[3])) == events[2::-1]
        assert result_of(store.query_events(EventFilter(), before_id=ids[0])) == []
        two = EventFilter(domains=("b.example", "a.example"))
        assert result_of(store.query_events(two, before_id=ids[5], limit=2)) == [
            events[4],
            events[2],
        ]

    @pytest.mark.parametrize(
        "query",
        [
            EventFilter(),
            EventFilter(domains=("c.example", "a.example")),
            EventFilter(kinds=("k1",)),
        ],
        ids=["all", "two-domains", "kind"],
    )
    def test_pages_cover_the_selection_once_newest_first(
        self, store: Any, query: EventFilter
    ) -> None:
        domains = ("a.example", "b.example", "c.example", None)
        for n in range(40):
            result_of(store.record_event(f"k{n % 3}", f"m{n}", domains[n % 4]))
        everything = result_of(store.query_events(EventFilter(), limit=1000))
        expected = [e for e in everything if event_matches(query, e)]
        assert expected

        found: list[Event] = []
        before: int | None = None
        while True:
            page = result_of(store.query_events(query, before_id=before, limit=3))
            if not page:
                break
            assert len(page) <= 3
            found += page
            before = page[-1].id
        assert found == expected


# -- Administration (#13): ITenantStore, IAdminStore, IAuditStore --------------------------------

BRANDING = Branding(
    product_name="Acme Continuity",
    logo_url="https://acme.example/logo.svg",
    primary_color="#112233",
    accent_color="#ffcc00",
    support_email="help@acme.example",
    support_url="https://acme.example/help",
)


def refused(d: Any, error: type[NotFound | AlreadyExists], kind: str, name: str) -> None:
    """``d`` failed with ``error``, naming the ``kind`` and ``name`` of what it was about."""
    value = fails_with(d, error)
    assert isinstance(value, error)
    assert (value.kind, value.name) == (kind, name)


class TenantStoreSuite:
    """L{ITenantStore}: resellers (with their branding) and customers, unique names."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(ITenantStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.list_resellers()) == []
        assert result_of(store.get_reseller("acme")) is None
        assert result_of(store.list_customers()) == []
        assert result_of(store.list_customers("")) == []
        assert result_of(store.get_customer("shop")) is None

    def test_add_reseller_stamps_a_zero_time_and_round_trips(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(1000)
        added = result_of(store.add_reseller(Reseller("acme", BRANDING)))
        assert added == Reseller("acme", BRANDING, created_at=1000.0)
        assert result_of(store.get_reseller("acme")) == added
        assert result_of(store.list_resellers()) == [added]
        given = Reseller("bare", created_at=5.0)
        assert result_of(store.add_reseller(given)) == given
        assert result_of(store.get_reseller("bare")) == given

    def test_resellers_are_sorted_by_name(self, store: Any) -> None:
        for name in ("zeta", "acme", "m.i-d_dle"):
            result_of(store.add_reseller(Reseller(name)))
        assert [r.name for r in result_of(store.list_resellers())] == ["acme", "m.i-d_dle", "zeta"]

    def test_adding_a_reseller_twice_fails_and_keeps_the_first(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(10)
        first = result_of(store.add_reseller(Reseller("acme", BRANDING)))
        refused(store.add_reseller(Reseller("acme")), AlreadyExists, "reseller", "acme")
        assert result_of(store.list_resellers()) == [first]

    def test_update_reseller_replaces_branding_and_keeps_created_at(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(10)
        result_of(store.add_reseller(Reseller("acme", BRANDING)))
        clock.advance(10)
        changed = Reseller("acme", Branding(product_name="New"), created_at=999.0)
        expected = Reseller("acme", Branding(product_name="New"), created_at=10.0)
        assert result_of(store.update_reseller(changed)) == expected
        assert result_of(store.get_reseller("acme")) == expected
        refused(store.update_reseller(Reseller("nobody")), NotFound, "reseller", "nobody")
        assert result_of(store.get_reseller("nobody")) is None

    def test_remove_reseller(self, store: Any) -> None:
        result_of(store.add_reseller(Reseller("acme")))
        result_of(store.add_reseller(Reseller("other")))
        assert result_of(store.remove_reseller("acme")) is None
        assert result_of(store.get_reseller("acme")) is None
        assert [r.name for r in result_of(store.list_resellers())] == ["other"]
        refused(store.remove_reseller("acme"), NotFound, "reseller", "acme")
        # The name is free again.
        result_of(store.add_reseller(Reseller("acme")))

    def test_customers_round_trip_sorted_and_by_reseller(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(1000)
        shop = result_of(store.add_customer(Customer("shop", "acme")))
        assert shop == Customer("shop", "acme", created_at=1000.0)
        own = result_of(store.add_customer(Customer("own", created_at=3.0)))
        assert own == Customer("own", "", created_at=3.0)
        bakery = result_of(store.add_customer(Customer("bakery", "acme")))
        other = result_of(store.add_customer(Customer("garage", "other")))
        assert result_of(store.get_customer("shop")) == shop
        assert result_of(store.list_customers()) == [bakery, other, own, shop]
        assert result_of(store.list_customers("acme")) == [bakery, shop]
        # "" is the operator's own customers, not "every customer".
        assert result_of(store.list_customers("")) == [own]
        assert result_of(store.list_customers("nobody")) == []

    def test_adding_a_customer_twice_fails(self, store: Any) -> None:
        first = result_of(store.add_customer(Customer("shop", "acme", created_at=1.0)))
        refused(store.add_customer(Customer("shop", "other")), AlreadyExists, "customer", "shop")
        assert result_of(store.list_customers()) == [first]

    def test_remove_customer(self, store: Any) -> None:
        result_of(store.add_customer(Customer("shop", "acme")))
        result_of(store.add_customer(Customer("bakery", "acme")))
        assert result_of(store.remove_customer("shop")) is None
        assert [c.name for c in result_of(store.list_customers())] == ["bakery"]
        refused(store.remove_customer("shop"), NotFound, "customer", "shop")

    def test_resellers_and_customers_are_separate_names(self, store: Any) -> None:
        result_of(store.add_reseller(Reseller("acme")))
        result_of(store.add_customer(Customer("acme")))
        result_of(store.remove_reseller("acme"))
        assert result_of(store.get_customer("acme")) == Customer("acme", created_at=0.0)

    # -- host names and logos (#14)

    def test_host_names_round_trip_and_find_their_reseller(self, store: Any) -> None:
        hosted = Branding(product_name="Acme", hostnames=("panel.acme.test", "webmail.acme.test"))
        added = result_of(store.add_reseller(Reseller("acme", hosted, created_at=1.0)))
        assert result_of(store.get_reseller("acme")) == added
        result_of(store.add_reseller(Reseller("other", created_at=2.0)))
        assert result_of(store.list_resellers())[0].branding.hostnames == hosted.hostnames
        assert result_of(store.reseller_for_hostname("webmail.acme.test")) == added
        assert result_of(store.reseller_for_hostname("panel.acme.test")) == added
        assert result_of(store.reseller_for_hostname("mail.acme.test")) is None
        # Replaced as a whole by an update: one dropped, one added.
        moved = Reseller("acme", Branding(hostnames=("mail.acme.test",)), created_at=1.0)
        assert result_of(store.update_reseller(moved)) == moved
        assert result_of(store.reseller_for_hostname("webmail.acme.test")) is None
        assert result_of(store.reseller_for_hostname("mail.acme.test")) == moved

    def test_a_host_name_belongs_to_one_reseller(self, store: Any) -> None:
        mine = Reseller("acme", Branding(hostnames=("webmail.acme.test",)), created_at=1.0)
        result_of(store.add_reseller(mine))
        taken = Reseller("other", Branding(hostnames=("a.other.test", "webmail.acme.test")))
        refused(store.add_reseller(taken), AlreadyExists, "hostname", "webmail.acme.test")
        assert result_of(store.get_reseller("other")) is None
        assert result_of(store.reseller_for_hostname("a.other.test")) is None
        result_of(store.add_reseller(Reseller("other", created_at=2.0)))
        refused(store.update_reseller(taken), AlreadyExists, "hostname", "webmail.acme.test")
        assert result_of(store.get_reseller("other")) == Reseller("other", created_at=2.0)
        # Removing a reseller frees its host names.
        result_of(store.remove_reseller("acme"))
        assert result_of(store.reseller_for_hostname("webmail.acme.test")) is None
        again = result_of(store.update_reseller(taken))
        assert again.branding.hostnames == taken.branding.hostnames

    def test_a_logo_is_stored_replaced_cleared_and_goes_with_its_reseller(self, store: Any) -> None:
        assert result_of(store.get_reseller_logo("acme")) is None
        refused(
            store.set_reseller_logo("acme", ResellerLogo(b"x", "image/png")),
            NotFound, "reseller", "acme",
        )  # fmt: skip
        refused(store.clear_reseller_logo("acme"), NotFound, "reseller", "acme")
        result_of(store.add_reseller(Reseller("acme")))
        png = ResellerLogo(b"\x89PNG\r\n\x1a\n\x00\xff" * 100, "image/png", 10.0)
        assert result_of(store.set_reseller_logo("acme", png)) is None
        assert result_of(store.get_reseller_logo("acme")) == png
        gif = ResellerLogo(b"GIF89a", "image/gif", 20.0)
        result_of(store.set_reseller_logo("acme", gif))
        assert result_of(store.get_reseller_logo("acme")) == gif
        assert result_of(store.clear_reseller_logo("acme")) is True
        assert result_of(store.clear_reseller_logo("acme")) is False
        assert result_of(store.get_reseller_logo("acme")) is None
        result_of(store.set_reseller_logo("acme", gif))
        result_of(store.remove_reseller("acme"))
        result_of(store.add_reseller(Reseller("acme")))
        assert result_of(store.get_reseller_logo("acme")) is None


# pyotp's documentation example, not anyone's secret.
TOTP_SEED = "JBSWY3DPEHPK3PXP"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def admin_account(name: str = "alice", **kwargs: Any) -> AdminAccount:
    fields: dict[str, Any] = {"role": "operator", "password_hash": HASH}
    fields.update(kwargs)
    return AdminAccount(name, **fields)


def api_key(key_id: str = "k1", admin: str = "alice", **kwargs: Any) -> ApiKey:
    fields: dict[str, Any] = {"scope": "read", "secret_hash": "ab" * 32}
    fields.update(kwargs)
    return ApiKey(key_id, admin, **fields)


class AdminStoreSuite:
    """L{IAdminStore}: admin accounts and their API keys; an account takes its keys with it."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IAdminStore, store)

    def test_starts_empty(self, store: Any) -> None:
        assert result_of(store.list_admins()) == []
        assert result_of(store.get_admin("alice")) is None
        assert result_of(store.list_api_keys()) == []
        assert result_of(store.get_api_key("k1")) is None

    def test_every_account_field_round_trips(self, store: Any, clock: task.Clock) -> None:
        clock.advance(1000)
        full = admin_account(
            "carol",
            role="customer",
            reseller="acme",
            customer="shop",
            totp_secret=TOTP_SEED,
            recovery_codes=("h1", "h2", "h3"),
        )
        added = result_of(store.add_admin(full))
        assert added == replace(full, created_at=1000.0, updated_at=1000.0)
        assert result_of(store.get_admin("carol")) == added
        plain = admin_account(
            "bob", role="reseller", reseller="acme", created_at=5.0, updated_at=6.0
        )
        assert result_of(store.add_admin(plain)) == plain
        assert result_of(store.get_admin("bob")) == plain
        assert result_of(store.list_admins()) == [plain, added]  # by name

    def test_adding_an_account_twice_fails(self, store: Any) -> None:
        first = result_of(store.add_admin(admin_account(created_at=1.0, updated_at=1.0)))
        refused(store.add_admin(admin_account(role="reseller")), AlreadyExists, "admin", "alice")
        assert result_of(store.list_admins()) == [first]

    def test_update_replaces_the_account_and_stamps_updated_at(
        self, store: Any, clock: task.Clock
    ) -> None:
        clock.advance(100)
        result_of(store.add_admin(admin_account(totp_secret=TOTP_SEED, recovery_codes=("a", "b"))))
        clock.advance(50)
        changed = admin_account(
            password_hash=HASH + "x", recovery_codes=("b",), created_at=1.0, updated_at=2.0
        )
        expected = replace(changed, created_at=100.0, updated_at=150.0)
        assert result_of(store.update_admin(changed)) == expected
        assert result_of(store.get_admin("alice")) == expected
        assert expected.totp_secret is None and expected.recovery_codes == ("b",)
        refused(store.update_admin(admin_account("nobody")), NotFound, "admin", "nobody")
        assert result_of(store.get_admin("nobody")) is None

    def test_every_key_field_round_trips(self, store: Any, clock: task.Clock) -> None:
        result_of(store.add_admin(admin_account()))
        clock.advance(1000)
        key = api_key(
            scope="operate",
            expires_at=5000.5,
            allow_ip=("192.0.2.0/24", "2001:db8::/32"),
            last_used_at=999.0,
        )
        added = result_of(store.add_api_key(key))
        assert added == replace(key, created_at=1000.0)
        assert result_of(store.get_api_key("k1")) == added
        given = api_key("k2", scope="admin", created_at=7.0)
        assert result_of(store.add_api_key(given)) == given
        assert result_of(store.get_api_key("k2")) == given
        assert (given.expires_at, given.allow_ip, given.last_used_at) == (None, (), None)

    def test_keys_are_listed_by_creation_time_and_by_admin(
        self, store: Any, clock: task.Clock
    ) -> None:
        result_of(store.add_admin(admin_account("alice")))
        result_of(store.add_admin(admin_account("bob")))
        clock.advance(100)
        late = result_of(store.add_api_key(api_key("a-late", "alice")))
        early = result_of(store.add_api_key(api_key("z-early", "bob", created_at=50.0)))
        same1 = result_of(store.add_api_key(api_key("m-same", "alice", created_at=100.0)))
        same2 = result_of(store.add_api_key(api_key("b-same", "bob", created_at=100.0)))
        # Oldest first; keys made in the same tick in the order they were added.
        assert result_of(store.list_api_keys()) == [early, late, same1, same2]
        assert result_of(store.list_api_keys("alice")) == [late, same1]
        assert result_of(store.list_api_keys("bob")) == [early, same2]
        assert result_of(store.list_api_keys("carol")) == []

    def test_adding_a_key_twice_or_for_nobody_fails(self, store: Any) -> None:
        result_of(store.add_admin(admin_account()))
        first = result_of(store.add_api_key(api_key(created_at=1.0)))
        refused(store.add_api_key(api_key(scope="admin")), AlreadyExists, "api key", "k1")
        refused(store.add_api_key(api_key("k2", "nobody")), NotFound, "admin", "nobody")
        assert result_of(store.list_api_keys()) == [first]

    def test_remove_key(self, store: Any) -> None:
        result_of(store.add_admin(admin_account()))
        result_of(store.add_api_key(api_key("k1")))
        kept = result_of(store.add_api_key(api_key("k2")))
        assert result_of(store.remove_api_key("k1")) is None
        assert result_of(store.get_api_key("k1")) is None
        assert result_of(store.list_api_keys()) == [kept]
        refused(store.remove_api_key("k1"), NotFound, "api key", "k1")

    def test_removing_an_account_removes_its_keys_and_only_its_keys(self, store: Any) -> None:
        result_of(store.add_admin(admin_account("alice")))
        result_of(store.add_admin(admin_account("bob")))
        result_of(store.add_api_key(api_key("a1", "alice")))
        result_of(store.add_api_key(api_key("a2", "alice")))
        bobs = result_of(store.add_api_key(api_key("b1", "bob")))
        assert result_of(store.remove_admin("alice")) is None
        assert result_of(store.get_admin("alice")) is None
        assert [a.name for a in result_of(store.list_admins())] == ["bob"]
        assert result_of(store.get_api_key("a1")) is None
        assert result_of(store.list_api_keys()) == [bobs]
        refused(store.remove_admin("alice"), NotFound, "admin", "alice")
        # A new account of the same name inherits nothing.
        result_of(store.add_admin(admin_account("alice")))
        assert result_of(store.list_api_keys("alice")) == []

    def test_touch_records_the_last_use(self, store: Any) -> None:
        result_of(store.add_admin(admin_account()))
        key = result_of(store.add_api_key(api_key(created_at=1.0)))
        assert result_of(store.touch_api_key("k1", 1234.5)) is None
        assert result_of(store.get_api_key("k1")) == replace(key, last_used_at=1234.5)
        result_of(store.touch_api_key("k1", 1300.0))
        assert result_of(store.get_api_key("k1")).last_used_at == 1300.0
        assert result_of(store.touch_api_key("unknown", 1.0)) is None
        assert result_of(store.list_api_keys()) == [replace(key, last_used_at=1300.0)]


def audit_record(action: str = "domain.add", **kwargs: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "id": 0,
        "at": 1000.0,
        "actor": "alice",
        "via": "api",
        "source": "192.0.2.1",
        "target": "example.com",
    }
    fields.update(kwargs)
    return AuditRecord(action=action, **fields)


class AuditStoreSuite:
    """L{IAuditStore}: an append-only log, read newest first by tenant, paged by id."""

    def test_provides_interface(self, store: Any) -> None:
        assert verifyObject(IAuditStore, store)
        assert result_of(store.list_audit()) == []

    def test_record_round_trips_with_ids_from_one(self, store: Any) -> None:
        detail = {"relay": "mx.example.com:25", "nested": {"list": [1, "two", None, True, 2.5]}}
        record = audit_record(
            id=99, reseller="acme", customer="shop", detail=detail, actor="cli:root", via="cli"
        )
        first = result_of(store.record_audit(record))
        assert first == replace(record, id=1)  # the given id is ignored
        second = result_of(store.record_audit(audit_record("domain.remove")))
        assert second.id == 2
        assert (second.reseller, second.customer, second.detail) == ("", "", {})
        assert result_of(store.list_audit()) == [second, first]

    def test_records_do_not_share_state_with_callers(self, store: Any) -> None:
        detail: dict[str, Any] = {"ids": [1]}
        recorded = result_of(store.record_audit(audit_record(detail=detail)))
        detail["ids"].append(2)
        recorded.detail["ids"].append(3)
        result_of(store.list_audit())[0].detail["ids"].append(4)
        assert result_of(store.list_audit())[0].detail == {"ids": [1]}

    def test_detail_that_is_not_json_fails(self, store: Any) -> None:
        fails_with(store.record_audit(audit_record(detail={"when": object()})), StorageError)
        assert result_of(store.list_audit()) == []

    @pytest.fixture
    def log(self, store: Any) -> list[AuditRecord]:
        tenants = [("", ""), ("acme", ""), ("acme", "shop"), ("other", "garage"), ("", "own")]
        return [
            result_of(
                store.record_audit(
                    audit_record(
                        f"a{n}", at=float(n), reseller=tenants[n % 5][0], customer=tenants[n % 5][1]
                    )
                )
            )
            for n in range(20)
        ]

    @pytest.mark.parametrize(
        ("reseller", "customer", "selected"),
        [
            (None, None, lambda r: True),
            ("acme", None, lambda r: r.reseller == "acme"),
            ("", None, lambda r: r.reseller == ""),
            (None, "shop", lambda r: r.customer == "shop"),
            (None, "", lambda r: r.customer == ""),
            ("acme", "shop", lambda r: r.reseller == "acme" and r.customer == "shop"),
            ("acme", "garage", lambda r: False),
            ("nobody", None, lambda r: False),
        ],
    )
    def test_tenant_filters_newest_first(
        self,
        store: Any,
        log: list[AuditRecord],
        reseller: str | None,
        customer: str | None,
        selected: Callable[[AuditRecord], bool],
    ) -> None:
        expected = [r for r in reversed(log) if selected(r)]
        found = result_of(store.list_audit(reseller=reseller, customer=customer))
        assert found == expected

        paged: list[AuditRecord] = []
        before: int | None = None
        while page := result_of(
            store.list_audit(reseller=reseller, customer=customer, before_id=before, limit=3)
        ):
            assert len(page) <= 3
            paged += page
            before = page[-1].id
        assert paged == expected

    def test_limit_and_before_id(self, store: Any, log: list[AuditRecord]) -> None:
        assert result_of(store.list_audit(limit=2)) == [log[19], log[18]]
        assert result_of(store.list_audit(before_id=log[5].id, limit=2)) == [log[4], log[3]]
        assert result_of(store.list_audit(before_id=log[0].id)) == []
        assert result_of(store.list_audit(before_id=1000)) == log[::-1]
        assert result_of(store.list_audit(limit=0)) == []
        assert result_of(store.list_audit(limit=-1)) == []

    def test_the_default_limit_is_100(self, store: Any) -> None:
        for n in range(105):
            result_of(store.record_audit(audit_record(f"a{n}")))
        found = result_of(store.list_audit())
        assert len(found) == 100
        assert (found[0].action, found[-1].action) == ("a104", "a5")
