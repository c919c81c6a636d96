"""
Intake policy pieces: queue ids, the Received header, Message-ID extraction, recipients, and what
a commit in delivery mode ``both`` puts into users' mailboxes.
"""

from __future__ import annotations

import io

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import (
    POSTMASTER_UNSET,
    IntakePolicy,
    Recipients,
    SessionInfo,
    header_message_id,
    new_queue_id,
    received_header,
    route_held_postmaster,
    store_generated,
)
from strata_twisted.errors import MailError, RelayDenied, UnknownUser
from strata_twisted.model import (
    HELD,
    POSTMASTER_HOLD,
    QUEUED,
    Delivery,
    Domain,
    MailMessage,
    RelayTarget,
    UserCredential,
    recipient_key,
    unique_recipients,
)
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


# -- Postmaster (issue #11, RFC 5321 §4.5.1) -----------------------------------------------------


def commit(policy: IntakePolicy, *recipients: str) -> str:
    """Receive a small message for ``recipients`` through ``policy``; its queue id."""
    transaction = policy.begin(
        SessionInfo("192.0.2.1"), "x@sender.test", recipients, body_8bitmime=False, smtputf8=False
    )
    transaction.feed(b"Subject: hi\r\n\r\nhello\r\n")
    return result_of(transaction.finish()).id


def with_users(cache: DomainCache, store: MemoryStore, *addresses: str) -> None:
    users = [UserCredential(address, HASH) for address in addresses]
    result_of(store.replace_users("example.test", users))
    result_of(cache.refresh())


def test_postmaster_of_a_protected_domain_is_accepted_whatever_its_user_list_says() -> None:
    policy, store, cache = policy_with_users()
    with_users(cache, store, "ana@example.test")
    assert isinstance(refused(policy, "carol@example.test"), UnknownUser)
    for spelling in ("postmaster@example.test", "PostMaster@EXAMPLE.test", "Postmaster"):
        assert refused(policy, spelling) is None
    assert isinstance(refused(policy, "postmaster@other.test"), RelayDenied)  # no open relay
    assert isinstance(refused(policy, "postmasterx@example.test"), UnknownUser)
    queue_id = commit(policy, "PostMaster@EXAMPLE.test")
    (entry,) = result_of(store.entries_for_message(queue_id))
    # It goes to the primary like any mail, spelled as the client spelled it.
    assert (entry.recipient, entry.domain, entry.state) == (
        "PostMaster@EXAMPLE.test", "example.test", QUEUED
    )  # fmt: skip


def test_postmaster_gets_a_shadow_copy_only_where_it_may_be_a_real_user() -> None:
    policy, store, cache = policy_with_users(mode="both")
    assert policy.delivery("postmaster@example.test").shadow  # no user list: like anyone
    with_users(cache, store, "ana@example.test")
    assert not policy.delivery("postmaster@example.test").shadow  # nobody could read it
    assert policy.delivery("ana@example.test").shadow
    with_users(cache, store, "ana@example.test", "postmaster@example.test")
    assert policy.delivery("Postmaster@example.test").shadow


def test_bare_postmaster_without_an_operator_address_is_held_saying_what_to_do() -> None:
    policy, store, _ = policy_with_users()
    assert policy.postmaster is None
    queue_id = commit(policy, "Postmaster", "ana@example.test")
    held, other = result_of(store.entries_for_message(queue_id))
    assert (held.recipient, held.domain, held.state) == ("Postmaster", POSTMASTER_HOLD, HELD)
    assert held.last_error == POSTMASTER_UNSET
    assert "[server] postmaster" in POSTMASTER_UNSET
    assert (other.domain, other.state) == ("example.test", QUEUED)
    # Visible as held, and never due: the relay does not touch it, so it never expires.
    assert result_of(store.due_domains(1e12)) == ["example.test"]


def test_bare_postmaster_goes_to_the_operator_address() -> None:
    policy, store, cache = policy_with_users(mode="both")
    in_protected = IntakePolicy(Clock(), cache, store, "strata.test",
                                postmaster="ops@example.test")  # fmt: skip
    assert in_protected.delivery("POSTMASTER") == Delivery(
        "ops@example.test", "example.test", shadow=True
    )  # its primary, and its shadow INBOX in mode both
    elsewhere = IntakePolicy(Clock(), cache, store, "strata.test",
                             postmaster="noc@msp.example")  # fmt: skip
    assert elsewhere.delivery("Postmaster") == Delivery(
        "noc@msp.example", "msp.example", outbound=True
    )  # by MX, as submission sends
    queue_id = commit(elsewhere, "Postmaster")
    (entry,) = result_of(store.entries_for_message(queue_id))
    assert (entry.recipient, entry.domain, entry.outbound, entry.state) == (
        "noc@msp.example", "msp.example", True, QUEUED
    )  # fmt: skip


