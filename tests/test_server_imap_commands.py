"""
The IMAP adapter's mailbox commands, driven over StringTransport with a task.Clock through the
real engine and the memory store (tests/imap_harness.py): STORE, COPY/MOVE, EXPUNGE, SEARCH/ESEARCH,
SORT, STATUS, CREATE/DELETE/RENAME/(UN)SUBSCRIBE, APPEND, FETCH CHANGEDSINCE, updates between
sessions (NOOP, IDLE), login throttling, connection limits, streaming under back-pressure, and
the isolation of one user's mailboxes from another's.

Where an RFC fixes the bytes, the whole answer is compared.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, capturedLogs, formatEvent, globalLogPublisher

from strata_twisted.core.imap_fetch import STREAM_THRESHOLD
from strata_twisted.core.imap_shared import STREAM_CHUNK
from strata_twisted.errors import StorageError
from strata_twisted.model import StoredMessage
from strata_twisted.server._transport import ConnectionLimits
from strata_twisted.server.imap import IMAPProtocol
from strata_twisted.testing import result_of
from tests.imap_harness import ALICE, BOB, BODY1, BODY2, PASSWORD, Harness, Spy, send

SYSTEM = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"


def numbered(n: int, subject: str | None = None) -> bytes:
    """A small message whose subject and body name it."""
    return (
        b"From: Sender <sender@origin.test>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: %s\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:%02d +0000\r\n"
        b"\r\n"
        b"body of message %d\r\n" % ((subject or f"message {n}").encode(), n, n)
    )


def fill(h: Harness, count: int, user: str = ALICE) -> None:
    """``count`` messages in the user's INBOX, UIDs 1..count."""
    for n in range(1, count + 1):
        h.deliver(f"{user[0]}{n}", numbered(n), user)


def flags_of(h: Harness, mailbox: str = "INBOX", user: str = ALICE) -> dict[int, frozenset[str]]:
    return {m.uid: m.flags for m in result_of(h.store.list_messages(user, mailbox))}


def uids_of(h: Harness, mailbox: str = "INBOX", user: str = ALICE) -> list[int]:
    return [m.uid for m in result_of(h.store.list_messages(user, mailbox))]


def uidvalidity(h: Harness, mailbox: str, user: str = ALICE) -> int:
    return result_of(h.store.mailbox_status(user, mailbox)).uidvalidity


def modseq(h: Harness, uid: int, mailbox: str = "INBOX", user: str = ALICE) -> int:
    [message] = [m for m in result_of(h.store.list_messages(user, mailbox)) if m.uid == uid]
    return message.modseq


def highest(h: Harness, mailbox: str = "INBOX", user: str = ALICE) -> int:
    return result_of(h.store.mailbox_status(user, mailbox)).highest_modseq


def append_line(mailbox: str, body: bytes, extra: str = "", *, plus: bool = True) -> bytes:
    """``c APPEND mailbox extra {n+}`` CRLF body CRLF (LITERAL+), in one piece."""
    literal = b"{%d+}" % len(body) if plus else b"{%d}" % len(body)
    head = f"c APPEND {mailbox} {extra + ' ' if extra else ''}".encode()
    return head + literal + b"\r\n" + body + b"\r\n"


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- STORE ----------------------------------------------------------------------------------------


def test_store_adds_removes_and_replaces_flags(h: Harness) -> None:
    fill(h, 3)
    proto, transport = h.select()
    assert send(proto, transport, "c STORE 1:2 +FLAGS (\\Flagged \\Seen)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\n"
        b"* 2 FETCH (FLAGS (\\Flagged \\Seen))\r\n"
        b"c OK STORE completed\r\n"
    )
    assert send(proto, transport, "d STORE 2 -FLAGS (\\Seen)\r\n") == (
        b"* 2 FETCH (FLAGS (\\Flagged))\r\nd OK STORE completed\r\n"
    )
    assert send(proto, transport, "e STORE 1,3 FLAGS (\\Answered)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Answered))\r\n"
        b"* 3 FETCH (FLAGS (\\Answered))\r\n"
        b"e OK STORE completed\r\n"
    )
    assert flags_of(h) == {
        1: {"\\Answered"},
        2: {"\\Flagged"},
        3: {"\\Answered"},
    }


def test_store_silent_sends_no_fetch(h: Harness) -> None:
    fill(h, 2)
    proto, transport = h.select()
    assert send(proto, transport, "c STORE 1:2 +FLAGS.SILENT (\\Seen)\r\n") == (
        b"c OK STORE completed\r\n"
    )
    assert send(proto, transport, "d STORE 2 FLAGS.SILENT ()\r\n") == b"d OK STORE completed\r\n"
    assert send(proto, transport, "e STORE 1 -FLAGS.SILENT (\\Seen)\r\n") == (
        b"e OK STORE completed\r\n"
    )
    assert flags_of(h) == {1: frozenset(), 2: frozenset()}
    send(proto, transport, "f STORE 2 +FLAGS.SILENT (\\Draft)\r\n")
    assert flags_of(h)[2] == {"\\Draft"}


def test_uid_store_answers_with_the_uid(h: Harness) -> None:
    fill(h, 3)
    proto, transport = h.select()
    send(proto, transport, "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    # now sequence number 1 is UID 2, 2 is UID 3
    assert send(proto, transport, "c UID STORE 3 +FLAGS (\\Flagged)\r\n") == (
        b"* 2 FETCH (UID 3 FLAGS (\\Flagged))\r\nc OK UID STORE completed\r\n"
    )
    assert send(proto, transport, "d STORE 2 -FLAGS (\\Flagged)\r\n") == (
        b"* 2 FETCH (FLAGS ())\r\nd OK STORE completed\r\n"
    )
    # a UID that does not exist is no error (RFC 3501 §6.4.8)
    assert send(proto, transport, "e UID STORE 1,9 +FLAGS (\\Seen)\r\n") == (
        b"e OK UID STORE completed\r\n"
    )


def test_store_keywords_are_kept_and_announced(h: Harness) -> None:
    fill(h, 2)
    proto, transport = h.select()
    # RFC 3501 §7.2.6: FLAGS (and PERMANENTFLAGS) name the new keywords before a FETCH shows them.
    assert send(proto, transport, "c STORE 1 +FLAGS ($Label1 Work \\Seen)\r\n") == (
        b"* FLAGS (" + SYSTEM + b" $Label1 Work)\r\n"
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 Work \\*)] Flags permitted\r\n"
        b"* 1 FETCH (FLAGS (\\Seen $Label1 Work))\r\nc OK STORE completed\r\n"
    )
    assert flags_of(h)[1] == {"\\Seen", "$Label1", "Work"}
    reply = send(proto, transport, "d SELECT INBOX\r\n")
    assert b"* FLAGS (" + SYSTEM + b" $Label1 Work)\r\n" in reply
    assert b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 Work \\*)] Flags permitted\r\n" in reply
    assert send(proto, transport, "e STORE 1 -FLAGS (Work)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Seen $Label1))\r\ne OK STORE completed\r\n"
    )


def test_store_of_recent_is_refused(h: Harness) -> None:
    # RFC 3501 §2.3.2: \Recent is the server's; a client cannot store it.  The adapter means to
    # answer BAD before the store is asked; the store's own refusal is the NO [CANNOT] fallback.
    fill(h, 1)
    proto, transport = h.select()
    for n, flags in enumerate(["+FLAGS (\\Recent)", "FLAGS (\\Seen \\recent)"]):
        reply = send(proto, transport, f"c{n} STORE 1 {flags}\r\n")
        assert reply == b"c%d BAD \\Recent cannot be stored\r\n" % n
    assert flags_of(h) == {1: frozenset()}


def test_store_in_an_examined_mailbox_is_refused(h: Harness) -> None:
    fill(h, 1)
    proto, transport = h.select(command="EXAMINE")
    for tag, command in (("c", "STORE 1 +FLAGS (\\Seen)"), ("d", "UID STORE 1 FLAGS ()")):
        assert send(proto, transport, f"{tag} {command}\r\n") == (
            b"%s NO [READ-ONLY] Mailbox is read-only (EXAMINE)\r\n" % tag.encode()
        )
    assert flags_of(h) == {1: frozenset()}


