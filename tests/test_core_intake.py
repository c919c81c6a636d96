"""
Intake policy pieces: queue ids, the Received header, Message-ID extraction, recipients, and what
a commit in delivery mode ``both`` puts into users' mailboxes.
"""

from __future__ import annotations

import io

from twisted.internet.task import Clock

from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import (
    IntakePolicy,
    SessionInfo,
    header_message_id,
    new_queue_id,
    received_header,
)
from strata_twisted.errors import MailError, RelayDenied, UnknownUser
from strata_twisted.model import Domain, MailMessage, RelayTarget, UserCredential
from strata_twisted.proto.mime import index_bytes, index_message, index_to_json
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of


def test_queue_ids_are_unique_and_sort_by_time() -> None:
    clock = Clock()
    ids = []
    for i in range(50):
        clock.rightNow = 1_700_000_000 + i / 100
        ids.append(new_queue_id(clock))
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    assert all(len(i) == 16 and i.isalnum() for i in ids)
    same_ms = {new_queue_id(clock) for _ in range(1000)}
    assert len(same_ms) == 1000


def test_received_header_is_rfc5321_trace_with_rfc3848_keyword() -> None:
    header = received_header(
        hostname="mx.strata.test",
        queue_id="ABC",
        helo="mail.sender.test",
        client_address="2001:db8::1",
        recipients=("u@example.test",),
        tls=True,
        smtputf8=False,
        esmtp=True,
        when=0,
    )
    assert header == (
        b"Received: from mail.sender.test ([IPv6:2001:db8::1])\r\n"
        b"\tby mx.strata.test (Strata) with ESMTPS id ABC\r\n"
        b"\tfor <u@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )


def test_received_header_hides_the_recipient_list_and_cleans_client_text() -> None:
    header = received_header(
        hostname="mx",
        queue_id="Q",
        helo="evil\r\nX-Injected: 1",
        client_address="192.0.2.1",
        recipients=("a@x.test", "b@x.test"),
        tls=False,
        smtputf8=True,
        esmtp=True,
        when=0,
    )
    assert b"X-Injected: 1\r\n" not in header
    assert b"a@x.test" not in header
    assert b"with UTF8SMTP id Q;\r\n" in header
    assert header.count(b"\r\n") == 3


def test_message_id_is_read_from_the_header_section() -> None:
    assert header_message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b.test>\r\n\r\n") == "<a@b.test>"
    assert header_message_id(b"Subject: no id\r\n\r\n") is None
    assert header_message_id(b"\xff\xfe garbage\r\n\r\n") is None


HASH = "{SHA512-CRYPT}$6$saltsalt$" + "a" * 86  # a well-formed hash (never checked here)


def policy_with_users(**domain: object) -> tuple[IntakePolicy, MemoryStore, DomainCache]:
    clock = Clock()
    store = MemoryStore(clock, indexer=index_bytes)
    protected = Domain("example.test", RelayTarget("10.0.0.1"), **domain)  # type: ignore[arg-type]
    result_of(store.add_domain(protected))
    result_of(store.add_domain(Domain("open.test", RelayTarget("10.0.0.2"))))
    cache = DomainCache(clock, store, 1.0, users=store)
    result_of(cache.refresh())
    return IntakePolicy(clock, cache, store, "strata.test"), store, cache


def refused(policy: IntakePolicy, recipient: str) -> MailError | None:
    try:
        policy.check_recipient(recipient)
    except MailError as e:
        return e
    return None


def test_a_domain_with_users_refuses_unknown_addresses_with_5_1_1() -> None:
    policy, store, cache = policy_with_users()
    assert refused(policy, "anyone@example.test") is None  # no user list yet: all accepted
    users = [UserCredential("ana@example.test", HASH), UserCredential("bob@example.test", HASH)]
    result_of(store.replace_users("example.test", users))
    result_of(cache.refresh())  # the server polls; a change of users is seen like one of domains
    assert refused(policy, "ana@example.test") is None
    assert refused(policy, "Bob@EXAMPLE.test") is None  # addresses compare canonically
    error = refused(policy, "carol@example.test")
    assert isinstance(error, UnknownUser)
    assert (error.code, error.enhanced) == (550, "5.1.1")
    assert refused(policy, "carol@open.test") is None  # a domain without a list accepts all
    assert isinstance(refused(policy, "u@other.test"), RelayDenied)
    result_of(store.remove_user("bob@example.test"))
    result_of(cache.refresh())
    assert isinstance(refused(policy, "bob@example.test"), UnknownUser)


def test_accept_unknown_keeps_accepting_addresses_not_on_the_list() -> None:
    policy, store, cache = policy_with_users(accept_unknown=True)
    result_of(store.replace_users("example.test", [UserCredential("ana@example.test", HASH)]))
    result_of(cache.refresh())
    assert refused(policy, "carol@example.test") is None


def test_mode_both_delivers_into_the_recipients_inbox() -> None:
    policy, store, cache = policy_with_users(mode="both")  # example.test: both; open.test: relay
    clock = Clock()
    clock.rightNow = 1_700_000_000.0
    policy = IntakePolicy(clock, cache, store, "strata.test")
    body = b"From: x@sender.test\r\nSubject: during the outage\r\n\r\nhello\r\n"
    recipients = ("Ana@example.test", "bob@example.test", "carol@open.test")
    transaction = policy.begin(
        SessionInfo("192.0.2.1"), "x@sender.test", recipients, body_8bitmime=False, smtputf8=False
    )
    transaction.feed(body)
    stored = result_of(transaction.finish())
    full = result_of(store.read_body(stored.id))
    assert full.endswith(body) and full.startswith(b"Received: ")  # what IMAP will serve
    for user in ("ana@example.test", "bob@example.test"):
        assert result_of(store.list_messages(user, "INBOX")) == [
            MailMessage(1, stored.id, frozenset(), 1_700_000_000.0, len(full), 2)
        ]
        assert result_of(store.mime_indexes(user, "INBOX", [1])) == {
            1: index_to_json(index_message(io.BytesIO(full), len(full)))
        }
    # mode relay: queued for the primary only.
    assert result_of(store.list_mailboxes("carol@open.test")) == []
    assert [e.recipient for e in result_of(store.entries_for_message(stored.id))] == list(
        recipients
    )