def test_held_postmaster_mail_is_routed_once_an_operator_address_is_set() -> None:
    policy, store, cache = policy_with_users()
    first = commit(policy, "Postmaster")
    second = commit(policy, "postmaster", "ana@example.test")
    # An admin released one: still waiting under (postmaster), and routed just the same.
    result_of(store.change_state(f"{second}.1", (HELD,), QUEUED, 0.0, ""))
    with capturedLogs() as logs:
        assert result_of(Deferred.fromCoroutine(route_held_postmaster(store, policy, 50.0))) == []
    assert [formatEvent(e) for e in logs] == [
        "2 message(s) for <Postmaster> held in the queue: set [server] postmaster and restart "
        "to have them delivered"
    ]
    configured = IntakePolicy(Clock(), cache, store, "strata.test",
                              postmaster="ops@example.test")  # fmt: skip
    routed = result_of(Deferred.fromCoroutine(route_held_postmaster(store, configured, 60.0)))
    assert [(e.id, e.recipient, e.domain, e.state, e.next_attempt_at) for e in routed] == [
        (f"{first}.1", "ops@example.test", "example.test", QUEUED, 60.0),
        (f"{second}.1", "ops@example.test", "example.test", QUEUED, 60.0),
    ]
    assert routed[0].last_error == "<Postmaster> routed to the operator <ops@example.test>"
    assert result_of(store.list_entries(POSTMASTER_HOLD)) == []
    # Nothing left to route the next time.
    assert result_of(Deferred.fromCoroutine(route_held_postmaster(store, configured, 70.0))) == []


# -- one recipient once per message (issue #11) ---------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("u@example.test", "u@EXAMPLE.Test", True),  # the domain: any case
        ("u@example.test", "u@example.test.", True),  # with or without the root's dot
        ("u@bücher.example", "u@xn--bcher-kva.example", True),  # U-label or A-label
        ("u@example.test", "U@example.test", False),  # the local part: exactly (RFC 5321 §2.4)
        ("Postmaster@example.test", "postmaster@EXAMPLE.test", True),  # except postmaster
        ("Postmaster", "POSTMASTER", True),  # the bare one too (§4.1.1.3)
        ("postmaster", "postmaster@example.test", False),  # this server's, not the domain's
        ("u@[192.0.2.1]", "u@[192.0.2.1]", True),
        ("u@example.test", "u@example.net", False),
    ],
)
def test_which_recipients_are_the_same(a: str, b: str, same: bool) -> None:
    assert (recipient_key(a) == recipient_key(b)) is same
    assert unique_recipients([a, b]) == ((a,) if same else (a, b))


def test_a_recipient_named_again_adds_nothing() -> None:
    policy, store, _ = policy_with_users()
    recipients = Recipients()
    for recipient in ["u@example.test"] * 100 + ["u@EXAMPLE.TEST", "u@Example.Test."]:
        policy.add_recipient(recipients, recipient)  # accepted each time: no error
    # The local part is compared exactly (only its own server may fold it), postmaster aside.
    for recipient in ("U@example.test", "postmaster@example.test", "POSTMASTER@example.test",
                      "Postmaster", "postmaster"):  # fmt: skip
        policy.add_recipient(recipients, recipient)
    assert recipients.addresses == (
        "u@example.test", "U@example.test", "postmaster@example.test", "Postmaster"
    )  # fmt: skip
    assert len(recipients) == 4
    queue_id = commit(policy, *(["u@example.test"] * 100))
    (entry,) = result_of(store.entries_for_message(queue_id))
    stored = result_of(store.get_message(queue_id))
    assert stored is not None and stored.envelope.recipients == ("u@example.test",)
    recipients.clear()
    assert len(recipients) == 0
    assert recipients.add("u@example.test")


def test_a_refused_recipient_is_not_added() -> None:
    policy, _, _ = policy_with_users()
    recipients = Recipients()
    error = None
    try:
        policy.add_recipient(recipients, "u@other.test")
    except RelayDenied as e:
        error = e
    assert error is not None and recipients.addresses == ()


def test_idn_spellings_of_one_domain_are_one_recipient() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    result_of(store.add_domain(Domain("xn--bcher-kva.example", RelayTarget("10.0.0.1"))))
    cache = DomainCache(clock, store, 1.0)
    result_of(cache.refresh())
    policy = IntakePolicy(clock, cache, store, "strata.test")
    queue_id = commit(policy, "ana@bücher.example", "ana@xn--bcher-kva.example",
                      "ana@BÜCHER.example")  # fmt: skip
    assert [e.recipient for e in result_of(store.entries_for_message(queue_id))] == [
        "ana@bücher.example"
    ]


def test_generated_mail_goes_to_each_recipient_once() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    deliveries = (Delivery("noc@msp.example", "msp.example", outbound=True),
                  Delivery("NOC@MSP.example", "msp.example", outbound=True),
                  Delivery("noc@msp.example", "msp.example", outbound=True))  # fmt: skip
    result_of(Deferred.fromCoroutine(store_generated(
        messages=store, clock=clock, hostname="strata.test", queue_id="G1", data=b"x\r\n",
        sender="", deliveries=deliveries,
    )))  # fmt: skip
    assert [e.recipient for e in result_of(store.entries_for_message("G1"))] == [
        "noc@msp.example", "NOC@MSP.example"
    ]  # fmt: skip