def test_store_unchangedsince_reports_the_messages_that_failed(h: Harness) -> None:
    fill(h, 4)
    proto, transport = h.select()
    send(proto, transport, "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    # sequence numbers 1, 2, 3 are UIDs 2, 3, 4
    send(proto, transport, "a STORE 2 +FLAGS.SILENT (\\Seen)\r\n")  # UID 3 changes
    since = modseq(h, 3) - 1
    assert modseq(h, 2) <= since and modseq(h, 4) <= since
    # RFC 7162 §3.1.3: the ones that pass are changed, the one that fails is left alone and named
    # in MODIFIED: by UID for UID STORE ...
    line = f"c UID STORE 2:4 (UNCHANGEDSINCE {since}) +FLAGS (\\Flagged)\r\n"
    reply = send(proto, transport, line)
    new = modseq(h, 2)
    assert new == modseq(h, 4) > modseq(h, 3)
    assert reply == (
        b"* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))\r\n"
        b"* 3 FETCH (UID 4 FLAGS (\\Flagged) MODSEQ (%d))\r\n"
        b"c OK [MODIFIED 3] UID STORE completed\r\n" % (new, new)
    )
    assert flags_of(h) == {2: {"\\Flagged"}, 3: {"\\Seen"}, 4: {"\\Flagged"}}
    # ... and by sequence number for STORE
    reply = send(proto, transport, f"d STORE 1:3 (UNCHANGEDSINCE {new - 1}) -FLAGS (\\Seen)\r\n")
    *fetches, tagged, _ = reply.split(b"\r\n")
    assert tagged == b"d OK [MODIFIED 1,3] STORE completed"
    assert [line.split(b" ")[1] for line in fetches] == [b"2"]
    assert fetches[0].endswith(b"FLAGS () MODSEQ (%d))" % modseq(h, 3))
    assert flags_of(h) == {2: {"\\Flagged"}, 3: frozenset(), 4: {"\\Flagged"}}
    # UNCHANGEDSINCE 0 always fails
    reply = send(proto, transport, "e STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)\r\n")
    assert reply == b"e OK [MODIFIED 1] STORE completed\r\n"
    assert flags_of(h)[2] == {"\\Flagged"}


def test_condstore_puts_uid_and_modseq_in_store_answers_even_silent_ones(h: Harness) -> None:
    # RFC 7162 §3.1: once CONDSTORE is enabled, every untagged FETCH a STORE causes carries both
    # UID and MODSEQ; §3.1.3: a changed message is reported even with .SILENT.
    fill(h, 2)
    proto, transport = h.login()
    assert send(proto, transport, "a ENABLE CONDSTORE\r\n") == (
        b"* ENABLED CONDSTORE\r\na OK ENABLE completed\r\n"
    )
    send(proto, transport, "b SELECT INBOX\r\n")
    reply = send(proto, transport, "c UID STORE 1:2 +FLAGS.SILENT (\\Seen)\r\n")
    assert reply == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        b"c OK UID STORE completed\r\n" % (modseq(h, 1), modseq(h, 2))
    )
    # a message whose flags did not change is not reported under .SILENT
    assert send(proto, transport, "d UID STORE 1:2 +FLAGS.SILENT (\\Seen)\r\n") == (
        b"d OK UID STORE completed\r\n"
    )
    reply = send(proto, transport, "e STORE 1 +FLAGS (\\Flagged)\r\n")
    assert reply == (
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Seen) MODSEQ (%d))\r\ne OK STORE completed\r\n"
        % modseq(h, 1)
    )
    reply = send(proto, transport, "f STORE 2 -FLAGS.SILENT (\\Seen)\r\n")
    assert reply == (
        b"* 2 FETCH (UID 2 FLAGS () MODSEQ (%d))\r\nf OK STORE completed\r\n" % modseq(h, 2)
    )
    # without CONDSTORE, the same .SILENT store says nothing
    other, other_transport = h.select()
    assert send(other, other_transport, "g STORE 1 -FLAGS.SILENT (\\Seen)\r\n") == (
        b"g OK STORE completed\r\n"
    )


def test_condstore_fetch_that_sets_seen_reports_uid_and_modseq(h: Harness) -> None:
    # RFC 7162 §3.1: "... a FETCH/UID FETCH that implicitly set the \Seen flag": UID and MODSEQ.
    fill(h, 1)
    proto, transport = h.login()
    send(proto, transport, "b SELECT INBOX (CONDSTORE)\r\n")
    reply = send(proto, transport, "c FETCH 1 (BODY[TEXT])\r\n")
    assert reply == (
        b"* 1 FETCH (BODY[TEXT] {19}\r\nbody of message 1\r\n UID 1 FLAGS (\\Seen) MODSEQ (%d))"
        b"\r\nc OK FETCH completed\r\n" % modseq(h, 1)
    )


def test_select_condstore_answers_modseq_when_asked(h: Harness) -> None:
    fill(h, 1)
    proto, transport = h.login()
    assert b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % highest(h) in send(
        proto, transport, "b SELECT INBOX (CONDSTORE)\r\n"
    )
    # RFC 7162 §3.1: a FETCH that names neither UID nor MODSEQ and changes nothing need not
    # carry them; this server adds the UID to every FETCH answer once CONDSTORE is on
    assert send(proto, transport, "c FETCH 1 (FLAGS)\r\n") == (
        b"* 1 FETCH (FLAGS () UID 1)\r\nc OK FETCH completed\r\n"
    )
    assert send(proto, transport, "d FETCH 1 (FLAGS MODSEQ)\r\n") == (
        b"* 1 FETCH (FLAGS () MODSEQ (%d) UID 1)\r\nd OK FETCH completed\r\n" % modseq(h, 1)
    )


@pytest.mark.parametrize(
    "enabling",
    [
        "ENABLE CONDSTORE",
        "SELECT INBOX (CONDSTORE)",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 1)",
        "STORE 1 (UNCHANGEDSINCE 1000) +FLAGS (\\Answered)",
        "FETCH 1 (MODSEQ)",
        "SEARCH MODSEQ 1",
        "STATUS INBOX (HIGHESTMODSEQ)",
    ],
)
def test_condstore_enabling_commands(h: Harness, enabling: str) -> None:
    # RFC 7162 §3.1 lists the "CONDSTORE enabling commands"; after any of them, the FETCH answers
    # of a STORE carry MODSEQ for the rest of the connection.
    fill(h, 2)
    proto, transport = h.login()
    if enabling.startswith("ENABLE"):
        assert send(proto, transport, f"a {enabling}\r\n").endswith(b"a OK ENABLE completed\r\n")
        enabling = "NOOP"
    send(proto, transport, "b SELECT INBOX\r\n")
    assert send(proto, transport, f"c {enabling}\r\n").splitlines()[-1].startswith(b"c OK ")
    reply = send(proto, transport, "d STORE 2 +FLAGS (\\Flagged)\r\n")
    assert b" MODSEQ (%d))\r\n" % modseq(h, 2) in reply


# -- COPY -----------------------------------------------------------------------------------------


def test_copy_answers_copyuid_with_source_and_target_sets(h: Harness) -> None:
    fill(h, 4)
    proto, transport = h.select()
    send(proto, transport, "a STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
    trash = uidvalidity(h, "Trash")
    assert send(proto, transport, "c COPY 2:3 Trash\r\n") == (
        b"c OK [COPYUID %d 2:3 1:2] COPY completed\r\n" % trash
    )
    assert send(proto, transport, "d UID COPY 4,1,7 Trash\r\n") == (
        b"d OK [COPYUID %d 1,4 3:4] UID COPY completed\r\n" % trash
    )
    assert flags_of(h, "Trash") == {1: {"\\Flagged"}, 2: set(), 3: set(), 4: set()}
    assert uids_of(h) == [1, 2, 3, 4]  # COPY leaves the source alone
    copies = result_of(h.store.list_messages(ALICE, "Trash"))
    originals = result_of(h.store.list_messages(ALICE, "INBOX"))
    assert [m.message_id for m in copies] == [originals[i].message_id for i in (1, 2, 0, 3)]
    # nothing copied (a UID that does not exist): no COPYUID
    assert send(proto, transport, "e UID COPY 9 Trash\r\n") == b"e OK UID COPY completed\r\n"


def test_copy_to_a_missing_mailbox_is_trycreate(h: Harness) -> None:
    fill(h, 1)
    proto, transport = h.select()
    assert send(proto, transport, "c COPY 1 Nowhere\r\n") == (
        b"c NO [TRYCREATE] Mailbox does not exist: Nowhere\r\n"
    )
    assert send(proto, transport, "d UID MOVE 1 Nowhere\r\n") == (
        b"d NO [TRYCREATE] Mailbox does not exist: Nowhere\r\n"
    )
    assert uids_of(h) == [1]
    assert result_of(h.store.get_mailbox(ALICE, "Nowhere")) is None


def test_copy_from_an_examined_mailbox_is_allowed(h: Harness) -> None:
    fill(h, 1)
    proto, transport = h.select(command="EXAMINE")
    assert send(proto, transport, "c COPY 1 Trash\r\n") == (
        b"c OK [COPYUID %d 1 1] COPY completed\r\n" % uidvalidity(h, "Trash")
    )


def test_copy_into_the_selected_mailbox_is_followed_by_exists(h: Harness) -> None:
    fill(h, 3)
    proto, transport = h.select()
    inbox = uidvalidity(h, "INBOX")
    assert send(proto, transport, "c COPY 1,3 INBOX\r\n") == (
        # The copies are new in the mailbox, and this session is the first to see them: \\Recent
        # to it (RFC 3501 §2.3.2), which it hears with RECENT (§7.3.2).
        b"* 5 EXISTS\r\n* 2 RECENT\r\nc OK [COPYUID %d 1,3 4:5] COPY completed\r\n" % inbox
    )
    assert send(proto, transport, "d FETCH 4:5 UID\r\n") == (
        b"* 4 FETCH (UID 4)\r\n* 5 FETCH (UID 5)\r\nd OK FETCH completed\r\n"
    )


# -- MOVE -----------------------------------------------------------------------------------------


def test_move_sends_copyuid_then_expunges_from_the_highest(h: Harness) -> None:
    fill(h, 5)
    proto, transport = h.select()
    trash = uidvalidity(h, "Trash")
    # RFC 6851 §4.3: COPYUID in an untagged OK, then one EXPUNGE per message, then the tagged OK
    assert send(proto, transport, "c MOVE 2,4 Trash\r\n") == (
        b"* OK [COPYUID %d 2,4 1:2] Moved UIDs\r\n"
        b"* 4 EXPUNGE\r\n"
        b"* 2 EXPUNGE\r\n"
        b"c OK MOVE completed\r\n" % trash
    )
    assert uids_of(h) == [1, 3, 5]
    assert uids_of(h, "Trash") == [1, 2]
    assert send(proto, transport, "d FETCH 1:* UID\r\n") == (
        b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 5)\r\nd OK FETCH completed\r\n"
    )


