"""
COPY and MOVE on the core mailbox session (issue 12), with plain calls on a memory store: COPYUID
(RFC 4315 §3), TRYCREATE (RFC 3501 §6.4.7), MOVE's untagged COPYUID and EXPUNGEs (RFC 6851
§4.3), MOVE into the selected mailbox itself, and \\Recent for the copies (§2.3.2).
"""

from __future__ import annotations

import pytest

from strata_twisted.core.imap_session import Done, Refused
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    filled,
    flags,
    messages,
    ok,
    run,
    status,
    uids,
    watching,
)


@pytest.fixture
def mail() -> Mail:
    """Five messages in INBOX (UIDs 1..5), none of them \\Recent to the test's sessions."""
    return filled(5)


def uidvalidity(mail: Mail, mailbox: str) -> int:
    return status(mail, mailbox).uidvalidity


# -- COPY -----------------------------------------------------------------------------------------


def test_copy_answers_copyuid_with_source_and_target_sets(mail: Mail) -> None:
    session, out = mail.selected()
    trash = uidvalidity(mail, "Trash")
    done = mail.command(session, out, "a COPY 2:3 Trash")
    assert out.take() == b""
    assert ok("a", done) == b"a OK [COPYUID %d 2:3 1:2] COPY completed\r\n" % trash
    # UID COPY takes the UIDs in mailbox order whatever order they are named in (RFC 4315 §3)
    done = mail.command(session, out, "b UID COPY 5,1,9 Trash")
    assert ok("b", done) == b"b OK [COPYUID %d 1,5 3:4] UID COPY completed\r\n" % trash
    assert uids(mail) == [1, 2, 3, 4, 5]  # COPY leaves the source alone
    source = {m.uid: m.message_id for m in messages(mail)}
    assert [m.message_id for m in messages(mail, "Trash")] == [source[u] for u in (2, 3, 1, 5)]


def test_copy_keeps_flags_and_internal_date(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Flagged", "$Work"]))
    session, out = mail.selected()
    mail.command(session, out, "a COPY 2 Trash")
    [copy] = messages(mail, "Trash")
    [original] = [m for m in messages(mail) if m.uid == 2]
    # RFC 3501 §6.4.7: flags and internal date are preserved
    assert copy.flags == original.flags == {"\\Flagged", "$Work"}
    assert copy.internal_date == original.internal_date


def test_copy_of_nothing_has_no_copyuid(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a UID COPY 9 Trash")
    assert done == Done("UID COPY completed") and uids(mail, "Trash") == []


def test_copy_to_a_missing_mailbox_is_trycreate_and_creates_nothing(mail: Mail) -> None:
    session, out = mail.selected()
    for line in ("a COPY 1 Nowhere", "b UID MOVE 1 Nowhere", "c MOVE 1 nowhere/deeper"):
        with pytest.raises(Refused) as refused:
            mail.command(session, out, line)
        # RFC 3501 §6.4.7: the client may CREATE it and try again
        assert (refused.value.status, refused.value.code) == ("NO", "TRYCREATE")
        assert refused.value.text.startswith("Mailbox does not exist: ")
    assert out.take() == b""
    assert uids(mail) == [1, 2, 3, 4, 5]
    assert result_of(mail.store.get_mailbox(ALICE, "Nowhere")) is None


def test_copy_from_an_examined_mailbox_is_allowed(mail: Mail) -> None:
    session, out = mail.selected(read_only=True)
    done = mail.command(session, out, "a COPY 1 Trash")
    assert ok("a", done) == b"a OK [COPYUID %d 1 1] COPY completed\r\n" % uidvalidity(mail, "Trash")


@pytest.mark.parametrize("line", ["a COPY 6 Trash", "a MOVE 1:6 Trash"])
def test_a_sequence_number_beyond_the_mailbox_is_bad(mail: Mail, line: str) -> None:
    session, out = mail.selected()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, line)
    assert refused.value.status == "BAD"
    assert uids(mail, "Trash") == [] and uids(mail) == [1, 2, 3, 4, 5]


def test_copy_into_the_selected_mailbox_is_followed_by_exists(mail: Mail) -> None:
    session, out = mail.selected()
    inbox = uidvalidity(mail, "INBOX")
    done = mail.command(session, out, "a COPY 1,3 INBOX")
    # The copies are new, and this session is the first to see them: \Recent to it
    # (RFC 3501 §2.3.2), which it hears with RECENT (§7.3.2).
    assert out.take() == b"* 7 EXISTS\r\n* 2 RECENT\r\n"
    assert ok("a", done) == b"a OK [COPYUID %d 1,3 6:7] COPY completed\r\n" % inbox
    mail.command(session, out, "b FETCH 6:7 (UID FLAGS)")
    assert (
        out.take()
        == b"* 6 FETCH (UID 6 FLAGS (\\Recent))\r\n* 7 FETCH (UID 7 FLAGS (\\Recent))\r\n"
    )


def test_copies_are_recent_to_the_first_session_to_see_them(mail: Mail) -> None:
    session, out = mail.selected()
    first, first_out, woken = watching(mail, "Trash")
    mail.command(session, out, "a COPY 1:2 Trash")
    assert woken.count == 1  # its IDLE hears of them at once
    mail.command(first, first_out, "b NOOP")
    assert first_out.take() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
    later, later_out = mail.selected("Trash")
    assert later.view is not None and later.view.recent == set()
    mail.command(later, later_out, "c SEARCH RECENT")
    assert later_out.take() == b"* SEARCH\r\n"
    # and the first one keeps them as recent
    mail.command(first, first_out, "d SEARCH RECENT")
    assert first_out.take() == b"* SEARCH 1 2\r\n"


def test_copy_by_sequence_number_leaves_out_what_another_session_expunged(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(session, out, "c COPY 1:3 Trash")
    # never a failure, and no EXPUNGE during a COPY by sequence number (RFC 3501 §7.4.1)
    assert ok("c", done) == b"c OK [COPYUID %d 1,3 1:2] COPY completed\r\n" % uidvalidity(
        mail, "Trash"
    )
    assert out.take() == b""
    mail.command(session, out, "d NOOP")
    assert out.take() == b"* 2 EXPUNGE\r\n"


def test_uid_copy_reports_another_sessions_expunge_after_it(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 4 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    mail.command(session, out, "c UID COPY 3:4 Trash")
    assert out.take() == b"* 4 EXPUNGE\r\n"


# -- MOVE -----------------------------------------------------------------------------------------


def test_move_sends_copyuid_then_expunges_from_the_highest(mail: Mail) -> None:
    session, out = mail.selected()
    trash = uidvalidity(mail, "Trash")
    done = mail.command(session, out, "a MOVE 2,4 Trash")
    # RFC 6851 §4.3: COPYUID in an untagged OK, then EXPUNGEs, then the tagged OK
    assert out.take() == (
        b"* OK [COPYUID %d 2,4 1:2] Moved UIDs\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n" % trash
    )
    assert ok("a", done) == b"a OK MOVE completed\r\n"
    assert uids(mail) == [1, 3, 5] and uids(mail, "Trash") == [1, 2]
    mail.command(session, out, "b FETCH 1:* (UID)")
    assert out.take() == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 5)\r\n"


def test_uid_move_and_a_move_of_nothing(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "b EXPUNGE")
    out.take()
    junk = uidvalidity(mail, "Junk")
    done = mail.command(session, out, "c UID MOVE 5,3 Junk")  # sequence numbers 4 and 2
    assert out.take() == (
        b"* OK [COPYUID %d 3,5 1:2] Moved UIDs\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n" % junk
    )
    assert ok("c", done) == b"c OK UID MOVE completed\r\n"
    assert uids(mail) == [2, 4]
    done = mail.command(session, out, "d UID MOVE 3 Junk")
    assert out.take() == b"" and ok("d", done) == b"d OK UID MOVE completed\r\n"


def test_move_keeps_flags_and_tells_both_mailboxes(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [3], "add", ["\\Seen", "$Todo"]))
    session, out = mail.selected()
    inbox_watcher, inbox_out, inbox_woken = watching(mail)
    trash_watcher, trash_out, trash_woken = watching(mail, "Trash")
    mail.command(session, out, "a MOVE 3 Trash")
    assert flags(mail, "Trash") == {1: {"\\Seen", "$Todo"}}
    assert (inbox_woken.count, trash_woken.count) == (1, 1)
    mail.command(inbox_watcher, inbox_out, "b NOOP")
    assert inbox_out.take() == b"* 3 EXPUNGE\r\n"
    mail.command(trash_watcher, trash_out, "c NOOP")
    assert trash_out.take() == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo \\*)]"
        b" Flags permitted\r\n"
        b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    )


