"""
STORE on the core mailbox session (issue 12), with plain calls on a memory store: the three
modes and .SILENT (RFC 3501 §6.4.6), UNCHANGEDSINCE and MODIFIED (RFC 7162 §3.1.3), keywords
announced before they are shown (§7.2.6), what may not be stored, and what the user's other
sessions hear, with modseqs that only grow.
"""

from __future__ import annotations

import re

import pytest

from strata_twisted.core.imap_session import Done, Refused
from strata_twisted.model import InvalidFlag, MailboxListing
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    body,
    filled,
    flags,
    messages,
    ok,
    run,
    status,
    watching,
)

SYSTEM = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"


@pytest.fixture
def mail() -> Mail:
    """Four messages in INBOX (UIDs 1..4), none of them \\Recent to the test's sessions."""
    return filled(4)


def modseq_of(mail: Mail, uid: int) -> int:
    return next(m.modseq for m in messages(mail) if m.uid == uid)


# -- the modes ------------------------------------------------------------------------------------


def test_store_adds_removes_and_replaces_flags(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a STORE 1:2 +FLAGS (\\Flagged \\Seen)")
    assert out.take() == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Seen))\r\n* 2 FETCH (FLAGS (\\Flagged \\Seen))\r\n"
    )
    assert ok("a", done) == b"a OK STORE completed\r\n"
    mail.command(session, out, "b STORE 2 -FLAGS (\\Flagged)")
    assert out.take() == b"* 2 FETCH (FLAGS (\\Seen))\r\n"
    mail.command(session, out, "c STORE 1 FLAGS (\\Answered \\Draft)")
    assert out.take() == b"* 1 FETCH (FLAGS (\\Answered \\Draft))\r\n"
    mail.command(session, out, "d STORE 2 FLAGS ()")
    assert out.take() == b"* 2 FETCH (FLAGS ())\r\n"
    assert flags(mail) == {1: {"\\Answered", "\\Draft"}, 2: set(), 3: set(), 4: set()}


def test_store_answers_every_message_named_even_unchanged(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Seen)")
    before = modseq_of(mail, 1)
    mail.command(session, out, "b STORE 1:2 +FLAGS (\\Seen)")
    # RFC 3501 §6.4.6: the untagged FETCH of each message's flags; 1 did not change at all
    assert out.take() == b"* 1 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\n"
    assert modseq_of(mail, 1) == before


def test_silent_store_sends_nothing(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a STORE 1:* +FLAGS.SILENT (\\Seen)")
    assert out.take() == b"" and done == Done("STORE completed")
    mail.command(session, out, "b UID STORE 2 -FLAGS.SILENT (\\Seen)")
    mail.command(session, out, "c STORE 3 FLAGS.SILENT ($Done)")
    assert out.take() == b""
    assert flags(mail) == {1: {"\\Seen"}, 2: set(), 3: {"$Done"}, 4: {"\\Seen"}}
    # the keyword nobody was shown yet is announced when it is first shown (RFC 3501 §7.2.6)
    mail.command(session, out, "d FETCH 3 (FLAGS)")
    assert out.take() == (
        b"* FLAGS (" + SYSTEM + b" $Done)\r\n"
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Done \\*)] Flags permitted\r\n"
        b"* 3 FETCH (FLAGS ($Done))\r\n"
    )


def test_uid_store_answers_with_the_uid_and_sequence_numbers(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(mail.store.expunge(ALICE, "INBOX"))
    session, out = mail.selected()  # UIDs 2..4 are sequence numbers 1..3
    done = mail.command(session, out, "a UID STORE 4,2 +FLAGS (\\Flagged)")
    assert out.take() == (
        b"* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n* 3 FETCH (UID 4 FLAGS (\\Flagged))\r\n"
    )
    assert ok("a", done) == b"a OK UID STORE completed\r\n"
    mail.command(session, out, "b UID STORE 1,9 +FLAGS (\\Flagged)")  # no such UIDs: nothing
    assert out.take() == b""


@pytest.mark.parametrize("line", ["a STORE 5 +FLAGS (\\Seen)", "a STORE 1,6 FLAGS ()"])
def test_a_sequence_number_beyond_the_mailbox_is_bad(mail: Mail, line: str) -> None:
    session, out = mail.selected()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, line)
    assert (refused.value.status, refused.value.text) == ("BAD", "Invalid message sequence number")
    assert flags(mail)[1] == set()


