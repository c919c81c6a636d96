"""
The IMAP adapter driven over StringTransport with a task.Clock (no sockets): login policy, LIST,
SELECT, FETCH and LOGOUT, end to end through the real engine and the memory store, with password
checks run synchronously by an injected executor.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import StringTransport

from strata_twisted.core.domains import DomainCache
from strata_twisted.core.intake import IntakePolicy, SessionInfo
from strata_twisted.model import Domain, RelayTarget
from strata_twisted.proto.imap_server import ServerLimits
from strata_twisted.server.imap import IMAPFactory, IMAPProtocol
from strata_twisted.testing import result_of
from tests.imap_harness import ALICE, BOB, BODY1, BODY2, CLOSED, PASSWORD, Harness, send


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- login ----------------------------------------------------------------------------------------


def test_greeting_and_login_ok(h: Harness) -> None:
    proto = h.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(proto, IMAPProtocol)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto.makeConnection(transport)
    assert transport.value().startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in transport.value()  # loopback: plaintext login allowed
    reply = send(proto, transport, f'a LOGIN Alice@Example.TEST "{PASSWORD}"\r\n')
    assert reply.startswith(b"a OK [CAPABILITY IMAP4rev1 ")
    assert reply.endswith(b"] Logged in\r\n")
    assert proto.user == ALICE  # canonical address
    # ensure_user gave the default mailboxes
    names = [m.name for m in result_of(h.store.list_mailboxes(ALICE))]
    assert names == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


def test_wrong_password_and_unknown_user_get_the_same_answer(h: Harness) -> None:
    proto, transport = h.connect()
    wrong = send(proto, transport, 'a LOGIN alice@example.test "nope"\r\n')
    unknown = send(proto, transport, f'a LOGIN nobody@example.test "{PASSWORD}"\r\n')
    proto, transport = h.connect()  # the third failure would end the first session
    invalid = send(proto, transport, f'a LOGIN not-an-address "{PASSWORD}"\r\n')
    assert wrong == unknown == invalid == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert h.executor.calls == 3  # each one cost a hash check, the unknown ones too
    assert proto.user is None
    assert not result_of(h.store.list_mailboxes("nobody@example.test"))


def test_third_failure_ends_the_session(h: Harness) -> None:
    # Per connection, on top of the throttle's delays (1 s before the second check, 2 s before
    # the third): a guesser must reconnect, which the connection limits meter.
    proto, transport = h.connect()
    send(proto, transport, 'a LOGIN alice@example.test "x"\r\nb LOGIN alice@example.test "y"\r\n')
    h.clock.advance(1)
    assert send(proto, transport, 'c LOGIN alice@example.test "z"\r\n') == b""
    h.clock.advance(2)
    assert transport.value() == (
        b"c NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Too many failed logins\r\n"
    )
    assert transport.disconnecting


def test_successful_verification_is_cached(h: Harness) -> None:
    for _ in range(3):
        proto, transport = h.login()
        send(proto, transport, "z LOGOUT\r\n")
    assert h.executor.calls == 1
    # a wrong password is never answered from the cache
    proto, transport = h.connect()
    assert send(proto, transport, 'a LOGIN alice@example.test "bad"\r\n').startswith(b"a NO ")
    assert h.executor.calls == 2
    # the cache expires on the injected clock
    h.clock.advance(61)
    h.login()
    assert h.executor.calls == 3


def test_authenticate_plain_with_initial_response(h: Harness) -> None:
    proto, transport = h.connect()
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    reply = send(proto, transport, f"a AUTHENTICATE PLAIN {token}\r\n")
    assert reply.startswith(b"a OK [CAPABILITY ")
    assert proto.user == ALICE


def test_portal_closed_after_the_right_password(h: Harness) -> None:
    h.closed.add("example.test")
    proto, transport = h.connect()
    reply = send(proto, transport, f'a LOGIN alice@example.test "{PASSWORD}"\r\n')
    assert reply == b"a NO [UNAVAILABLE] " + CLOSED.encode() + b"\r\n"
    assert proto.user is None
    # a wrong password does not learn that the portal is closed
    reply = send(proto, transport, 'b LOGIN alice@example.test "bad"\r\n')
    assert reply == b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    # once open, the same connection may log in
    h.closed.clear()
    assert send(proto, transport, f'c LOGIN {ALICE} "{PASSWORD}"\r\n').startswith(b"c OK ")


def test_plaintext_login_refused_off_trusted_networks(h: Harness) -> None:
    proto, transport = h.connect("192.0.2.7")
    assert b"LOGINDISABLED" in send(proto, transport, "a CAPABILITY\r\n")
    reply = send(proto, transport, f'b LOGIN {ALICE} "{PASSWORD}"\r\n')
    assert reply.startswith(b"b NO [PRIVACYREQUIRED] ")
    assert h.executor.calls == 0
    proto, transport = h.connect("10.1.2.3")  # a configured trusted network
    assert send(proto, transport, f'b LOGIN {ALICE} "{PASSWORD}"\r\n').startswith(b"b OK ")


def test_commands_need_login(h: Harness) -> None:
    proto, transport = h.connect()
    assert send(proto, transport, 'a LIST "" "*"\r\n') == b"a BAD Log in first\r\n"


# -- LIST, LSUB -----------------------------------------------------------------------------------


def test_list_shows_the_special_folders(h: Harness) -> None:
    proto, transport = h.login()
    assert send(proto, transport, 'b LIST "" "*"\r\n') == (
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
        b"b OK LIST completed\r\n"
    )


def test_list_patterns_children_and_subscribed(h: Harness) -> None:
    result_of(h.store.ensure_user(ALICE))
    result_of(h.store.create_mailbox(ALICE, "Projects/2026"))
    proto, transport = h.login()
    assert send(proto, transport, 'a LIST "" ""\r\n') == (
        b'* LIST (\\Noselect) "/" ""\r\na OK LIST completed\r\n'
    )
    assert send(proto, transport, 'b LIST "" "%"\r\n').count(b"* LIST") == 6
    assert send(proto, transport, 'c LIST "Projects/" "%"\r\n') == (
        b'* LIST (\\HasNoChildren) "/" Projects/2026\r\nc OK LIST completed\r\n'
    )
    assert send(proto, transport, 'd LIST "" "inbox"\r\n') == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\nd OK LIST completed\r\n'
    )
    reply = send(proto, transport, 'e LIST "" "P*"\r\n')
    assert b'* LIST (\\HasChildren) "/" Projects\r\n' in reply
    # Projects is not subscribed: LSUB and LIST (SUBSCRIBED) leave it out
    lsub = send(proto, transport, 'f LSUB "" "*"\r\n')
    assert b"Projects" not in lsub and lsub.count(b"* LSUB") == 5
    # LSUB carries no child attributes, and LIST-EXTENDED only those RETURN asks for (RFC 5258
    # §4, §6; Dovecot answers the same).
    assert b'* LSUB (\\Trash) "/" Trash\r\n' in lsub
    subscribed = send(proto, transport, 'g LIST (SUBSCRIBED) "" "*"\r\n')
    assert b'* LIST (\\Subscribed) "/" Sent\r\n' in subscribed
    assert b"Projects" not in subscribed


def test_list_status(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.login()
    reply = send(proto, transport, 'a LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))\r\n')
    assert reply == (
        b'* LIST () "/" INBOX\r\n'  # RFC 5258 §4: no child info unless RETURN (CHILDREN)
        b"* STATUS INBOX (MESSAGES 1 UNSEEN 1)\r\n"
        b"a OK LIST completed\r\n"
    )


# -- SELECT and FETCH -----------------------------------------------------------------------------


def test_select_inbox(h: Harness) -> None:
    h.deliver("m1", BODY1)
    h.deliver("m2", BODY2)
    proto, transport = h.login()
    status = result_of(h.store.mailbox_status(ALICE, "INBOX"))
    reply = send(proto, transport, "b SELECT INBOX\r\n")
    assert reply == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* 2 EXISTS\r\n"
        b"* 0 RECENT\r\n"
        b"* OK [UNSEEN 1] Message 1 is first unseen\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] "
        b"Flags permitted\r\n"
        b"* OK [UIDNEXT 3] Predicted next UID\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
        b"b OK [READ-WRITE] SELECT completed\r\n" % (status.uidvalidity, status.highest_modseq)
    )
    assert proto.selected == "INBOX"


def test_select_missing_mailbox(h: Harness) -> None:
    proto, transport = h.login()
    reply = send(proto, transport, "b SELECT Nowhere\r\n")
    assert reply.startswith(b"b NO [NONEXISTENT] ")
    assert send(proto, transport, "c FETCH 1 FLAGS\r\n") == b"c BAD No mailbox selected\r\n"


def test_fetch_flags_uid_size_envelope(h: Harness) -> None:
    h.deliver("m1", BODY1)
    h.deliver("m2", BODY2)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, "c FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE)\r\n")
    assert reply == (
        b"* 1 FETCH (FLAGS () UID 1 RFC822.SIZE %d ENVELOPE "
        b'("Mon, 2 Nov 2026 10:00:00 +0000" "hello" (("Sender" NIL "sender" "origin.test")) '
        b'(("Sender" NIL "sender" "origin.test")) (("Sender" NIL "sender" "origin.test")) '
        b'((NIL NIL "alice" "example.test")) NIL NIL NIL "<m1@origin.test>"))\r\n'
        b"* 2 FETCH (FLAGS () UID 2 RFC822.SIZE %d ENVELOPE "
        b'(NIL "second" ((NIL NIL "other" "origin.test")) ((NIL NIL "other" "origin.test")) '
        b'((NIL NIL "other" "origin.test")) ((NIL NIL "alice" "example.test")) '
        b"NIL NIL NIL NIL))\r\n"
        b"c OK FETCH completed\r\n" % (len(BODY1), len(BODY2))
    )


def test_fetch_body_returns_the_stored_bytes_and_sets_seen(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, "c FETCH 1 BODY[]\r\n")
    assert reply == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(BODY1)
        + BODY1
        + b" FLAGS (\\Seen))\r\nc OK FETCH completed\r\n"
    )
    [message] = result_of(h.store.list_messages(ALICE, "INBOX"))
    assert message.flags == {"\\Seen"}
    # already seen: no FLAGS item the second time
    reply = send(proto, transport, "d FETCH 1 BODY[]\r\n")
    assert reply.endswith(BODY1 + b")\r\nd OK FETCH completed\r\n")


def test_body_peek_and_partial_do_not_set_seen(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    items = "BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[]<0.4>"
    reply = send(proto, transport, f"c FETCH 1 ({items})\r\n")
    assert reply == (
        b'* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: hello\r\n\r\n BODY[]<0> "From")'
        b"\r\nc OK FETCH completed\r\n"
    )
    reply = send(proto, transport, "d FETCH 1 (BODY.PEEK[TEXT] FLAGS)\r\n")
    assert reply == (
        b"* 1 FETCH (BODY[TEXT] {12}\r\nfirst body\r\n FLAGS ())\r\nd OK FETCH completed\r\n"
    )
    [message] = result_of(h.store.list_messages(ALICE, "INBOX"))
    assert message.flags == frozenset()


def test_examine_never_sets_seen(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.login()
    assert send(proto, transport, "b EXAMINE INBOX\r\n").endswith(
        b"b OK [READ-ONLY] EXAMINE completed\r\n"
    )
    reply = send(proto, transport, "c FETCH 1 (BODY[] FLAGS)\r\n")
    assert reply.endswith(BODY1 + b" FLAGS ())\r\nc OK FETCH completed\r\n")
    [message] = result_of(h.store.list_messages(ALICE, "INBOX"))
    assert message.flags == frozenset()


def test_uid_fetch_and_sequence_errors(h: Harness) -> None:
    h.deliver("m1", BODY1)
    h.deliver("m2", BODY2)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    assert send(proto, transport, "c UID FETCH 2:* FLAGS\r\n") == (
        b"* 2 FETCH (FLAGS () UID 2)\r\nc OK UID FETCH completed\r\n"
    )
    assert send(proto, transport, "d UID FETCH 7 FLAGS\r\n") == b"d OK UID FETCH completed\r\n"
    assert send(proto, transport, "e FETCH 3 FLAGS\r\n") == (
        b"e BAD Invalid message sequence number\r\n"
    )


def test_large_body_is_streamed_in_bounded_reads(h: Harness) -> None:
    body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    body = body + (b"y" * 1022 + b"\r\n") * 600  # about 600 KiB: above the stream threshold
    h.deliver("big", body)
    reads: list[int] = []
    real = h.store.read_body_range

    def spy(message_id: str, offset: int, length: int) -> Deferred[bytes]:
        reads.append(length)
        return real(message_id, offset, length)

    h.store.read_body_range = spy  # type: ignore[method-assign]
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, "c FETCH 1 BODY.PEEK[]\r\n")
    assert reply == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\nc OK FETCH completed\r\n"
    )
    assert reads and max(reads) <= 256 * 1024 and len(reads) == 3


def test_a_message_with_a_100_kib_line_is_fetched_byte_for_byte(h: Harness) -> None:
    """Issue 11, point 3: intake takes lines of any length; IMAP indexes such a message at
    store time and returns its bytes, whole and by part, with the right line counts."""
    line = (b"0123456789abcdef" * (100 * 64)) + b"."  # 100 KiB and one octet
    text = b"first\r\n" + line + b"\r\n" + line + b"\r\nlast\r\n"
    body = b"Subject: long\r\nX-Long: " + line + b"\r\n\r\n" + text
    h.deliver("long", body)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, "c FETCH 1 (BODY.PEEK[] BODY.PEEK[TEXT] RFC822.SIZE)\r\n")
    assert reply == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(body)
        + body
        + b" BODY[TEXT] {%d}\r\n" % len(text)
        + text
        + b" RFC822.SIZE %d)\r\nc OK FETCH completed\r\n" % len(body)
    )
    fetch = "d FETCH 1 (BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
    reply = send(proto, transport, fetch)
    assert b' "7bit" %d 4 NIL' % len(text) in reply  # size and line count of the text
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {17}\r\nSubject: long\r\n\r\n)" in reply


def test_a_user_never_sees_another_users_messages(h: Harness) -> None:
    h.deliver("m1", BODY1, ALICE)
    proto, transport = h.login(BOB)
    reply = send(proto, transport, "b SELECT INBOX\r\n")
    assert b"* 0 EXISTS\r\n" in reply
    assert send(proto, transport, "c FETCH 1:* (BODY[])\r\n") == (
        b"c BAD Invalid message sequence number\r\n"
    )
    assert send(proto, transport, "d UID FETCH 1:* (BODY[])\r\n") == (
        b"d OK UID FETCH completed\r\n"
    )


def test_noop_close_unselect(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    assert send(proto, transport, "c NOOP\r\n") == b"c OK NOOP completed\r\n"
    assert send(proto, transport, "d STORE 1 +FLAGS (\\Deleted)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Deleted))\r\nd OK STORE completed\r\n"
    )
    assert send(proto, transport, "e UNSELECT\r\n") == b"e OK UNSELECT completed\r\n"
    assert proto.selected is None
    assert len(result_of(h.store.list_messages(ALICE, "INBOX"))) == 1  # UNSELECT keeps it
    send(proto, transport, "f SELECT INBOX\r\n")
    assert send(proto, transport, "g CLOSE\r\n") == b"g OK CLOSE completed\r\n"
    assert result_of(h.store.list_messages(ALICE, "INBOX")) == []  # CLOSE expunged it


def test_logout(h: Harness) -> None:
    proto, transport = h.login()
    assert send(proto, transport, "z LOGOUT\r\n") == (
        b"* BYE Strata logging out\r\nz OK LOGOUT completed\r\n"
    )
    assert transport.disconnecting
    proto.connectionLost(None)
    assert h.factory.open_connections == 0


# -- timers, pipelining, failures -----------------------------------------------------------------


def test_idle_timeout_on_the_injected_clock(h: Harness) -> None:
    proto, transport = h.connect()
    h.clock.advance(59)
    assert not transport.disconnecting
    h.clock.advance(1)  # 60 s before login
    assert transport.value() == b"* BYE Autologout; idle for too long\r\n"
    assert transport.disconnecting
    proto, transport = h.login()
    transport.clear()
    h.clock.advance(29 * 60)
    assert send(proto, transport, "a NOOP\r\n") == b"a OK NOOP completed\r\n"
    h.clock.advance(29 * 60)  # the NOOP restarted the timer
    assert not transport.disconnecting
    h.clock.advance(60)
    assert transport.disconnecting


def test_pipelined_commands_are_answered_in_order(h: Harness) -> None:
    h.deliver("m1", BODY1)
    proto, transport = h.connect()
    reply = send(
        proto,
        transport,
        f'a LOGIN {ALICE} "{PASSWORD}"\r\nb SELECT INBOX\r\nc FETCH 1 UID\r\nd LOGOUT\r\n',
    )
    tags = [line.split(b" ")[0] for line in reply.split(b"\r\n") if line[:1] != b"*" and line]
    assert tags == [b"a", b"b", b"c", b"d"]
    assert b"* 1 FETCH (UID 1)\r\n" in reply


def test_answers_wait_for_the_store_and_reads_pause(h: Harness) -> None:
    proto, transport = h.login()
    waiting: Deferred[Any] = Deferred()
    real = h.store.list_mailboxes
    h.store.list_mailboxes = lambda user: waiting  # type: ignore[method-assign]
    assert send(proto, transport, 'b LIST "" "INBOX"\r\nc NOOP\r\n') == b""
    assert transport.producerState == "paused"
    waiting.callback(result_of(real(ALICE)))
    assert transport.value() == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\nb OK LIST completed\r\nc OK NOOP completed\r\n'
    )
    assert transport.producerState == "producing"


def test_storage_failure_is_a_temporary_no(h: Harness) -> None:
    from strata_twisted.errors import StorageError

    proto, transport = h.login()
    h.store.list_mailboxes = lambda user: fail(StorageError("disk"))  # type: ignore[method-assign]
    assert send(proto, transport, 'b LIST "" "*"\r\n') == (
        b"b NO [UNAVAILABLE] Temporary server failure, try again later\r\n"
    )
    h.store.get_user = lambda address: fail(StorageError("disk"))  # type: ignore[method-assign]
    proto, transport = h.connect()
    assert send(proto, transport, f'a LOGIN {ALICE} "{PASSWORD}"\r\n') == (
        b"a NO [UNAVAILABLE] Temporary server failure, try again later\r\n"
    )


def test_default_executor_needs_a_reactor(h: Harness) -> None:
    with pytest.raises(TypeError):
        IMAPFactory(h.clock, h.store, h.store, h.store, None, portal=lambda d: None)


def test_limits_are_passed_to_the_engine(h: Harness) -> None:
    factory = IMAPFactory(
        h.clock,
        h.store,
        h.store,
        h.store,
        None,
        portal=lambda d: None,
        executor=h.executor,
        limits=ServerLimits(preauth_timeout=5),
    )
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto.makeConnection(transport)
    h.clock.advance(5)
    assert transport.disconnecting


# -- bodies of expunged messages ------------------------------------------------------------------


def test_expunged_bodies_are_deleted_once_nobody_needs_them(h: Harness) -> None:
    h.deliver("m2", BODY2)  # intake's copy: its queue entry still waits for the primary
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, b"c APPEND INBOX {%d+}\r\n%s\r\n" % (len(BODY1), BODY1))
    assert reply.startswith(b"* 2 EXISTS\r\n* 1 RECENT\r\nc OK [APPENDUID ")
    appended = result_of(h.store.list_messages(ALICE, "INBOX"))[1].message_id
    send(proto, transport, "d COPY 2 Trash\r\n")
    reply = send(proto, transport, "e STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\nf EXPUNGE\r\n")
    assert reply.endswith(b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nf OK EXPUNGE completed\r\n")
    # The appended one is still in Trash; intake's is still queued: both bodies stay.
    assert result_of(h.store.get_message(appended)) is not None
    assert result_of(h.store.get_message("m2")) is not None
    send(proto, transport, "g SELECT Trash\r\n")
    assert send(proto, transport, "h UID EXPUNGE 1\r\n") == b"h OK UID EXPUNGE completed\r\n"
    send(proto, transport, "i STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert send(proto, transport, "j CLOSE\r\n") == b"j OK CLOSE completed\r\n"
    assert result_of(h.store.get_message(appended)) is None  # in no mailbox, never queued
    assert result_of(h.store.get_message("m2")) is not None  # the relay queue still needs it


# -- the shared listings ----------------------------------------------------------------------


def test_listings_follow_every_change_and_read_only_what_changed(h: Harness) -> None:
    h.deliver("m1", BODY1)
    h.deliver("m2", BODY2)
    result_of(h.store.ensure_user(ALICE))
    calls: list[int | None] = []
    real = h.store.mailbox_listing

    def listing(user: str, mailbox: str, changed_since: int | None = None, uids: Any = None) -> Any:
        calls.append(changed_since)
        return real(user, mailbox, changed_since, uids)

    h.store.mailbox_listing = listing  # type: ignore[method-assign]

    def snapshot() -> list[tuple[int, frozenset[str]]]:
        listings = h.factory.shared.listings
        messages = result_of(Deferred.fromCoroutine(listings.listing(ALICE, "INBOX"))).messages
        return [(m.uid, m.flags) for m in messages]

    assert snapshot() == [(1, frozenset()), (2, frozenset())]
    assert calls == [None]
    assert snapshot() == [(1, frozenset()), (2, frozenset())]
    assert calls == [None]  # nothing changed: no listing at all
    mark = result_of(h.store.mailbox_status(ALICE, "INBOX")).highest_modseq
    result_of(h.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Seen"]))
    assert snapshot() == [(1, frozenset()), (2, frozenset({"\\Seen"}))]
    assert calls[1:] == [mark]  # only what changed since the listing kept
    # One expunged and one added: the count alone would not tell, the merge does.
    mark = result_of(h.store.mailbox_status(ALICE, "INBOX")).highest_modseq
    result_of(h.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(h.store.expunge(ALICE, "INBOX"))
    h.deliver("m3", BODY1)
    assert snapshot() == [(2, frozenset({"\\Seen"})), (3, frozenset())]
    assert calls[2:] == [mark, None]  # the merge came out too long: listed afresh


def test_renaming_the_selected_mailbox_keeps_the_session_in_it(h: Harness) -> None:
    proto, transport = h.login()
    send(proto, transport, "a CREATE Projects/2026\r\n")
    send(proto, transport, "b SELECT Projects/2026\r\n")
    assert send(proto, transport, "c RENAME Projects Archive\r\n") == b"c OK RENAME completed\r\n"
    assert proto.selected == "Archive/2026"
    reply = send(proto, transport, "d APPEND Archive/2026 {4+}\r\nabc\n\r\ne NOOP\r\n")
    assert b"* 1 EXISTS\r\n" in reply  # the session still sees its mailbox
    assert send(proto, transport, "f RENAME Archive/2026 Done\r\n") == b"f OK RENAME completed\r\n"
    assert proto.selected == "Done"
    assert send(proto, transport, "g FETCH 1 (RFC822.SIZE)\r\n") == (
        b"* 1 FETCH (RFC822.SIZE 4)\r\ng OK FETCH completed\r\n"
    )


def test_a_change_over_one_listener_wakes_an_idler_on_the_other(h: Harness) -> None:
    h.deliver("m1", BODY1)
    implicit = IMAPFactory(
        h.clock, h.store, h.store, h.store, None, portal=lambda d: None, executor=h.executor,
        implicit_tls=True, share_with=h.factory,
    )  # fmt: skip
    idler, idle_transport = h.login()
    send(idler, idle_transport, "a SELECT INBOX\r\n")
    assert send(idler, idle_transport, "b IDLE\r\n") == b"+ idling\r\n"
    proto = implicit.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
    assert isinstance(proto, IMAPProtocol)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
    proto.makeConnection(transport)
    send(proto, transport, f'c LOGIN {ALICE} "{PASSWORD}"\r\nd SELECT INBOX\r\n')
    idle_transport.clear()
    send(proto, transport, "e STORE 1 +FLAGS (\\Flagged)\r\n")
    # at once, without waiting for the poll on the clock
    assert idle_transport.value() == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"
    assert h.factory.open_connections == implicit.open_connections == 2


def test_mail_intake_accepts_wakes_the_recipients_idler_at_once(h: Harness) -> None:
    """The intake policy tells the IMAP server who got a shadow copy (service.py wires
    on_shadow to mailbox_changed): an IDLE session hears EXISTS without waiting for its poll."""
    result_of(h.store.add_domain(Domain("example.test", RelayTarget("127.0.0.1"), mode="both")))
    domains = DomainCache(h.clock, h.store, 1.0)
    result_of(domains.refresh())
    policy = IntakePolicy(h.clock, domains, h.store, "strata.test")
    policy.on_shadow = lambda user: h.factory.mailbox_changed(user, "INBOX")
    idler, idle_transport = h.select()
    bobs, bobs_transport = h.select(BOB)
    assert send(idler, idle_transport, "b IDLE\r\n") == b"+ idling\r\n"
    assert send(bobs, bobs_transport, "b IDLE\r\n") == b"+ idling\r\n"
    idle_transport.clear()
    bobs_transport.clear()
    session = SessionInfo(client_address="192.0.2.7", helo="mx.sender.test", esmtp=True)
    transaction = policy.begin(session, "s@sender.test", (ALICE.upper(),), body_8bitmime=False,
                               smtputf8=False)  # fmt: skip
    transaction.feed(BODY1)
    stored = result_of(transaction.finish())
    assert idle_transport.value() == b""  # committed, but nobody has told the IMAP server yet
    policy.accepted(stored, session)
    # At once (the clock did not move); the first session to see it: \\Recent to it.
    assert idle_transport.value() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    assert bobs_transport.value() == b""  # not Bob's mail