def test_uid_move(h: Harness) -> None:
    fill(h, 5)
    proto, transport = h.select()
    send(proto, transport, "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    junk = uidvalidity(h, "Junk")
    # UIDs 2..5 are sequence numbers 1..4
    assert send(proto, transport, "c UID MOVE 5,3 Junk\r\n") == (
        b"* OK [COPYUID %d 3,5 1:2] Moved UIDs\r\n"
        b"* 4 EXPUNGE\r\n"
        b"* 2 EXPUNGE\r\n"
        b"c OK UID MOVE completed\r\n" % junk
    )
    assert uids_of(h) == [2, 4]
    assert send(proto, transport, "d UID MOVE 3 Junk\r\n") == b"d OK UID MOVE completed\r\n"


def test_move_from_an_examined_mailbox_is_refused(h: Harness) -> None:
    fill(h, 2)
    proto, transport = h.select(command="EXAMINE")
    assert send(proto, transport, "c MOVE 1 Trash\r\n") == (
        b"c NO [READ-ONLY] Mailbox is read-only (EXAMINE)\r\n"
    )
    assert uids_of(h) == [1, 2] and uids_of(h, "Trash") == []


# -- EXPUNGE --------------------------------------------------------------------------------------


def test_expunge_removes_only_deleted_messages(h: Harness) -> None:
    fill(h, 5)
    proto, transport = h.select()
    send(proto, transport, "a STORE 2,3,5 +FLAGS.SILENT (\\Deleted)\r\n")
    send(proto, transport, "b STORE 1 +FLAGS.SILENT (\\Seen \\Flagged)\r\n")
    assert send(proto, transport, "c EXPUNGE\r\n") == (
        b"* 5 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nc OK EXPUNGE completed\r\n"
    )
    assert uids_of(h) == [1, 4]
    assert send(proto, transport, "d EXPUNGE\r\n") == b"d OK EXPUNGE completed\r\n"


def test_expunge_removes_a_message_another_session_flagged_deleted(h: Harness) -> None:
    # RFC 3501 §6.4.3: EXPUNGE removes *all* messages with \Deleted, as CLOSE does (§6.4.2),
    # whether or not this session has been told of the flag yet.
    fill(h, 3)
    a, ta = h.select()
    b, tb = h.select()
    send(a, ta, "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    send(b, tb, "b STORE 3 +FLAGS.SILENT (\\Deleted)\r\n")  # A has not heard of it
    assert send(a, ta, "c EXPUNGE\r\n") == (
        b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nc OK EXPUNGE completed\r\n"
    )
    assert uids_of(h) == [2]


def test_uid_expunge_removes_only_the_named_deleted_uids(h: Harness) -> None:
    fill(h, 4)
    proto, transport = h.select()
    send(proto, transport, "a STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\n")
    # RFC 4315 §2.1: only messages both named and \Deleted
    assert send(proto, transport, "c UID EXPUNGE 2,4\r\n") == (
        b"* 2 EXPUNGE\r\nc OK UID EXPUNGE completed\r\n"
    )
    assert uids_of(h) == [1, 3, 4]
    assert send(proto, transport, "d UID EXPUNGE 9\r\n") == b"d OK UID EXPUNGE completed\r\n"
    assert send(proto, transport, "e UID EXPUNGE 3:*\r\n") == (
        b"* 2 EXPUNGE\r\ne OK UID EXPUNGE completed\r\n"
    )
    assert uids_of(h) == [1, 4]


def test_expunge_in_an_examined_mailbox_is_refused(h: Harness) -> None:
    fill(h, 2)
    proto, transport = h.select()
    send(proto, transport, "a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    send(proto, transport, "b EXAMINE INBOX\r\n")
    for tag, command in (("c", "EXPUNGE"), ("d", "UID EXPUNGE 1")):
        assert send(proto, transport, f"{tag} {command}\r\n") == (
            b"%s NO [READ-ONLY] Mailbox is read-only (EXAMINE)\r\n" % tag.encode()
        )
    # RFC 3501 §6.4.2: CLOSE after EXAMINE expunges nothing
    assert send(proto, transport, "e CLOSE\r\n") == b"e OK CLOSE completed\r\n"
    assert uids_of(h) == [1, 2]


# -- SEARCH ---------------------------------------------------------------------------------------


@pytest.fixture
def searchable(h: Harness) -> Harness:
    """Five messages, the first one expunged (UIDs 2..6 are sequence numbers 1..5)."""
    h.deliver("gone", numbered(0))
    h.deliver("s1", numbered(1, "Lunch on Friday"))
    h.deliver(
        "s2",
        b"From: Zed Zebra <zed@zoo.test>\r\nTo: alice@example.test\r\nSubject: Re: apples\r\n"
        b"Date: Sun, 1 Nov 2026 09:00:00 +0000\r\n\r\nbananas and pears\r\n",
    )
    h.deliver("s3", numbered(3, "quarterly report"))
    h.deliver("s4", numbered(4, "lunch again"))
    h.deliver(
        "s5",
        b"From: Yves <yves@zoo.test>\r\nSubject: zebra crossing\r\n"
        b"Date: Tue, 3 Nov 2026 08:00:00 +0000\r\n\r\nnothing about apples\r\n",
    )
    result_of(h.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(h.store.expunge(ALICE, "INBOX"))
    result_of(h.store.store_flags(ALICE, "INBOX", [2, 4], "add", ["\\Seen"]))
    result_of(h.store.store_flags(ALICE, "INBOX", [4], "add", ["\\Flagged", "$Todo"]))
    return h


def test_search_by_flags(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    cases = {
        "SEEN": b"1 3",
        "UNSEEN": b"2 4 5",
        "FLAGGED": b"3",
        "UNFLAGGED SEEN": b"1",
        "KEYWORD $Todo": b"3",
        "UNKEYWORD $Todo": b"1 2 4 5",
        "DELETED": b"",
        "OR FLAGGED 5": b"3 5",
        "NOT SEEN 4:5": b"4 5",
        "ALL": b"1 2 3 4 5",
    }
    for key, numbers in cases.items():
        expected = b"* SEARCH " + numbers + b"\r\n" if numbers else b"* SEARCH\r\n"
        assert send(proto, transport, f"c SEARCH {key}\r\n") == (
            expected + b"c OK SEARCH completed\r\n"
        ), key


def test_flag_search_reads_no_message(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    spies = [Spy(h.store, name) for name in ("read_body", "read_body_range", "read_heads")]
    assert send(proto, transport, "c SEARCH SEEN UNFLAGGED LARGER 10\r\n") == (
        b"* SEARCH 1\r\nc OK SEARCH completed\r\n"
    )
    assert [spy.calls for spy in spies] == [[], [], []]


def test_header_search_reads_only_headers(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    whole, ranges, heads = (Spy(h.store, n) for n in ("read_body", "read_body_range", "read_heads"))
    assert send(proto, transport, "c SEARCH SUBJECT lunch\r\n") == (
        b"* SEARCH 1 4\r\nc OK SEARCH completed\r\n"
    )
    assert send(proto, transport, "d SEARCH FROM zoo.test\r\n") == (
        b"* SEARCH 2 5\r\nd OK SEARCH completed\r\n"
    )
    assert send(proto, transport, 'e SEARCH HEADER Subject "re: APPLES"\r\n') == (
        b"* SEARCH 2\r\ne OK SEARCH completed\r\n"
    )
    assert whole.calls == []  # decision 9: never the whole message for a header key
    header = {}
    for m in result_of(h.store.list_messages(ALICE, "INBOX")):
        body = result_of(h.store.read_body(m.message_id))
        header[m.message_id] = body.index(b"\r\n\r\n") + 4
        assert header[m.message_id] < m.size
    # what was read is the header blocks, however batched
    assert ranges.calls or heads.calls
    for message_id, offset, length in ranges.calls:
        assert offset == 0 and length == header[message_id]
    for message_ids, length in heads.calls:
        assert length <= max(header[message_id] for message_id in message_ids)


def test_body_and_text_search(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    whole = Spy(h.store, "read_body")
    assert send(proto, transport, "c SEARCH BODY apples\r\n") == (
        b"* SEARCH 5\r\nc OK SEARCH completed\r\n"
    )
    assert len(whole.calls) == 5
    # TEXT looks at the header too: message 2 has apples in its Subject only
    assert send(proto, transport, "d SEARCH TEXT apples\r\n") == (
        b"* SEARCH 2 5\r\nd OK SEARCH completed\r\n"
    )
    assert send(proto, transport, 'e SEARCH BODY "message 3"\r\n') == (
        b"* SEARCH 3\r\ne OK SEARCH completed\r\n"
    )


def test_uid_search_answers_uids(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    assert send(proto, transport, "c UID SEARCH UNSEEN\r\n") == (
        b"* SEARCH 3 5 6\r\nc OK UID SEARCH completed\r\n"
    )
    assert send(proto, transport, "d UID SEARCH UID 1:3\r\n") == (
        b"* SEARCH 2 3\r\nd OK UID SEARCH completed\r\n"
    )
    assert send(proto, transport, "e SEARCH UID 6\r\n") == (
        b"* SEARCH 5\r\ne OK SEARCH completed\r\n"
    )


def test_esearch_return_options(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    # RFC 4731 §3.1
    assert send(proto, transport, "c SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n") == (
        b'* ESEARCH (TAG "c") MIN 2 MAX 5 COUNT 3 ALL 2,4:5\r\nc OK SEARCH completed\r\n'
    )
    assert send(proto, transport, "d UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n") == (
        b'* ESEARCH (TAG "d") UID MIN 3 MAX 6 COUNT 3 ALL 3,5:6\r\nd OK UID SEARCH completed\r\n'
    )
    assert send(proto, transport, "e SEARCH RETURN () SEEN\r\n") == (  # () means ALL
        b'* ESEARCH (TAG "e") ALL 1,3\r\ne OK SEARCH completed\r\n'
    )
    assert send(proto, transport, "f SEARCH RETURN (COUNT) SUBJECT lunch\r\n") == (
        b'* ESEARCH (TAG "f") COUNT 2\r\nf OK SEARCH completed\r\n'
    )
    # nothing found: MIN, MAX and ALL are left out
    assert send(proto, transport, "g SEARCH RETURN (MIN MAX COUNT ALL) DELETED\r\n") == (
        b'* ESEARCH (TAG "g") COUNT 0\r\ng OK SEARCH completed\r\n'
    )
    assert send(proto, transport, "h SEARCH RETURN (MIN) DELETED\r\n") == (
        b'* ESEARCH (TAG "h")\r\nh OK SEARCH completed\r\n'
    )


def test_modseq_search(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    send(proto, transport, "a STORE 1,5 +FLAGS.SILENT (\\Answered)\r\n")
    changed = modseq(h, 2)
    assert changed == modseq(h, 6) > max(modseq(h, uid) for uid in (3, 4, 5))
    # RFC 7162 §3.1.5: the highest modseq of what was found follows the numbers
    assert send(proto, transport, f"c SEARCH MODSEQ {changed}\r\n") == (
        b"* SEARCH 1 5 (MODSEQ %d)\r\nc OK SEARCH completed\r\n" % changed
    )
    assert send(proto, transport, f"d UID SEARCH MODSEQ {changed} SEEN\r\n") == (
        b"* SEARCH 2 (MODSEQ %d)\r\nd OK UID SEARCH completed\r\n" % changed
    )
    assert send(proto, transport, f"e SEARCH MODSEQ {changed + 1}\r\n") == (
        b"* SEARCH\r\ne OK SEARCH completed\r\n"
    )
    assert send(proto, transport, f"f SEARCH RETURN (COUNT) MODSEQ {changed}\r\n") == (
        b'* ESEARCH (TAG "f") COUNT 2 MODSEQ %d\r\nf OK SEARCH completed\r\n' % changed
    )


def test_search_charset_utf8_with_a_literal(h: Harness) -> None:
    h.deliver("a1", numbered(1, "plain"))
    h.deliver("a2", numbered(2, "=?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?="))
    h.deliver("a3", numbered(3, "café au lait"))  # raw 8-bit UTF-8 in the header
    h.deliver("a4", numbered(4, "cafe without accent"))
    proto, transport = h.select()
    word = "café".encode()
    assert send(proto, transport, b"c SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(word)) == (
        b"+ Ready for literal data\r\n"
    )
    assert send(proto, transport, word + b"\r\n") == b"* SEARCH 2 3\r\nc OK SEARCH completed\r\n"
    # LITERAL+, and TEXT looks into decoded header fields too
    creme = "crème".encode()
    line = b"d SEARCH CHARSET UTF-8 TEXT {%d+}\r\n%s\r\n" % (len(creme), creme)
    assert send(proto, transport, line) == b"* SEARCH 2\r\nd OK SEARCH completed\r\n"
    assert send(proto, transport, "e SEARCH CHARSET KOI8-R SUBJECT x\r\n") == (
        b"e NO [BADCHARSET (US-ASCII UTF-8)] unsupported charset KOI8-R\r\n"
    )


# -- SORT -----------------------------------------------------------------------------------------


def test_sort(searchable: Harness) -> None:
    h = searchable
    proto, transport = h.select()
    # base subjects (RFC 5256 §2.1): lunch on friday, apples, quarterly report, lunch again,
    # zebra crossing
    assert send(proto, transport, "c SORT (SUBJECT) UTF-8 ALL\r\n") == (
        b"* SORT 2 4 1 3 5\r\nc OK SORT completed\r\n"
    )
    # dates: 2 Nov 10:00:01, 1 Nov, 2 Nov 10:00:03, 2 Nov 10:00:04, 3 Nov
    assert send(proto, transport, "d SORT (REVERSE DATE) UTF-8 ALL\r\n") == (
        b"* SORT 5 4 3 1 2\r\nd OK SORT completed\r\n"
    )
    assert send(proto, transport, "e UID SORT (SUBJECT) UTF-8 UNSEEN\r\n") == (
        b"* SORT 3 5 6\r\ne OK UID SORT completed\r\n"
    )
    assert send(proto, transport, "f UID SORT (REVERSE SUBJECT) US-ASCII SUBJECT lunch\r\n") == (
        b"* SORT 2 5\r\nf OK UID SORT completed\r\n"
    )


# -- STATUS ---------------------------------------------------------------------------------------


def test_status_items(h: Harness) -> None:
    fill(h, 3)
    result_of(h.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Seen"]))
    proto, transport = h.login()
    items = "MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ"
    assert send(proto, transport, f"c STATUS inbox ({items})\r\n") == (
        b"* STATUS INBOX (MESSAGES 3 RECENT 0 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2 HIGHESTMODSEQ %d)"
        b"\r\nc OK STATUS completed\r\n" % (uidvalidity(h, "INBOX"), highest(h))
    )
    assert send(proto, transport, "d STATUS Trash (UNSEEN MESSAGES)\r\n") == (
        b"* STATUS Trash (UNSEEN 0 MESSAGES 0)\r\nd OK STATUS completed\r\n"
    )


def test_status_of_a_missing_mailbox(h: Harness) -> None:
    proto, transport = h.login()
    assert send(proto, transport, "c STATUS Nowhere (MESSAGES)\r\n").startswith(
        b"c NO [NONEXISTENT] "
    )


# -- CREATE, RENAME, DELETE, SUBSCRIBE ------------------------------------------------------------


def list_names(proto: IMAPProtocol, transport: StringTransport, command: str = "LIST") -> bytes:
    return send(proto, transport, f'l {command} "" "*"\r\n')


def test_create_with_a_trailing_delimiter(h: Harness) -> None:
    proto, transport = h.login()
    assert send(proto, transport, "c CREATE Projects/\r\n") == b"c OK CREATE completed\r\n"
    assert send(proto, transport, "d CREATE Projects/2026/Q1\r\n") == b"d OK CREATE completed\r\n"
    names = [m.name for m in result_of(h.store.list_mailboxes(ALICE))]
    assert "Projects" in names and "Projects/2026" in names and "Projects/2026/Q1" in names
    assert b'* LIST (\\HasChildren) "/" Projects\r\n' in list_names(proto, transport)
    assert send(proto, transport, "e CREATE Projects\r\n").startswith(b"e NO [ALREADYEXISTS] ")
    assert send(proto, transport, "f CREATE inbox\r\n").startswith(b"f NO [ALREADYEXISTS] ")


def test_rename_a_folder_and_its_children(h: Harness) -> None:
    proto, transport = h.login()
    send(proto, transport, "a CREATE Work/Old\r\n")
    assert send(proto, transport, "c RENAME Work Archive/Work\r\n") == (
        b"c OK RENAME completed\r\n"
    )
    names = [m.name for m in result_of(h.store.list_mailboxes(ALICE))]
    assert {"Archive", "Archive/Work", "Archive/Work/Old"} <= set(names)
    assert "Work" not in names and "Work/Old" not in names
    assert send(proto, transport, "d RENAME Nowhere Else\r\n").startswith(b"d NO [NONEXISTENT] ")
    assert send(proto, transport, "e RENAME Archive Trash\r\n").startswith(b"e NO [ALREADYEXISTS] ")


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(h: Harness) -> None:
    fill(h, 3)
    proto, transport = h.select()  # the session has INBOX selected
    # RFC 3501 §6.3.5: the messages move to the new mailbox; INBOX stays, empty
    assert send(proto, transport, "c RENAME INBOX Old-Inbox\r\n") == (
        b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nc OK RENAME completed\r\n"
    )
    assert uids_of(h) == []
    assert len(uids_of(h, "Old-Inbox")) == 3
    h.deliver("new", BODY2)
    assert send(proto, transport, "d NOOP\r\n") == b"* 1 EXISTS\r\nd OK NOOP completed\r\n"


def test_delete(h: Harness) -> None:
    fill(h, 1)
    proto, transport = h.login()
    send(proto, transport, "a CREATE Parent/Child\r\na CREATE Work\r\n")
    send(proto, transport, "b SELECT Work\r\n")
    assert send(proto, transport, "c DELETE Work\r\n") == (
        b"c NO [INUSE] Cannot delete the selected mailbox\r\n"
    )
    assert send(proto, transport, "c DELETE work/\r\n").startswith(b"c NO [NONEXISTENT] ")
    send(proto, transport, "d UNSELECT\r\n")
    assert send(proto, transport, "e DELETE Work\r\n") == b"e OK DELETE completed\r\n"
    # a mailbox with children is refused rather than left as a \Noselect name
    assert send(proto, transport, "f DELETE Parent\r\n").startswith(b"f NO [INUSE] ")
    assert send(proto, transport, "g DELETE INBOX\r\n").startswith(b"g NO [CANNOT] ")
    assert send(proto, transport, "h DELETE Parent/Child\r\n") == b"h OK DELETE completed\r\n"
    assert send(proto, transport, "i DELETE Parent\r\n") == b"i OK DELETE completed\r\n"
    names = [m.name for m in result_of(h.store.list_mailboxes(ALICE))]
    assert names == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]
    assert send(proto, transport, "j DELETE Work\r\n").startswith(b"j NO [NONEXISTENT] ")


def test_subscriptions_show_in_lsub_and_list_subscribed(h: Harness) -> None:
    proto, transport = h.login()
    send(proto, transport, "a CREATE Lists/ietf\r\n")
    assert b"Lists" not in list_names(proto, transport, "LSUB")
    assert send(proto, transport, "c SUBSCRIBE Lists/ietf\r\n") == b"c OK SUBSCRIBE completed\r\n"
    # As Dovecot answers: LSUB has no child attributes, LIST-EXTENDED only what RETURN asks.
    assert send(proto, transport, 'd LSUB "" "Lists/*"\r\n') == (
        b'* LSUB () "/" Lists/ietf\r\nd OK LSUB completed\r\n'
    )
    assert send(proto, transport, 'e LIST (SUBSCRIBED) "" "L*"\r\n') == (
        b'* LIST (\\Subscribed) "/" Lists/ietf\r\ne OK LIST completed\r\n'
    )
    assert send(proto, transport, 'f LIST "" "L*" RETURN (SUBSCRIBED)\r\n') == (
        b'* LIST () "/" Lists\r\n* LIST (\\Subscribed) "/" Lists/ietf\r\nf OK LIST completed\r\n'
    )
    assert send(proto, transport, "g UNSUBSCRIBE Lists/ietf\r\n") == (
        b"g OK UNSUBSCRIBE completed\r\n"
    )
    assert send(proto, transport, 'h LSUB "" "Lists/*"\r\n') == b"h OK LSUB completed\r\n"
    assert send(proto, transport, 'i LIST (SUBSCRIBED) "" "L*"\r\n') == b"i OK LIST completed\r\n"
    assert send(proto, transport, "j UNSUBSCRIBE INBOX\r\n") == b"j OK UNSUBSCRIBE completed\r\n"
    assert b" INBOX\r\n" not in list_names(proto, transport, "LSUB")
    assert send(proto, transport, "k SUBSCRIBE Nowhere\r\n").startswith(b"k NO [NONEXISTENT] ")


# -- APPEND ---------------------------------------------------------------------------------------

REPORT = (
    b"From: Sender <sender@origin.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"see attached\r\n"
    b"--XX\r\n"
    b'Content-Type: application/pdf; name="r.pdf"\r\n'
    b'Content-Disposition: attachment; filename="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX--\r\n"
)


def test_append_with_a_synchronizing_literal(h: Harness) -> None:
    proto, transport = h.login()
    head = b"c APPEND Drafts {%d}\r\n" % len(BODY2)
    assert send(proto, transport, head) == b"+ Ready for literal data\r\n"
    assert send(proto, transport, BODY2[:10]) == b""
    reply = send(proto, transport, BODY2[10:] + b"\r\n")
    assert reply == b"c OK [APPENDUID %d 1] APPEND completed\r\n" % uidvalidity(h, "Drafts")
    [message] = result_of(h.store.list_messages(ALICE, "Drafts"))
    assert result_of(h.store.read_body(message.message_id)) == BODY2
    # an appended message goes into the mailbox only: never into the relay queue
    assert result_of(h.store.list_entries()) == []


def test_append_with_literal_plus(h: Harness) -> None:
    proto, transport = h.login()
    drafts = uidvalidity(h, "Drafts")
    assert send(proto, transport, append_line("Drafts", BODY1)) == (
        b"c OK [APPENDUID %d 1] APPEND completed\r\n" % drafts
    )
    # pipelined behind another command, split anywhere
    data = append_line("Drafts", BODY2) + b"d NOOP\r\n"
    out = b"".join(send(proto, transport, data[i : i + 7]) for i in range(0, len(data), 7))
    assert out == b"c OK [APPENDUID %d 2] APPEND completed\r\nd OK NOOP completed\r\n" % drafts


def test_append_keeps_flags_and_internal_date(h: Harness) -> None:
    proto, transport = h.login()
    extra = '(\\Seen $Forwarded) "01-Nov-2026 10:00:00 +0100"'
    assert send(proto, transport, append_line("Sent", BODY1, extra)).startswith(b"c OK [APPENDUID ")
    assert send(proto, transport, append_line("Sent", BODY2)).startswith(b"c OK [APPENDUID ")
    send(proto, transport, "d EXAMINE Sent\r\n")
    now = h.clock.seconds()
    assert now == 1_800_000_000  # 15-Jan-2027 08:00:00 UTC
    assert send(proto, transport, "e FETCH 1:2 (FLAGS INTERNALDATE)\r\n") == (
        # EXAMINE shows what no session has selected yet as \\Recent (and takes nothing).
        b'* 1 FETCH (FLAGS (\\Recent \\Seen $Forwarded) INTERNALDATE " 1-Nov-2026 09:00:00 +0000")'
        b"\r\n"
        b'* 2 FETCH (FLAGS (\\Recent) INTERNALDATE "15-Jan-2027 08:00:00 +0000")\r\n'
        b"e OK FETCH completed\r\n"
    )


def test_append_to_a_missing_mailbox_is_trycreate_and_stores_nothing(h: Harness) -> None:
    proto, transport = h.login()
    before = result_of(h.store.message_count())
    assert send(proto, transport, append_line("Nowhere", BODY1)) == (
        b"c NO [TRYCREATE] Mailbox does not exist: Nowhere\r\n"
    )
    head = b"d APPEND Nowhere/Deeper {%d}\r\n" % len(BODY1)
    assert send(proto, transport, head) == b"+ Ready for literal data\r\n"
    assert send(proto, transport, BODY1 + b"\r\n") == (
        b"d NO [TRYCREATE] Mailbox does not exist: Nowhere/Deeper\r\n"
    )
    assert result_of(h.store.message_count()) == before
    assert result_of(h.store.get_mailbox(ALICE, "Nowhere")) is None
    assert send(proto, transport, "e NOOP\r\n") == b"e OK NOOP completed\r\n"


@pytest.mark.parametrize("flags", ["(\\Recent)", "(\\Seen \\Bogus)"])
def test_append_with_a_flag_that_cannot_be_stored_stores_nothing(h: Harness, flags: str) -> None:
    # Checked before the message is committed, like a missing mailbox: a refused APPEND must not
    # leave a stored body that no mailbox holds.
    proto, transport = h.login()
    before = result_of(h.store.message_count())
    reply = send(proto, transport, append_line("Drafts", BODY1, flags))
    assert reply.startswith((b"c BAD ", b"c NO "))
    assert result_of(h.store.list_messages(ALICE, "Drafts")) == []
    assert result_of(h.store.message_count()) == before
    assert send(proto, transport, "d NOOP\r\n") == b"d OK NOOP completed\r\n"


def test_appended_message_is_served_byte_exact_with_its_structure(h: Harness) -> None:
    proto, transport = h.login()
    send(proto, transport, append_line("Drafts", REPORT, "(\\Draft)"))
    send(proto, transport, "d SELECT Drafts\r\n")
    assert send(proto, transport, "e FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n") == (
        b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n" % (len(REPORT), len(REPORT))
        + REPORT
        + b")\r\ne OK FETCH completed\r\n"
    )
    # RFC 3501 §9: body-type-mpart = 1*body SP media-subtype: the parts are not separated by SP
    assert send(proto, transport, "f FETCH 1 BODYSTRUCTURE\r\n") == (
        b"* 1 FETCH (BODYSTRUCTURE ("
        b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 12 0 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" "r.pdf") NIL NIL "base64" 12 NIL'
        b' ("attachment" ("filename" "r.pdf")) NIL NIL)'
        b' "mixed" ("boundary" "XX") NIL NIL NIL))\r\n'
        b"f OK FETCH completed\r\n"
    )
    mime = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert send(proto, transport, "g FETCH 1 (BODY.PEEK[2] BODY.PEEK[1.MIME])\r\n") == (
        b'* 1 FETCH (BODY[2] "JVBERi0xLjQK" BODY[1.MIME] {%d}\r\n' % len(mime)
        + mime
        + b")\r\ng OK FETCH completed\r\n"
    )


def test_append_to_the_selected_mailbox_is_followed_by_exists(h: Harness) -> None:
    fill(h, 2)
    proto, transport = h.select()
    assert send(proto, transport, append_line("INBOX", BODY2)) == (
        b"* 3 EXISTS\r\n* 1 RECENT\r\nc OK [APPENDUID %d 3] APPEND completed\r\n"
        % uidvalidity(h, "INBOX")
    )
    assert send(proto, transport, "d FETCH 3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n") == (
        b"* 3 FETCH (UID 3 BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: second\r\n\r\n)\r\n"
        b"d OK FETCH completed\r\n"
    )


class _FailingWriter:
    """A message writer whose writes fail (disk full), recording that it was aborted."""

    def __init__(self) -> None:
        self.aborted = False
        self.size = 0

    def write(self, data: bytes) -> Deferred[None]:
        return fail(StorageError("disk full"))

    def commit(self, incoming: Any) -> Deferred[StoredMessage]:
        return fail(StorageError("not written"))

    def abort(self) -> Deferred[None]:
        self.aborted = True
        return succeed(None)


def test_append_write_failure_is_a_temporary_no_and_the_session_goes_on(h: Harness) -> None:
    proto, transport = h.select()
    writers: list[_FailingWriter] = []

    def begin(message_id: str) -> _FailingWriter:
        writers.append(_FailingWriter())
        return writers[-1]

    real = h.store.begin
    h.store.begin = begin  # type: ignore[assignment,method-assign]
    reply = send(proto, transport, append_line("INBOX", BODY1 * 50) + b"d NOOP\r\n")
    assert reply == (
        b"c NO [UNAVAILABLE] Temporary server failure, try again later\r\nd OK NOOP completed\r\n"
    )
    assert [w.aborted for w in writers] == [True]
    assert uids_of(h) == []
    h.store.begin = real  # type: ignore[method-assign]
    assert send(proto, transport, append_line("INBOX", BODY1)).startswith(
        b"* 1 EXISTS\r\n* 1 RECENT\r\nc OK [APPENDUID "
    )


# -- updates between sessions ---------------------------------------------------------------------


def test_noop_reports_what_another_session_did(h: Harness) -> None:
    fill(h, 3)
    a, ta = h.select()
    b, tb = h.select()
    send(b, tb, "b STORE 2 +FLAGS (\\Flagged)\r\n")
    assert send(a, ta, "a NOOP\r\n") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\na OK NOOP completed\r\n"
    )
    assert send(a, ta, "a NOOP\r\n") == b"a OK NOOP completed\r\n"  # told once
    send(b, tb, "b STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert send(a, ta, "a NOOP\r\n") == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\na OK NOOP completed\r\n"
    send(b, tb, append_line("INBOX", BODY2))
    assert send(a, ta, "a CHECK\r\n") == b"* 2 EXISTS\r\na OK CHECK completed\r\n"
    assert send(a, ta, "a FETCH 2 UID\r\n") == b"* 2 FETCH (UID 4)\r\na OK FETCH completed\r\n"


def test_noop_reports_changes_with_modseq_under_condstore(h: Harness) -> None:
    fill(h, 1)
    a, ta = h.login()
    send(a, ta, "a SELECT INBOX (CONDSTORE)\r\n")
    b, tb = h.select()
    send(b, tb, "b STORE 1 +FLAGS.SILENT (\\Seen)\r\n")
    assert send(a, ta, "a NOOP\r\n") == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\na OK NOOP completed\r\n" % modseq(h, 1)
    )


def test_idle_is_told_at_once_of_another_sessions_changes(h: Harness) -> None:
    fill(h, 2)
    a, ta = h.select()
    b, tb = h.select()
    assert send(a, ta, "a IDLE\r\n") == b"+ idling\r\n"
    ta.clear()
    send(b, tb, "b STORE 1 +FLAGS (\\Seen)\r\n")
    assert ta.value() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
    ta.clear()
    send(b, tb, append_line("INBOX", BODY2))
    assert ta.value() == b"* 3 EXISTS\r\n* 1 RECENT\r\n"  # woken first, it saw it first
    ta.clear()
    send(b, tb, "b STORE 2 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert ta.value() == b"* 2 FETCH (UID 2 FLAGS (\\Deleted))\r\n* 2 EXPUNGE\r\n"
    assert send(a, ta, "DONE\r\n") == b"a OK IDLE terminated\r\n"


def test_idle_sees_a_delivery_made_in_the_store_after_the_poll_interval(h: Harness) -> None:
    fill(h, 1)
    a, ta = h.select()
    send(a, ta, "a IDLE\r\n")
    ta.clear()
    h.deliver("intake", BODY2)  # intake writes to the store: no session is told
    assert ta.value() == b""
    h.clock.advance(h.factory.idle_poll_interval - 0.01)
    assert ta.value() == b""
    h.clock.advance(0.01)
    assert ta.value() == b"* 2 EXISTS\r\n"
    ta.clear()
    h.clock.advance(h.factory.idle_poll_interval * 3)  # polling goes on; nothing new
    assert ta.value() == b""
    h.deliver("intake2", BODY1)
    h.clock.advance(h.factory.idle_poll_interval)
    assert ta.value() == b"* 3 EXISTS\r\n"
    assert send(a, ta, "DONE\r\n") == b"a OK IDLE terminated\r\n"
    # DONE stops the polling: only the idle timeout is left on the clock
    assert len(h.clock.getDelayedCalls()) == 1
    h.deliver("intake3", BODY1)
    ta.clear()
    h.clock.advance(h.factory.idle_poll_interval * 2)
    assert ta.value() == b""


def test_idle_is_told_of_a_change_made_while_it_was_looking(h: Harness) -> None:
    # A real store answers from its thread: an idling session may be in the middle of a look
    # (its poll) when another session's change wakes it.  That wake-up must not wait for the
    # next poll: the look in flight may have read the state from before the change.
    fill(h, 1)
    a, ta = h.select()
    b, tb = h.select()
    send(a, ta, "a IDLE\r\n")
    ta.clear()
    held: list[tuple[Deferred[Any], Deferred[Any]]] = []
    real = h.store.get_mailbox

    def slow(user: str, name: str) -> Deferred[Any]:
        if held:  # only A's first look is held
            return real(user, name)
        waiting: Deferred[Any] = Deferred()
        held.append((waiting, real(user, name)))  # the answer as of now
        return waiting

    h.store.get_mailbox = slow  # type: ignore[method-assign]
    h.clock.advance(h.factory.idle_poll_interval)  # A's poll: its look waits for the store
    assert len(held) == 1
    h.store.get_mailbox = real  # type: ignore[method-assign]
    send(b, tb, "b STORE 1 +FLAGS.SILENT (\\Seen)\r\n")  # wakes A while it is busy
    waiting, answer = held[0]
    answer.addCallback(waiting.callback)  # the store answers A's look (with the old state)
    assert ta.value() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"


def test_a_store_failure_during_idle_is_not_an_error_of_ours(h: Harness) -> None:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        fill(h, 1)
        a, ta = h.select()
        send(a, ta, "a IDLE\r\n")
        ta.clear()
        real = h.store.get_mailbox
        h.store.get_mailbox = lambda user, name: fail(  # type: ignore[method-assign]
            StorageError("database is locked")
        )
        h.clock.advance(h.factory.idle_poll_interval)
        assert ta.value() == b""  # nothing to say to the client
        h.store.get_mailbox = real  # type: ignore[method-assign]
        h.deliver("late", BODY2)
        h.clock.advance(h.factory.idle_poll_interval)
        assert ta.value() == b"* 2 EXISTS\r\n"
        assert send(a, ta, "DONE\r\n") == b"a OK IDLE terminated\r\n"
    finally:
        globalLogPublisher.removeObserver(observer)
    # "IMAP answer failed" is the adapter's own word for a bug of ours: never for a store error
    ours = [e for e in events if e.get("log_failure") is not None]
    assert [e["log_failure"].value for e in ours] == []


def test_a_lost_connection_stops_idle_polling(h: Harness) -> None:
    a, ta = h.select()
    send(a, ta, "a IDLE\r\n")
    a.connectionLost(None)
    assert h.clock.getDelayedCalls() == []


def test_no_expunge_after_fetch_store_or_search_by_sequence_number(h: Harness) -> None:
    # RFC 3501 §7.4.1: no EXPUNGE while a FETCH, STORE or SEARCH (by sequence number) is in
    # progress; it comes with the next command that allows it.
    fill(h, 3)
    a, ta = h.select()
    b, tb = h.select()
    send(b, tb, "b STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert b"EXPUNGE" not in send(a, ta, "a FETCH 2 UID\r\n")
    assert send(a, ta, "a FETCH 2:3 UID\r\n") == (
        b"* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\na OK FETCH completed\r\n"
    )
    assert send(a, ta, "a STORE 3 +FLAGS (\\Seen)\r\n") == (
        b"* 3 FETCH (FLAGS (\\Seen))\r\na OK STORE completed\r\n"
    )
    assert send(a, ta, "a SEARCH ALL\r\n") == b"* SEARCH 2 3\r\na OK SEARCH completed\r\n"
    assert send(a, ta, "a SORT (SUBJECT) UTF-8 ALL\r\n") == b"* SORT 2 3\r\na OK SORT completed\r\n"
    assert send(a, ta, "a COPY 2 Trash\r\n").startswith(b"a OK [COPYUID ")
    assert send(a, ta, "a NOOP\r\n") == b"* 1 EXPUNGE\r\na OK NOOP completed\r\n"
    assert send(a, ta, "a FETCH 1:* UID\r\n") == (
        b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\na OK FETCH completed\r\n"
    )


def test_uid_commands_do_report_expunges(h: Harness) -> None:
    fill(h, 3)
    a, ta = h.select()
    b, tb = h.select()
    send(b, tb, "b STORE 2 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert send(a, ta, "a UID FETCH 3 UID\r\n") == (
        b"* 3 FETCH (UID 3)\r\n* 2 EXPUNGE\r\na OK UID FETCH completed\r\n"
    )
    send(b, tb, "b STORE 1 +FLAGS.SILENT (\\Deleted)\r\nb EXPUNGE\r\n")
    assert send(a, ta, "a UID SEARCH ALL\r\n") == (
        b"* SEARCH 3\r\n* 1 EXPUNGE\r\na OK UID SEARCH completed\r\n"
    )


def test_sessions_of_another_user_are_never_told(h: Harness) -> None:
    fill(h, 1)
    fill(h, 1, BOB)
    alice, ta = h.select()
    bob, tb = h.select(BOB)
    send(bob, tb, "b IDLE\r\n")
    tb.clear()
    send(alice, ta, "a STORE 1 +FLAGS (\\Seen)\r\n")
    send(alice, ta, append_line("INBOX", BODY2))
    h.clock.advance(h.factory.idle_poll_interval)
    assert tb.value() == b""
    assert send(bob, tb, "DONE\r\nb NOOP\r\n") == (
        b"b OK IDLE terminated\r\nb OK NOOP completed\r\n"
    )
    assert flags_of(h, user=BOB) == {1: frozenset()}


# -- FETCH CHANGEDSINCE ---------------------------------------------------------------------------


def test_fetch_changedsince(h: Harness) -> None:
    fill(h, 4)
    proto, transport = h.select()
    since = highest(h)
    send(proto, transport, "a STORE 2 +FLAGS.SILENT (\\Seen)\r\n")
    send(proto, transport, "a STORE 4 +FLAGS.SILENT (\\Flagged)\r\n")
    two, four = modseq(h, 2), modseq(h, 4)
    assert since < two < four
    # RFC 7162 §3.1.4.1: only messages whose modseq is greater; MODSEQ in every answer (and,
    # CHANGEDSINCE having enabled CONDSTORE, the UID: §3.1)
    assert send(proto, transport, f"c FETCH 1:* (FLAGS) (CHANGEDSINCE {since})\r\n") == (
        b"* 2 FETCH (FLAGS (\\Seen) MODSEQ (%d) UID 2)\r\n"
        b"* 4 FETCH (FLAGS (\\Flagged) MODSEQ (%d) UID 4)\r\n"
        b"c OK FETCH completed\r\n" % (two, four)
    )
    assert send(proto, transport, f"d UID FETCH 1:3 (FLAGS) (CHANGEDSINCE {since})\r\n") == (
        b"* 2 FETCH (FLAGS (\\Seen) UID 2 MODSEQ (%d))\r\nd OK UID FETCH completed\r\n" % two
    )
    assert send(proto, transport, f"e FETCH 1:* (UID) (CHANGEDSINCE {four})\r\n") == (
        b"e OK FETCH completed\r\n"
    )


# -- login throttling: delays, never a refusal (issue 11) -----------------------------------------


def answered(h: Harness, transport: StringTransport) -> bytes:
    """What the session wrote, the clock advanced exactly until it wrote something."""
    while not transport.value():
        h.clock.advance(min(c.getTime() for c in h.clock.getDelayedCalls()) - h.clock.seconds())
    return bytes(transport.value())


def attempt(h: Harness, user: str, password: str, host: str = "127.0.0.1") -> bytes:
    """One LOGIN on a fresh session from ``host``, the clock advanced until it is answered."""
    proto, transport = h.connect(host)
    send(proto, transport, f'x LOGIN {user} "{password}"\r\n')
    return answered(h, transport)


def test_a_guessers_login_is_answered_only_after_its_delay(h: Harness) -> None:
    assert attempt(h, ALICE, "wrong").startswith(b"x NO [AUTHENTICATIONFAILED] ")
    calls = h.executor.calls
    proto, transport = h.connect()
    assert send(proto, transport, f'y LOGIN {ALICE} "{PASSWORD}"\r\n') == b""
    h.clock.advance(0.999)
    assert transport.value() == b"" and h.executor.calls == calls  # not even checked yet
    h.clock.advance(0.001)
    assert transport.value().startswith(b"y OK ")  # the right password: never refused


def test_the_right_password_from_another_address_is_not_delayed(h: Harness) -> None:
    for _ in range(6):
        attempt(h, ALICE, "wrong", "127.0.0.3")
    proto, transport = h.connect("127.0.0.2")
    assert send(proto, transport, f'x LOGIN {ALICE} "{PASSWORD}"\r\n').startswith(b"x OK ")


def test_the_webmail_naming_nobody_slows_only_the_user_guessed(h: Harness) -> None:
    for n in range(30):
        attempt(h, f"u{n}@example.test", "x", "10.1.0.5")
    for _ in range(3):
        attempt(h, BOB, "wrong", "10.1.0.5")
    proto, transport = h.connect("10.1.0.5")
    assert send(proto, transport, f'x LOGIN {ALICE} "{PASSWORD}"\r\n').startswith(b"x OK ")
    proto, transport = h.connect("10.1.0.5")
    assert send(proto, transport, f'x LOGIN {BOB} "{PASSWORD}"\r\n') == b""
    h.clock.advance(4)
    assert transport.value().startswith(b"x OK ")


ID_FOR = 'y ID ("name" "Roundcube" "x-originating-ip" "{}")\r\n'


def login_as_for(h: Harness, host: str, origin: str, password: str) -> tuple[Any, StringTransport]:
    """A session from ``host`` that names ``origin`` in ID, then logs in as ALICE."""
    proto, transport = h.connect(host)
    assert send(proto, transport, ID_FOR.format(origin)).endswith(b"y OK ID completed\r\n")
    send(proto, transport, f'x LOGIN {ALICE} "{password}"\r\n')
    return proto, transport


def test_id_x_originating_ip_from_the_webmail_is_the_address_the_throttle_counts(
    h: Harness,
) -> None:
    guesser, user = "203.0.113.9", "198.51.100.7"
    for _ in range(5):
        proto, transport = login_as_for(h, "10.1.0.5", guesser, "wrong")
        assert answered(h, transport).startswith(b"x NO [AUTHENTICATIONFAILED] ")
    # Alice's own browser through the same webmail host: at once.
    proto, transport = login_as_for(h, "10.1.0.5", user, PASSWORD)
    assert transport.value().startswith(b"x OK ")
    # The guesser's next guess waits its 15 s.
    proto, transport = login_as_for(h, "10.1.0.5", guesser, "wrong again")
    h.clock.advance(14.999)
    assert transport.value() == b""
    h.clock.advance(0.001)
    assert transport.value().startswith(b"x NO [AUTHENTICATIONFAILED] ")


def test_id_x_originating_ip_from_an_untrusted_client_is_ignored() -> None:
    h = Harness(implicit_tls=True)  # port 993: plaintext login from anywhere
    for n in range(3):
        proto, transport = login_as_for(h, "192.0.2.7", f"203.0.113.{n}", "wrong")
        assert answered(h, transport).startswith(b"x NO [AUTHENTICATIONFAILED] ")
    # Counted against 192.0.2.7 itself, whatever it claimed: the next one waits 4 s.
    proto, transport = login_as_for(h, "192.0.2.7", "203.0.113.99", PASSWORD)
    h.clock.advance(3.999)
    assert transport.value() == b""
    h.clock.advance(0.001)
    assert transport.value().startswith(b"x OK ")


def test_a_failed_login_is_logged_with_the_forwarded_address(h: Harness) -> None:
    with capturedLogs() as logs:
        login_as_for(h, "10.1.0.5", "2001:db8:1::5", "wrong")
        login_as_for(h, "10.1.0.5", "2001:db8:2::6", PASSWORD)
    lines = [formatEvent(e) for e in logs]
    assert (
        "login failed for 'alice@example.test' from 2001:db8:1::5 via 10.1.0.5: wrong password"
        in lines
    )
    assert "IMAP login alice@example.test from 2001:db8:2::6 via 10.1.0.5" in lines


def test_an_id_after_login_changes_nothing_and_the_per_connection_limit_stays(
    h: Harness,
) -> None:
    proto, transport = h.login(host="10.1.0.5")
    assert send(proto, transport, ID_FOR.format("203.0.113.9")).endswith(b"y OK ID completed\r\n")
    assert proto.engine is not None and proto.engine.origin is None


# -- connection limits ----------------------------------------------------------------------------


def open_raw(h: Harness, host: str) -> tuple[Any, StringTransport]:
    protocol = h.factory.buildProtocol(IPv4Address("TCP", host, 50000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_over_the_limit_per_address_get_bye(h: Harness) -> None:
    h = Harness(connections=ConnectionLimits(max_connections=3, max_per_ip=2))
    first, first_transport = open_raw(h, "192.0.2.1")
    open_raw(h, "192.0.2.1")
    refused, transport = open_raw(h, "192.0.2.1")
    assert not isinstance(refused, IMAPProtocol)
    assert transport.value() == b"* BYE Too many connections from 192.0.2.1\r\n"
    assert transport.disconnecting
    assert h.factory.open_connections == 2
    # another address still gets in, up to the total
    other, other_transport = open_raw(h, "192.0.2.2")
    assert other_transport.value().startswith(b"* OK [CAPABILITY ")
    _, transport = open_raw(h, "192.0.2.3")
    assert transport.value() == b"* BYE Too many connections\r\n"
    # a closed connection makes room
    first.connectionLost(None)
    again, again_transport = open_raw(h, "192.0.2.1")
    assert isinstance(again, IMAPProtocol)
    assert again_transport.value().startswith(b"* OK [CAPABILITY ")
    # a refused connection going away releases nothing it did not hold
    refused.connectionLost(None)
    _, transport = open_raw(h, "192.0.2.1")
    assert transport.value() == b"* BYE Too many connections\r\n"


# -- streaming large bodies -----------------------------------------------------------------------


class ClientBuffer(StringTransport):
    """
    A transport with a send buffer of ``limit`` octets, as Twisted's TCP and TLS transports
    behave towards a streaming producer: a write that fills the buffer pauses the producer;
    L{drain} (the client read everything) empties it and resumes the producer, if it paused it.
    Like TLS's producer wrapper, a registration starts afresh: it resumes only what it paused.
    """

    def __init__(self, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self._paused_it = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        self._paused_it = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and not self._paused_it and len(self.value()) >= self.limit:
            self._paused_it = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data = bytes(self.value())
        self.clear()
        if self.producer is not None and self._paused_it:
            self._paused_it = False
            self.producer.resumeProducing()
        return data

    def drain_all(self, rounds: int = 50) -> bytes:
        """Read until the server writes nothing more."""
        out = []
        for _ in range(rounds):
            data = self.drain()
            if not data:
                break
            out.append(data)
        return b"".join(out)


def big_body(n: int = 1) -> bytes:
    line = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-+!\r\n"
    body = b"Subject: big %d\r\n\r\n" % n + line * (int(2.5 * STREAM_CHUNK) // len(line))
    assert len(body) > STREAM_THRESHOLD
    return body


def slow_session(h: Harness) -> tuple[IMAPProtocol, ClientBuffer]:
    proto = h.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(proto, IMAPProtocol)
    # 64 KiB: Twisted's FileDescriptor.bufferSize; every chunk written fills it
    transport = ClientBuffer(64 * 1024, peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
    proto.makeConnection(transport)
    send(proto, transport, f'a LOGIN {ALICE} "{PASSWORD}"\r\nb SELECT INBOX\r\n')
    return proto, transport


def test_a_large_body_waits_for_a_paused_client(h: Harness) -> None:
    body = big_body()
    h.deliver("big", body)
    proto, transport = slow_session(h)
    reads = Spy(h.store, "read_body_range")
    out = send(proto, transport, "c FETCH 1 BODY.PEEK[]\r\nd NOOP\r\n")
    head = b"* 1 FETCH (BODY[] {%d}\r\n" % len(body)
    # the first chunk fills the buffer: nothing more is read or written until the client drains
    assert out == head + body[:STREAM_CHUNK]
    assert [call[2] for call in reads.calls] == [STREAM_CHUNK]
    h.clock.advance(10)
    assert transport.value() == out
    received = [transport.drain()]
    while transport.producer is not None:
        assert len(transport.value()) <= STREAM_CHUNK + 100
        received.append(transport.drain())
    received.append(transport.drain())
    assert b"".join(received) == (
        head + body + b")\r\nc OK FETCH completed\r\nd OK NOOP completed\r\n"
    )
    assert len(reads.calls) == 3


def test_a_second_large_body_on_the_same_connection_is_sent(h: Harness) -> None:
    # Regression: the last chunk of a stream fills the buffer and pauses the producer; a later
    # stream must not wait for a resume that its own registration will never get (it hung).
    first, second = big_body(1), big_body(2)
    h.deliver("big1", first)
    h.deliver("big2", second)
    proto, transport = slow_session(h)
    send(proto, transport, "c FETCH 1 BODY.PEEK[]\r\n")
    assert transport.drain_all().endswith(first[-100:] + b")\r\nc OK FETCH completed\r\n")
    send(proto, transport, "d FETCH 2 BODY.PEEK[]\r\n")
    assert transport.drain_all() == (
        b"* 2 FETCH (BODY[] {%d}\r\n" % len(second) + second + b")\r\nd OK FETCH completed\r\n"
    )
    # and two in one command
    send(proto, transport, "e FETCH 1:2 BODY.PEEK[]\r\n")
    assert transport.drain_all() == (
        b"* 1 FETCH (BODY[] {%d}\r\n" % len(first) + first + b")\r\n"
        b"* 2 FETCH (BODY[] {%d}\r\n" % len(second) + second + b")\r\ne OK FETCH completed\r\n"
    )


def test_a_client_that_goes_away_while_paused_stops_the_stream(h: Harness) -> None:
    h.deliver("big", big_body())
    proto, transport = slow_session(h)
    reads = Spy(h.store, "read_body_range")
    send(proto, transport, "c FETCH 1 BODY.PEEK[]\r\n")
    assert len(reads.calls) == 1
    proto.connectionLost(None)
    assert len(reads.calls) == 1  # nothing more is read for a client that is gone
    assert h.factory.open_connections == 0


# -- isolation ------------------------------------------------------------------------------------

FOREIGN = [
    "alice@example.test/INBOX",
    "../alice@example.test/INBOX",
    "../alice/INBOX",
    "~alice/INBOX",
    "#user/alice/INBOX",
    "Other Users/alice/INBOX",
    "INBOX/../../alice@example.test/INBOX",
    "alice@example.test",
    "Secret",
]


@pytest.fixture
def two_users(h: Harness) -> Harness:
    fill(h, 2)
    result_of(h.store.create_mailbox(ALICE, "Secret"))
    result_of(h.store.copy_messages(ALICE, "INBOX", [1], "Secret"))
    return h


@pytest.mark.parametrize("name", FOREIGN)
def test_another_users_mailbox_cannot_be_reached_by_name(two_users: Harness, name: str) -> None:
    h = two_users
    proto, transport = h.login(BOB)
    quoted = f'"{name}"'
    for command in ("SELECT", "EXAMINE"):
        assert send(proto, transport, f"c {command} {quoted}\r\n").startswith(b"c NO [")
        assert proto.selected is None
    assert send(proto, transport, f"d STATUS {quoted} (MESSAGES)\r\n").startswith(b"d NO [")
    assert send(proto, transport, f'e LIST {quoted} "*"\r\n') == b"e OK LIST completed\r\n"
    assert send(proto, transport, f"f SUBSCRIBE {quoted}\r\n").startswith(b"f NO [")
    assert send(proto, transport, f"g DELETE {quoted}\r\n").startswith(b"g NO [")
    assert send(proto, transport, f"h RENAME {quoted} Mine\r\n").startswith(b"h NO [")
    reply = send(proto, transport, append_line(quoted, BODY2))
    assert reply.startswith(b"c NO [")
    send(proto, transport, "i SELECT INBOX\r\n")
    send(proto, transport, append_line("INBOX", BODY2))
    assert send(proto, transport, f"j COPY 1 {quoted}\r\n").startswith(b"j NO [")
    assert send(proto, transport, f"k MOVE 1 {quoted}\r\n").startswith(b"k NO [")
    # Alice's mailboxes are as they were
    assert uids_of(h) == [1, 2] and uids_of(h, "Secret") == [1]
    assert [m.name for m in result_of(h.store.list_mailboxes(ALICE))] == [
        "Drafts",
        "INBOX",
        "Junk",
        "Secret",
        "Sent",
        "Trash",
    ]


def test_a_user_sees_only_their_own_messages(two_users: Harness) -> None:
    h = two_users
    proto, transport = h.login(BOB)
    assert send(proto, transport, 'a LIST "" "*"\r\n').count(b"* LIST") == 5
    assert b"Secret" not in send(proto, transport, 'a LIST "" "*"\r\n')
    send(proto, transport, "b SELECT INBOX\r\n")
    assert send(proto, transport, "c UID FETCH 1:* (UID BODY.PEEK[])\r\n") == (
        b"c OK UID FETCH completed\r\n"
    )
    assert send(proto, transport, "d SEARCH ALL\r\n") == b"* SEARCH\r\nd OK SEARCH completed\r\n"
    assert send(proto, transport, "e UID SEARCH TEXT message\r\n") == (
        b"* SEARCH\r\ne OK UID SEARCH completed\r\n"
    )
    assert send(proto, transport, "f UID STORE 1:* +FLAGS (\\Deleted)\r\n") == (
        b"f OK UID STORE completed\r\n"
    )
    assert send(proto, transport, "g UID EXPUNGE 1:*\r\n") == b"g OK UID EXPUNGE completed\r\n"
    assert send(proto, transport, "h STATUS INBOX (MESSAGES)\r\n") == (
        b"* STATUS INBOX (MESSAGES 0)\r\nh OK STATUS completed\r\n"
    )
    # a folder named after Alice's is Bob's own
    send(proto, transport, 'i CREATE "alice@example.test/INBOX"\r\n')
    send(proto, transport, append_line("INBOX", BODY2))
    assert send(proto, transport, 'j COPY 1 "alice@example.test/INBOX"\r\n').startswith(
        b"j OK [COPYUID "
    )
    assert uids_of(h, "alice@example.test/INBOX", BOB) == [1]
    assert uids_of(h) == [1, 2] and flags_of(h) == {1: frozenset(), 2: frozenset()}
    assert result_of(h.store.get_mailbox(ALICE, "alice@example.test/INBOX")) is None
