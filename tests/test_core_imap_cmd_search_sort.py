"""
SEARCH and SORT on the core mailbox session (issue 12), with plain calls on a memory store:
sequence numbers and UIDs (RFC 3501 §6.4.4), ESEARCH return options (RFC 4731 §3.1), MODSEQ
(RFC 7162 §3.1.5), SORT (RFC 5256), and messages another session expunged, which are left out,
never a failure.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from twisted.internet.defer import Deferred, fail

from strata_twisted.core.imap_session import Done, Refused
from strata_twisted.errors import NoSuchEntry
from strata_twisted.model import MessageHead
from strata_twisted.testing import result_of
from tests.core_imap import ALICE, Mail, messages, ok, settle


def dated(n: int, subject: str, sender: str = "Sender <sender@origin.test>", day: int = 2) -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: {'Sun Mon Tue'.split()[day - 1]}, {day} Nov 2026 10:00:{n:02d} +0000\r\n"
        f"\r\nbody of message {n}\r\n"
    ).encode()


@pytest.fixture
def mail() -> Mail:
    """
    Five messages, the first of six expunged (UIDs 2..6 are sequence numbers 1..5): 2 and 4
    \\Seen, 4 \\Flagged and $Todo.
    """
    mail = Mail()
    mail.deliver(dated(0, "gone"))
    mail.deliver(dated(1, "Lunch on Friday"))
    mail.deliver(
        b"From: Zed Zebra <zed@zoo.test>\r\nTo: alice@example.test\r\nSubject: Re: apples\r\n"
        b"Date: Sun, 1 Nov 2026 09:00:00 +0000\r\n\r\nbananas and pears\r\n"
    )
    mail.deliver(dated(3, "quarterly report"))
    mail.deliver(dated(4, "lunch again"))
    mail.deliver(
        b"From: Yves <yves@zoo.test>\r\nSubject: zebra crossing\r\n"
        b"Date: Tue, 3 Nov 2026 08:00:00 +0000\r\n\r\nnothing about apples\r\n"
    )
    store = mail.store
    result_of(store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(store.expunge(ALICE, "INBOX"))
    result_of(store.store_flags(ALICE, "INBOX", [2, 4], "add", ["\\Seen"]))
    result_of(store.store_flags(ALICE, "INBOX", [4], "add", ["\\Flagged", "$Todo"]))
    settle(mail)
    return mail


def modseq_of(mail: Mail, uid: int) -> int:
    return next(m.modseq for m in messages(mail) if m.uid == uid)


# -- SEARCH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "numbers"),
    [
        ("ALL", b" 1 2 3 4 5"),
        ("SEEN", b" 1 3"),
        ("UNSEEN", b" 2 4 5"),
        ("FLAGGED", b" 3"),
        ("UNFLAGGED SEEN", b" 1"),
        ("KEYWORD $Todo", b" 3"),
        ("UNKEYWORD $Todo", b" 1 2 4 5"),
        ("DELETED", b""),
        ("OR FLAGGED 5", b" 3 5"),
        ("NOT SEEN 4:5", b" 4 5"),
        ("2:*", b" 2 3 4 5"),
        ("UID 3:5", b" 2 3 4"),
        ("SUBJECT lunch", b" 1 4"),
        ("FROM zoo.test", b" 2 5"),
        ('HEADER Subject "re: APPLES"', b" 2"),
        ("BODY apples", b" 5"),
        ("TEXT apples", b" 2 5"),
        ("SENTBEFORE 2-Nov-2026", b" 2"),
        ("(OR SUBJECT lunch SUBJECT zebra) UNSEEN", b" 4 5"),
    ],
)
def test_search(mail: Mail, key: str, numbers: bytes) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, f"a SEARCH {key}")
    assert out.take() == b"* SEARCH" + numbers + b"\r\n"
    assert ok("a", done) == b"a OK SEARCH completed\r\n"


def test_uid_search_answers_uids(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a UID SEARCH UNSEEN")
    assert out.take() == b"* SEARCH 3 5 6\r\n"
    assert ok("a", done) == b"a OK UID SEARCH completed\r\n"
    mail.command(session, out, "b UID SEARCH UID 1:3")
    assert out.take() == b"* SEARCH 2 3\r\n"
    mail.command(session, out, "c UID SEARCH 5")  # a sequence set still means numbers
    assert out.take() == b"* SEARCH 6\r\n"


def test_search_needs_a_selected_mailbox(mail: Mail) -> None:
    session, out = mail.session()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a SEARCH ALL")
    assert refused.value.status == "BAD"


def test_esearch_return_options(mail: Mail) -> None:
    session, out = mail.selected()
    # RFC 4731 §3.1
    mail.command(session, out, "c SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert out.take() == b'* ESEARCH (TAG "c") MIN 2 MAX 5 COUNT 3 ALL 2,4:5\r\n'
    done = mail.command(session, out, "d UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert out.take() == b'* ESEARCH (TAG "d") UID MIN 3 MAX 6 COUNT 3 ALL 3,5:6\r\n'
    assert ok("d", done) == b"d OK UID SEARCH completed\r\n"
    mail.command(session, out, "e SEARCH RETURN () SEEN")  # () means ALL
    assert out.take() == b'* ESEARCH (TAG "e") ALL 1,3\r\n'
    mail.command(session, out, "f SEARCH RETURN (COUNT) SUBJECT lunch")
    assert out.take() == b'* ESEARCH (TAG "f") COUNT 2\r\n'
    mail.command(session, out, "g SEARCH RETURN (MAX MIN) ALL")
    assert out.take() == b'* ESEARCH (TAG "g") MIN 1 MAX 5\r\n'
    # nothing found: MIN, MAX and ALL are left out (RFC 4731 §3.1)
    mail.command(session, out, "h SEARCH RETURN (MIN MAX COUNT ALL) DELETED")
    assert out.take() == b'* ESEARCH (TAG "h") COUNT 0\r\n'
    mail.command(session, out, "i SEARCH RETURN (MIN) DELETED")
    assert out.take() == b'* ESEARCH (TAG "i")\r\n'


def test_modseq_search_reports_the_highest_modseq_found(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1,5 +FLAGS.SILENT (\\Answered)")
    changed = modseq_of(mail, 2)
    assert changed == modseq_of(mail, 6) > max(modseq_of(mail, uid) for uid in (3, 4, 5))
    # RFC 7162 §3.1.5: the highest modseq of what was found follows the numbers
    mail.command(session, out, f"c SEARCH MODSEQ {changed}")
    assert out.take() == b"* SEARCH 1 5 (MODSEQ %d)\r\n" % changed
    mail.command(session, out, f"d UID SEARCH MODSEQ {changed} SEEN")
    assert out.take() == b"* SEARCH 2 (MODSEQ %d)\r\n" % changed
    mail.command(session, out, "e SEARCH MODSEQ 1 UNANSWERED")
    assert out.take() == b"* SEARCH 2 3 4 (MODSEQ %d)\r\n" % max(
        modseq_of(mail, uid) for uid in (3, 4, 5)
    )
    mail.command(session, out, f"f SEARCH MODSEQ {changed + 1}")
    assert out.take() == b"* SEARCH\r\n"  # nothing found: no MODSEQ
    mail.command(session, out, f"g SEARCH RETURN (COUNT) MODSEQ {changed}")
    assert out.take() == b'* ESEARCH (TAG "g") COUNT 2 MODSEQ %d\r\n' % changed
    mail.command(session, out, "h SEARCH SEEN")
    assert out.take() == b"* SEARCH 1 3\r\n"  # no MODSEQ unless the search names it


def test_search_sees_this_sessions_flags_and_recent(mail: Mail) -> None:
    mail.deliver(dated(7, "fresh"))
    session, out = mail.selected()  # the 6th message (UID 7) is recent to it
    mail.command(session, out, "a STORE 2 +FLAGS.SILENT (\\Seen)")
    mail.command(session, out, "b SEARCH UNSEEN")
    assert out.take() == b"* SEARCH 4 5 6\r\n"
    mail.command(session, out, "c SEARCH RECENT")
    assert out.take() == b"* SEARCH 6\r\n"


# -- SORT -----------------------------------------------------------------------------------------


def test_sort(mail: Mail) -> None:
    session, out = mail.selected()
    # base subjects (RFC 5256 §2.1): lunch on friday, apples, quarterly report, lunch again,
    # zebra crossing
    done = mail.command(session, out, "c SORT (SUBJECT) UTF-8 ALL")
    assert out.take() == b"* SORT 2 4 1 3 5\r\n"
    assert ok("c", done) == b"c OK SORT completed\r\n"
    # dates: 2 Nov 10:00:01, 1 Nov, 2 Nov 10:00:03, 2 Nov 10:00:04, 3 Nov
    mail.command(session, out, "d SORT (REVERSE DATE) UTF-8 ALL")
    assert out.take() == b"* SORT 5 4 3 1 2\r\n"
    done = mail.command(session, out, "e UID SORT (SUBJECT) UTF-8 UNSEEN")
    assert out.take() == b"* SORT 3 5 6\r\n"
    assert ok("e", done) == b"e OK UID SORT completed\r\n"
    mail.command(session, out, "f UID SORT (REVERSE SUBJECT) US-ASCII SUBJECT lunch")
    assert out.take() == b"* SORT 2 5\r\n"
    mail.command(session, out, "g SORT (FROM ARRIVAL) UTF-8 ALL")
    # RFC 5256: FROM by the first mailbox's local part: sender, sender, sender, yves, zed
    assert out.take() == b"* SORT 1 3 4 5 2\r\n"
    mail.command(session, out, "h SORT (SIZE) UTF-8 DELETED")
    assert out.take() == b"* SORT\r\n"


# -- another session's expunge --------------------------------------------------------------------


def test_a_search_after_another_sessions_expunge_leaves_it_out_and_does_not_fail(
    mail: Mail,
) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 3 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    cases = [
        ("c SEARCH ALL", b"* SEARCH 1 2 4 5\r\n"),
        ("d SEARCH SUBJECT report", b"* SEARCH\r\n"),
        ("e SEARCH SUBJECT lunch", b"* SEARCH 1 4\r\n"),
        ("f SEARCH BODY message", b"* SEARCH 1 4\r\n"),
        ("g SEARCH RETURN (COUNT ALL) NOT DELETED", b'* ESEARCH (TAG "g") COUNT 4 ALL 1:2,4:5\r\n'),
        ("h SORT (SUBJECT) UTF-8 ALL", b"* SORT 2 4 1 5\r\n"),
    ]
    for line, answer in cases:
        done = mail.command(session, out, line)
        # the numbers are the ones this session knows (3 is still there for it); no EXPUNGE
        # during a SEARCH or SORT by sequence number (RFC 3501 §7.4.1)
        assert out.take() == answer, line
        assert done.code is None
    mail.command(session, out, "i UID SEARCH ALL")
    assert out.take() == b"* SEARCH 2 3 5 6\r\n* 3 EXPUNGE\r\n"
    mail.command(session, out, "j SEARCH ALL")
    assert out.take() == b"* SEARCH 1 2 3 4\r\n"


def test_uid_sort_reports_the_expunge_after_its_answer(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(session, out, "c UID SORT (REVERSE SUBJECT) UTF-8 ALL")
    # zebra crossing, quarterly report, lunch again, apples
    assert out.take() == b"* SORT 6 4 5 3\r\n* 1 EXPUNGE\r\n"
    assert done == Done("UID SORT completed")


def test_a_message_whose_body_vanished_during_a_search_is_left_out(mail: Mail) -> None:
    """Expunged and deleted between the listing and the read: not found, never a failure."""
    session, out = mail.selected()
    gone = next(m.message_id for m in messages(mail) if m.uid == 3)
    real_body, real_heads = mail.store.read_body, mail.store.read_heads

    def read_body(message_id: str) -> Deferred[bytes]:
        if message_id == gone:
            return fail(NoSuchEntry(f"no message {message_id}"))
        return real_body(message_id)

    def read_heads(message_ids: Sequence[str], length: int) -> Deferred[list[MessageHead]]:
        return real_heads([m for m in message_ids if m != gone], length)

    mail.store.read_body = read_body  # type: ignore[method-assign]
    mail.store.read_heads = read_heads  # type: ignore[method-assign]
    mail.command(session, out, "a SEARCH BODY a")  # every body has an "a"
    assert out.take() == b"* SEARCH 1 3 4 5\r\n"
    mail.command(session, out, "b SEARCH FROM origin.test")
    assert out.take() == b"* SEARCH 1 3 4\r\n"
    mail.command(session, out, "c SORT (DATE) UTF-8 ALL")
    assert out.take() == b"* SORT 1 3 4 5\r\n"