# -- what may not be stored -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "a STORE 1 +FLAGS (\\Recent)",
        "a STORE 1 -FLAGS (\\recent)",
        "a STORE 1 FLAGS (\\RECENT \\Seen)",
    ],
)
def test_recent_is_refused(mail: Mail, line: str) -> None:
    session, out = mail.selected()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, line)
    # RFC 3501 §2.3.2: \Recent cannot be altered by the client
    assert refused.value.status == "BAD"
    assert flags(mail)[1] == set() and out.take() == b""


def test_a_flag_that_is_no_flag_is_refused_and_nothing_changes(mail: Mail) -> None:
    session, out = mail.selected()
    before = status(mail).highest_modseq
    with pytest.raises(InvalidFlag) as refused:
        mail.command(session, out, "a STORE 1:2 +FLAGS (\\Seen \\Bogus)")
    assert refused.value.imap_code == "CANNOT"
    assert flags(mail)[1] == set() and status(mail).highest_modseq == before
    assert out.take() == b""


def test_store_in_an_examined_mailbox_is_refused(mail: Mail) -> None:
    session, out = mail.selected(read_only=True)
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a STORE 1 +FLAGS (\\Seen)")
    assert (refused.value.status, refused.value.code, refused.value.text) == (
        "NO",
        "READ-ONLY",
        "Mailbox is read-only (EXAMINE)",
    )
    assert flags(mail)[1] == set()


def test_recent_stays_shown_whatever_is_stored() -> None:
    mail = Mail()
    mail.deliver(body(1))
    session, out = mail.selected()  # the first to select: 1 is \\Recent to it
    mail.command(session, out, "a STORE 1 FLAGS (\\Seen)")
    assert out.take() == b"* 1 FETCH (FLAGS (\\Recent \\Seen))\r\n"
    mail.command(session, out, "b STORE 1 FLAGS ()")
    assert out.take() == b"* 1 FETCH (FLAGS (\\Recent))\r\n"
    assert flags(mail) == {1: set()}  # and never stored


# -- keywords -------------------------------------------------------------------------------------


def test_a_new_keyword_is_announced_with_flags_and_permanentflags_first(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS ($Label1 \\Seen)")
    # RFC 3501 §7.2.6: FLAGS (and PERMANENTFLAGS, §7.1) before the FETCH that shows it
    assert out.take() == (
        b"* FLAGS (" + SYSTEM + b" $Label1)\r\n"
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Label1 \\*)] Flags permitted\r\n"
        b"* 1 FETCH (FLAGS (\\Seen $Label1))\r\n"
    )
    mail.command(session, out, "b STORE 2 +FLAGS ($Label1)")
    assert out.take() == b"* 2 FETCH (FLAGS ($Label1))\r\n"  # announced once
    mail.command(session, out, "c STORE 3 +FLAGS ($Alpha $Label1)")
    # sorted, the new one with the old
    assert out.take() == (
        b"* FLAGS (" + SYSTEM + b" $Alpha $Label1)\r\n"
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Alpha $Label1 \\*)] Flags permitted\r\n"
        b"* 3 FETCH (FLAGS ($Alpha $Label1))\r\n"
    )
    assert flags(mail) == {1: {"\\Seen", "$Label1"}, 2: {"$Label1"}, 3: {"$Alpha", "$Label1"},
                           4: set()}  # fmt: skip


def test_a_keyword_another_session_set_is_announced_before_this_store_shows_it(
    mail: Mail,
) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1 +FLAGS.SILENT ($Phone)")
    mail.command(session, out, "b STORE 1 +FLAGS (\\Seen)")
    assert out.take() == (
        b"* FLAGS (" + SYSTEM + b" $Phone)\r\n"
        b"* OK [PERMANENTFLAGS (" + SYSTEM + b" $Phone \\*)] Flags permitted\r\n"
        b"* 1 FETCH (FLAGS (\\Seen $Phone))\r\n"
    )


