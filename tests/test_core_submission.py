"""
The submission policy (issue 5) without a server: which addresses a message claims to be from
(``header_senders``), who may send as whom, the hourly sending limit on a task.Clock, where each
recipient's copy goes, and which recipients are taken.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from strata_twisted.core.credentials import hash_password
from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import SessionInfo
from strata_twisted.core.submission import (
    DEFAULT_MAX_PER_HOUR,
    AuthenticationRequired,
    BadRecipient,
    SenderNotOwned,
    SendingRateExceeded,
    SubmissionPolicy,
    header_senders,
)
from strata_twisted.errors import MailError, UnknownUser
from strata_twisted.model import (
    Delivery,
    DeliveryMode,
    Domain,
    Envelope,
    RelayTarget,
    StoredMessage,
)
from strata_twisted.storage.memory import MemoryStore
from strata_twisted.testing import result_of

ALICE = "alice@example.test"
BOB = "bob@example.test"
HOUR = 3600.0


class Harness:
    """A submission policy over a memory store protecting example.test (users ALICE and BOB,
    synced) and relay.test (no user list), on a task.Clock at a realistic time."""

    def __init__(
        self, *, mode: DeliveryMode = "both", max_per_hour: int = DEFAULT_MAX_PER_HOUR
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.store = MemoryStore(self.clock)
        result_of(self.store.add_domain(Domain("example.test", RelayTarget("127.0.0.1"), mode)))
        result_of(self.store.add_domain(Domain("relay.test", RelayTarget("127.0.0.1"), "relay")))
        for user in (ALICE, BOB):
            result_of(self.store.set_user(user, hash_password("pw", "SSHA512").text))
        self.domains = DomainCache(self.clock, self.store, 1.0, users=self.store)
        result_of(self.domains.start())
        self.policy = SubmissionPolicy(
            self.clock, self.domains, self.store, "smtp.strata.test", max_per_hour=max_per_hour
        )

    def stop(self) -> None:
        self.domains.stop()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.stop()


def session(user: str | None = ALICE) -> SessionInfo:
    return SessionInfo(client_address="127.0.0.1", helo="client.test", esmtp=True, user=user)


def stored(sender: str = ALICE) -> StoredMessage:
    return StoredMessage("0ABC", Envelope(sender, ("x@outside.test",)), 0.0, 100)


def refusal(error: MailError) -> tuple[int, str]:
    return error.code, error.enhanced


# -- header_senders ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: Alice Example <alice@example.test>\r\n\r\n", ["alice@example.test"]),
        (b'From: "Example, Alice" <alice@example.test>\r\n\r\n', ["alice@example.test"]),
        (b"From: alice@example.test (Alice)\r\n\r\n", ["alice@example.test"]),
        (
            b"From: alice@example.test, Bob <bob@example.test>\r\n\r\n",
            ["alice@example.test", "bob@example.test"],
        ),
        (
            b"From: Team: alice@example.test, bob@example.test;\r\n\r\n",
            ["alice@example.test", "bob@example.test"],
        ),
        (
            b"From: alice@example.test\r\nSender: Bob <bob@example.test>\r\n\r\n",
            ["alice@example.test", "bob@example.test"],
        ),
        (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\r\n\r\n", ["joerg@example.test"]),
        # A folded field is one field; the address on the continuation line counts.
        (
            b"From: alice@example.test,\r\n evil@other.test\r\n\r\n",
            ["alice@example.test", "evil@other.test"],
        ),
        (b"FROM: alice@example.test\r\n\r\n", ["alice@example.test"]),
        (b"Subject: no sender\r\nTo: bob@example.test\r\n\r\n", []),
        (b"", []),
    ],
    ids=[
        "display-name",
        "quoted-display-name",
        "comment",
        "several",
        "group",
        "sender",
        "encoded-word",
        "folded",
        "upper-case-name",
        "none",
        "empty",
    ],
)
def test_header_senders(header: bytes, expected: list[str]) -> None:
    assert header_senders(header) == expected


def test_header_senders_reads_only_the_header_fields_it_is_given() -> None:
    # To:/Cc:/Reply-To: name others freely; they are not senders.
    header = (
        b"To: bob@example.test\r\nCc: carol@other.test\r\nReply-To: list@other.test\r\n"
        b"From: alice@example.test\r\n\r\n"
    )
    assert header_senders(header) == ["alice@example.test"]


def test_header_senders_sees_the_obsolete_from_with_space_before_the_colon() -> None:
    header = b"From : evil@other.test\r\nSender: alice@example.test\r\n\r\n"
    assert "evil@other.test" in header_senders(header)


def test_header_senders_decodes_a_utf8_address() -> None:
    header = "From: Jörg <jörg@example.test>\r\n\r\n".encode()
    assert header_senders(header) == ["jörg@example.test"]


# -- check_sender ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender", ["alice@example.test", "Alice@Example.TEST", "ALICE@EXAMPLE.TEST"]
)
def test_own_address_in_any_case_may_send(h: Harness, sender: str) -> None:
    h.policy.check_sender(session(), sender)  # does not raise


@pytest.mark.parametrize("sender", [BOB, "alice@relay.test", "alice@other.test", "alice"])
def test_an_address_the_user_does_not_own_is_refused_553(h: Harness, sender: str) -> None:
    with pytest.raises(SenderNotOwned) as e:
        h.policy.check_sender(session(), sender)
    assert refusal(e.value) == (553, "5.7.1")
    assert e.value.public_text == "Sender address rejected: not owned by user"


def test_the_null_sender_is_refused_553(h: Harness) -> None:
    # A user does not send bounces: <> would let them send mail nobody can answer.
    with pytest.raises(SenderNotOwned) as e:
        h.policy.check_sender(session(), "")
    assert refusal(e.value) == (553, "5.7.1")


def test_no_user_is_refused_530(h: Harness) -> None:
    with pytest.raises(AuthenticationRequired) as e:
        h.policy.check_sender(session(user=None), ALICE)
    assert refusal(e.value) == (530, "5.7.0")


# -- rate limit -----------------------------------------------------------------------------------


def test_the_hourly_limit_refuses_450_then_allows_again_after_the_hour() -> None:
    h = Harness(max_per_hour=3)
    first_at = h.clock.seconds()
    for _ in range(3):
        h.policy.check_sender(session(), ALICE)
        h.policy.accepted(stored(), session())
        h.clock.advance(60)
    with pytest.raises(SendingRateExceeded) as e:
        h.policy.check_sender(session(), ALICE)
    assert refusal(e.value) == (450, "4.7.1")
    assert e.value.temporary
    # Another user has a limit of their own.
    h.policy.check_sender(session(BOB), BOB)
    # Still refused just before the first message leaves the window...
    h.clock.advance(first_at + HOUR - h.clock.seconds() - 1)
    with pytest.raises(SendingRateExceeded):
        h.policy.check_sender(session(), ALICE)
    # ...and allowed once it has.
    h.clock.advance(1)
    h.policy.check_sender(session(), ALICE)
    # One slot is free, not three: the other two are still within the hour.
    h.policy.accepted(stored(), session())
    with pytest.raises(SendingRateExceeded):
        h.policy.check_sender(session(), ALICE)
    h.stop()


def test_only_accepted_messages_count_against_the_limit() -> None:
    h = Harness(max_per_hour=2)
    for _ in range(10):
        h.policy.check_sender(session(), ALICE)  # a MAIL that never became a message
    h.policy.accepted(stored(), session())
    h.policy.accepted(stored(), None)  # no session: nobody to count against
    h.policy.accepted(stored(), session(user=None))
    h.policy.check_sender(session(), ALICE)
    h.policy.accepted(stored(), session())
    with pytest.raises(SendingRateExceeded):
        h.policy.check_sender(session(), ALICE)
    h.stop()


def test_the_default_limit_is_200_per_hour(h: Harness) -> None:
    assert DEFAULT_MAX_PER_HOUR == 200
    for _ in range(199):
        h.policy.accepted(stored(), session())
    h.policy.check_sender(session(), ALICE)
    h.policy.accepted(stored(), session())
    with pytest.raises(SendingRateExceeded):
        h.policy.check_sender(session(), ALICE)


# -- deliveries -----------------------------------------------------------------------------------


def test_a_colleague_in_mode_both_gets_a_shadow_copy_and_the_primarys_queue(h: Harness) -> None:
    assert h.policy.deliveries((BOB,)) == (
        Delivery(BOB, "example.test", shadow=True, outbound=False),
    )


def test_a_colleague_in_mode_relay_gets_no_shadow_copy() -> None:
    h = Harness(mode="relay")
    assert h.policy.deliveries((BOB, "carol@relay.test")) == (
        Delivery(BOB, "example.test", shadow=False, outbound=False),
        Delivery("carol@relay.test", "relay.test", shadow=False, outbound=False),
    )
    h.stop()


def test_an_external_recipient_goes_outbound_to_its_domain(h: Harness) -> None:
    assert h.policy.deliveries(("friend@Gmail.example", "kim@bücher.example")) == (
        Delivery("friend@Gmail.example", "gmail.example", shadow=False, outbound=True),
        Delivery("kim@bücher.example", "xn--bcher-kva.example", shadow=False, outbound=True),
    )


def test_an_address_literal_goes_outbound_to_that_address(h: Harness) -> None:
    assert h.policy.deliveries(("user@[192.0.2.1]",)) == (
        Delivery("user@[192.0.2.1]", "[192.0.2.1]", shadow=False, outbound=True),
    )


def test_a_protected_domain_in_other_case_is_still_a_colleague(h: Harness) -> None:
    (delivery,) = h.policy.deliveries(("Bob@EXAMPLE.test",))
    assert (delivery.domain, delivery.shadow, delivery.outbound) == ("example.test", True, False)


# -- check_recipient ------------------------------------------------------------------------------


def test_an_unknown_user_of_a_protected_domain_with_a_synced_list_is_refused_550(
    h: Harness,
) -> None:
    with pytest.raises(UnknownUser) as e:
        h.policy.check_recipient("nobody@example.test")
    assert refusal(e.value) == (550, "5.1.1")


def test_known_colleagues_and_domains_without_a_list_are_taken(h: Harness) -> None:
    h.policy.check_recipient(BOB)
    h.policy.check_recipient("Bob@Example.TEST")
    h.policy.check_recipient("anyone@relay.test")


@pytest.mark.parametrize(
    "recipient", ["friend@gmail.example", "kim@bücher.example", "user@[192.0.2.1]"]
)
def test_an_external_recipient_is_taken(h: Harness, recipient: str) -> None:
    h.policy.check_recipient(recipient)  # unlike intake: the sender is known


@pytest.mark.parametrize("recipient", ["nodomain", "user@[not-an-address]", "user@-bad-.test"])
def test_a_recipient_without_a_domain_is_refused_501(h: Harness, recipient: str) -> None:
    with pytest.raises(BadRecipient) as e:
        h.policy.check_recipient(recipient)
    assert refusal(e.value) == (501, "5.1.3")


# -- send-as aliases ------------------------------------------------------------------------------


def headers(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in (*lines, "")).encode()


def aliased() -> Harness:
    """The harness, with alice allowed to send as sales@ (her domain) and alice@example.net."""
    h = Harness()
    result_of(h.store.add_alias("sales@example.test", ALICE))
    result_of(h.store.add_alias("alice@example.net", ALICE))
    h.clock.advance(1.0)  # the cache's next poll
    return h


@pytest.mark.parametrize(
    "sender", ["sales@example.test", "Sales@EXAMPLE.test", "alice@example.net", ALICE]
)
def test_an_alias_the_admin_allowed_may_be_the_mail_from(sender: str) -> None:
    h = aliased()
    h.policy.check_sender(session(), sender)  # does not raise
    h.stop()


def test_an_alias_the_admin_allowed_may_be_in_from_and_sender() -> None:
    h = aliased()
    check = h.policy.header_check(session())
    assert check is not None
    check(headers("From: Sales <sales@example.test>"))
    check(headers("From: Alice <alice@example.net>", f"Sender: {ALICE}"))
    check(headers("From: sales@example.test, alice@example.net", "Sender: SALES@example.test"))
    h.stop()


def test_an_alias_does_not_open_the_rest_of_the_header() -> None:
    h = aliased()
    check = h.policy.header_check(session())
    assert check is not None
    with pytest.raises(SenderNotOwned) as e:
        check(headers("From: sales@example.test, other@example.test"))
    assert refusal(e.value) == (553, "5.7.1")
    assert e.value.public_text == "From: address <other@example.test> not owned by user"
    h.stop()


def test_another_users_alias_is_refused_553() -> None:
    h = aliased()
    with pytest.raises(SenderNotOwned) as e:
        h.policy.check_sender(session(BOB), "sales@example.test")
    assert refusal(e.value) == (553, "5.7.1")
    check = h.policy.header_check(session(BOB))
    assert check is not None
    with pytest.raises(SenderNotOwned):
        check(headers("From: alice@example.net"))
    check(headers(f"From: {BOB}"))  # bob's own address still goes
    h.stop()


def test_a_removed_alias_is_refused_once_the_cache_reloads() -> None:
    h = aliased()
    check = h.policy.header_check(session())  # a session that began before the removal
    assert check is not None
    result_of(h.store.remove_alias("sales@example.test"))
    h.policy.check_sender(session(), "sales@example.test")  # the cache has not polled yet
    h.clock.advance(1.0)
    with pytest.raises(SenderNotOwned) as e:
        h.policy.check_sender(session(), "sales@example.test")
    assert refusal(e.value) == (553, "5.7.1")
    with pytest.raises(SenderNotOwned):
        check(headers("From: sales@example.test"))
    h.policy.check_sender(session(), "alice@example.net")  # the other alias stays
    h.stop()


def test_the_aliases_of_a_removed_user_are_refused_once_the_cache_reloads() -> None:
    h = aliased()
    result_of(h.store.remove_user(ALICE))
    h.clock.advance(1.0)
    with pytest.raises(SenderNotOwned):
        h.policy.check_sender(session(), "alice@example.net")
    h.stop()


# -- delivery at once, and the domain list -------------------------------------------------------


def test_accepted_mail_for_outside_domains_is_delivered_at_once(h: Harness) -> None:
    kicked: list[str] = []
    policy = SubmissionPolicy(h.clock, h.domains, h.store, "smtp.strata.test",
                              deliver_now=kicked.append)  # fmt: skip
    recipients = ("x@outside.test", "y@outside.test", "z@Other.test", BOB, "u@[192.0.2.1]")
    policy.accepted(StoredMessage("0ABD", Envelope(ALICE, recipients), 0.0, 100), session())
    # Each outside domain once; the colleague waits for the primary's own schedule.
    assert kicked == ["[192.0.2.1]", "other.test", "outside.test"]


def test_recipients_wait_until_the_domain_list_is_loaded() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    domains = DomainCache(clock, store, 1.0)
    policy = SubmissionPolicy(clock, domains, store, "smtp.strata.test")
    with pytest.raises(MailError) as raised:
        policy.check_recipient("x@outside.test")
    assert refusal(raised.value) == (451, "4.3.0")


def test_colleagues_with_a_shadow_copy_are_told_of_it(h: Harness) -> None:
    told: list[str] = []
    h.policy.on_shadow = told.append
    recipients = ("Bob@Example.test", "x@outside.test", "someone@relay.test")
    h.policy.accepted(StoredMessage("0ABE", Envelope(ALICE, recipients), 0.0, 100), session())
    assert told == [BOB]  # relay.test is in mode relay: no shadow copy there