def test_move_from_an_examined_mailbox_is_refused(mail: Mail) -> None:
    session, out = mail.selected(read_only=True)
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a MOVE 1 Trash")
    assert (refused.value.status, refused.value.code) == ("NO", "READ-ONLY")
    assert uids(mail) == [1, 2, 3, 4, 5] and uids(mail, "Trash") == []


def test_move_into_the_selected_mailbox_itself(mail: Mail) -> None:
    session, out = mail.selected()
    inbox = uidvalidity(mail, "INBOX")
    done = mail.command(session, out, "a MOVE 1:2 INBOX")
    # RFC 6851 allows it, and Dovecot answers OK with COPYUID: the old UIDs are expunged, the
    # new ones arrive (EXISTS), recent to this session, the first to see them
    assert out.take() == (
        b"* OK [COPYUID %d 1:2 6:7] Moved UIDs\r\n"
        b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
        b"* 5 EXISTS\r\n* 2 RECENT\r\n" % inbox
    )
    assert ok("a", done) == b"a OK MOVE completed\r\n"
    assert uids(mail) == [3, 4, 5, 6, 7]
    assert session.view is not None and session.view.uids == [3, 4, 5, 6, 7]
    mail.command(session, out, "b FETCH 4:5 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert out.take() == (
        b"* 4 FETCH (UID 6 BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 1\r\n\r\n)\r\n"
        b"* 5 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {22}\r\nSubject: message 2\r\n\r\n)\r\n"
    )


def test_move_into_the_selected_mailbox_as_another_session_sees_it(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(session, out, "a UID MOVE 5 INBOX")
    mail.command(other, other_out, "b NOOP")
    assert other_out.take() == b"* 5 EXPUNGE\r\n* 5 EXISTS\r\n"  # recent to the mover only
    fresh = run(mail.session()[0].select("INBOX", read_only=False))
    assert (fresh.exists, fresh.recent, fresh.uidnext) == (5, 0, 7)


def test_move_by_sequence_number_moves_what_is_left_of_what_another_session_expunged(
    mail: Mail,
) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(session, out, "c MOVE 1:3 Trash")
    assert done == Done("MOVE completed")
    text = out.take()
    assert text == (
        b"* OK [COPYUID %d 1,3 1:2] Moved UIDs\r\n"
        b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
        b"* 1 EXPUNGE\r\n" % uidvalidity(mail, "Trash")  # then the other's, renumbered (2 -> 1)
    )
    assert uids(mail) == [4, 5] and session.view is not None and session.view.uids == [4, 5]