def test_a_keyword_removed_stays_announced(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT ($Later)")
    mail.command(session, out, "b STORE 1 -FLAGS ($Later)")
    mail.command(session, out, "c STORE 1 +FLAGS ($Later)")
    lines = out.take().split(b"\r\n")
    assert sum(line.startswith(b"* FLAGS ") for line in lines) == 1


# -- UNCHANGEDSINCE (RFC 7162 §3.1.3) -------------------------------------------------------------


def test_unchangedsince_stores_what_is_unchanged_and_names_the_rest(mail: Mail) -> None:
    # UNCHANGEDSINCE enables CONDSTORE (RFC 7162 §3.1): the adapter's engine says so in condstore
    session, out = mail.selected(condstore=True)
    since = status(mail).highest_modseq
    mail.command(session, out, "a STORE 2 +FLAGS.SILENT (\\Seen)")  # 2 changes after `since`
    out.take()
    done = mail.command(
        session, out, f"b UID STORE 1:3 (UNCHANGEDSINCE {since}) +FLAGS (\\Flagged)"
    )
    new = modseq_of(mail, 1)
    assert new == modseq_of(mail, 3) > modseq_of(mail, 2)
    assert out.take() == (
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (%d))\r\n"
        b"* 3 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (%d))\r\n" % (new, new)
    )
    assert ok("b", done) == b"b OK [MODIFIED 2] UID STORE completed\r\n"
    assert flags(mail) == {1: {"\\Flagged"}, 2: {"\\Seen"}, 3: {"\\Flagged"}, 4: set()}


def test_modified_names_sequence_numbers_for_store_and_uids_for_uid_store(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(mail.store.expunge(ALICE, "INBOX"))
    session, out = mail.selected(condstore=True)  # UIDs 2, 3, 4 are 1, 2, 3
    since = status(mail).highest_modseq
    mail.command(session, out, "a UID STORE 2,4 +FLAGS.SILENT (\\Seen)")
    out.take()
    done = mail.command(session, out, f"b STORE 1:3 (UNCHANGEDSINCE {since}) -FLAGS (\\Seen)")
    assert ok("b", done) == b"b OK [MODIFIED 1,3] STORE completed\r\n"
    # the one stored is answered with its UID and MODSEQ (CONDSTORE, RFC 7162 §3.1)
    assert out.take() == b"* 2 FETCH (UID 3 FLAGS () MODSEQ (%d))\r\n" % modseq_of(mail, 3)
    # b took no \Seen from UID 3 (it had none): its modseq did not move, so it passes again
    done = mail.command(session, out, f"c UID STORE 2:4 (UNCHANGEDSINCE {since}) +FLAGS (\\Draft)")
    assert ok("c", done) == b"c OK [MODIFIED 2,4] UID STORE completed\r\n"
    assert out.take() == b"* 2 FETCH (UID 3 FLAGS (\\Draft) MODSEQ (%d))\r\n" % modseq_of(mail, 3)


def test_unchangedsince_zero_always_fails(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert ok("a", done) == b"a OK [MODIFIED 1] STORE completed\r\n"
    assert flags(mail)[1] == set()


def test_unchangedsince_after_another_sessions_change(mail: Mail) -> None:
    """The conflict it exists for: the laptop stores on what the phone changed meanwhile."""
    laptop, out = mail.selected(condstore=True)
    phone, phone_out = mail.selected()
    since = status(mail).highest_modseq
    mail.command(phone, phone_out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    done = mail.command(laptop, out, f"b STORE 1:2 (UNCHANGEDSINCE {since}) +FLAGS (\\Seen)")
    assert ok("b", done) == b"b OK [MODIFIED 2] STORE completed\r\n"
    assert flags(mail)[2] == {"\\Deleted"}
    # then the phone's change, told after the STORE's own answer (sync without EXPUNGE)
    assert out.take() == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        b"* 2 FETCH (UID 2 FLAGS (\\Deleted) MODSEQ (%d))\r\n"
        % (modseq_of(mail, 1), modseq_of(mail, 2))
    )


# -- CONDSTORE answers ----------------------------------------------------------------------------


def test_condstore_reports_uid_and_modseq_even_when_silent(mail: Mail) -> None:
    session, out = mail.selected(condstore=True)
    mail.command(session, out, "a STORE 1:2 +FLAGS.SILENT (\\Seen)")
    # RFC 7162 §3.1.3: a changed message is reported even with .SILENT
    assert out.take() == (
        b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))\r\n"
        % (modseq_of(mail, 1), modseq_of(mail, 2))
    )
    mail.command(session, out, "b STORE 1:2 +FLAGS.SILENT (\\Seen)")  # nothing changed
    assert out.take() == b""


# -- other sessions -------------------------------------------------------------------------------


def test_other_sessions_hear_the_change_at_their_next_command(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out, woken = watching(mail)
    modern, modern_out = mail.selected(condstore=True)
    mail.command(session, out, "a STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert woken.count == 1  # an IDLE would hear it at once
    assert other_out.take() == b""  # nothing before its own next command
    mail.command(other, other_out, "b NOOP")
    assert other_out.take() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged))\r\n"
    mail.command(other, other_out, "c NOOP")
    assert other_out.take() == b""  # told once
    mail.command(modern, modern_out, "d NOOP")
    assert modern_out.take() == (
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))\r\n" % modseq_of(mail, 2)
    )


def test_a_store_that_changes_nothing_wakes_nobody(mail: Mail) -> None:
    session, out = mail.selected()
    _, _, woken = watching(mail)
    mail.command(session, out, "a STORE 1 -FLAGS (\\Seen)")
    assert woken.count == 0


def test_store_by_sequence_number_leaves_out_what_another_session_expunged(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(session, out, "c STORE 1:3 +FLAGS (\\Seen)")
    # never a failure; no EXPUNGE during a STORE by sequence number (RFC 3501 §7.4.1)
    assert ok("c", done) == b"c OK STORE completed\r\n"
    assert out.take() == b"* 1 FETCH (FLAGS (\\Seen))\r\n* 3 FETCH (FLAGS (\\Seen))\r\n"
    mail.command(session, out, "d NOOP")
    assert out.take() == b"* 2 EXPUNGE\r\n"


def test_uid_store_reports_another_sessions_expunge_after_its_answer(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    mail.command(session, out, "c UID STORE 1:2 +FLAGS (\\Seen)")
    assert out.take() == b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n* 1 EXPUNGE\r\n"


# -- MODSEQ only grows ----------------------------------------------------------------------------

_LINE = re.compile(rb"\* \d+ FETCH \(UID (\d+) .*MODSEQ \((\d+)\)\)")


def test_modseqs_grow_with_every_change_and_never_go_back_for_a_session(mail: Mail) -> None:
    pairs = [mail.selected(condstore=True) for _ in range(2)]
    seen: list[dict[int, int]] = [{}, {}]
    last = status(mail).highest_modseq
    script = [
        (0, "STORE 1:4 +FLAGS (\\Seen)"),
        (1, "STORE 2 +FLAGS (\\Deleted)"),
        (0, "NOOP"),
        (1, "STORE 2 -FLAGS (\\Deleted)"),
        (0, "STORE 2 +FLAGS (\\Flagged)"),
        (1, "NOOP"),
        (0, "UID STORE 2 FLAGS ()"),
        (1, "FETCH 1:4 (MODSEQ)"),
        (1, "UID STORE 1:4 -FLAGS.SILENT (\\Seen)"),
        (0, "NOOP"),
    ]
    for n, (who, line) in enumerate(script):
        session, out = pairs[who]
        mail.command(session, out, f"t{n} {line}")
        highest = status(mail).highest_modseq
        assert highest >= last  # the mailbox's HIGHESTMODSEQ never goes back
        last = highest
        for found in _LINE.finditer(out.take()):
            uid, modseq = int(found[1]), int(found[2])
            assert modseq >= seen[who].get(uid, 0), (who, line, uid, modseq)
            assert modseq <= highest
            seen[who][uid] = modseq
    assert seen[0] and seen[1]


def test_a_listing_read_before_a_store_never_takes_the_session_back(mail: Mail) -> None:
    """
    The issue's bug: ``* 17 FETCH (UID 432 FLAGS (\\Deleted) MODSEQ (1153))`` followed by a
    stale ``* 17 FETCH (UID 432 FLAGS () MODSEQ (1127))``.  Here a listing read before this
    session's STORE comes back after it (another session's read, still in flight).
    """
    session, out = mail.selected(condstore=True)
    other, other_out = mail.selected()
    stale = run(mail.shared.listings.listing(ALICE, "INBOX"))
    mail.command(session, out, "a STORE 1 +FLAGS (\\Deleted)")
    deleted = modseq_of(mail, 1)
    assert out.take() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (%d))\r\n" % deleted
    mail.command(other, other_out, "b STORE 2 +FLAGS.SILENT (\\Seen)")
    listings = mail.shared.listings
    real = listings.listing
    answers = [stale]

    async def listing(user: str, name: str) -> MailboxListing:
        return answers.pop() if answers else await real(user, name)

    listings.listing = listing  # type: ignore[method-assign]
    mail.command(session, out, "c NOOP")
    assert out.take() == b""  # nothing older than what it was told
    mail.command(session, out, "d NOOP")  # the next look catches up with the other's change
    assert out.take() == b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))\r\n" % modseq_of(mail, 2)
