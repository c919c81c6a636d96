"""
The mailbox session's view of its mailbox when other sessions change it (issue 12), with plain
calls on a memory store: identity not names, expunges by others, MODSEQ that never goes back,
keywords announced before they are shown.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, fail

from strata_twisted.core.imap_session import MailboxGone, Refused, View
from strata_twisted.errors import NoSuchEntry
from strata_twisted.model import MailboxInfo, MailMessage
from strata_twisted.testing import result_of
from tests.core_imap import ALICE, Mail, body, run


@pytest.fixture
def mail() -> Mail:
    return Mail()


def test_a_mailbox_deleted_and_created_again_is_empty_on_every_session(mail: Mail) -> None:
    """The ghost bug: cached state keyed by name showed the old mailbox's messages."""
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    for n in range(3):
        mail.deliver(body(n), "proj")
    watcher, out = mail.selected("proj")  # caches the listing of the first incarnation
    first = watcher.view
    assert first is not None and len(first.uids) == 3
    run(watcher.select("INBOX", read_only=False))
    result_of(mail.store.delete_mailbox(ALICE, "proj"))
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    for n in range(2):
        mail.deliver(body(10 + n), "proj")
    for session in (watcher, mail.session()[0]):
        selected = run(session.select("proj", read_only=False))
        assert selected.exists == 2
        assert selected.uidvalidity != first.uidvalidity
        assert session.view is not None and session.view.uids == [1, 2]
    mail.command(watcher, out, "f UID SEARCH ALL")
    assert out.take() == b"* SEARCH 1 2\r\n"


def test_a_session_whose_mailbox_was_deleted_under_it_ends(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    mail.deliver(body(1), "proj")
    session, out = mail.selected("proj")
    result_of(mail.store.delete_mailbox(ALICE, "proj"))
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    with pytest.raises(MailboxGone):
        mail.command(session, out, "a NOOP")


def test_a_fetch_leaves_out_what_another_session_expunged(mail: Mail) -> None:
    for n in range(3):
        mail.deliver(body(n))
    reader, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 2 +FLAGS (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(reader, out, "c FETCH 1:3 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert done.code is not None and done.code.name == "EXPUNGEISSUED"  # RFC 9051 §7.1
    text = out.take()
    assert b"* 1 FETCH (UID 1 " in text and b"* 3 FETCH (UID 3 " in text
    assert b"UID 2" not in text
    assert b"EXPUNGE" not in text  # RFC 3501 §7.4.1: not during a FETCH by sequence number
    mail.command(reader, out, "d NOOP")
    assert out.take() == b"* 2 EXPUNGE\r\n"


def test_a_fetch_whose_body_vanished_after_the_listing_still_completes(mail: Mail) -> None:
    """Expunged and deleted between the listing and the read: left out, never a failure."""
    for n in range(2):
        mail.deliver(body(n))
    reader, out = mail.selected()
    gone = result_of(mail.store.list_messages(ALICE, "INBOX"))[0].message_id
    real = mail.store.read_body_range

    def read(message_id: str, offset: int, length: int) -> Deferred[bytes]:
        if message_id == gone:
            return fail(NoSuchEntry(f"no message {message_id}"))
        return real(message_id, offset, length)

    mail.store.read_body_range = read  # type: ignore[method-assign]
    done = mail.command(reader, out, "a FETCH 1:2 (BODY.PEEK[TEXT])")
    assert done.code is not None and done.code.name == "EXPUNGEISSUED"
    assert out.take() == b"* 2 FETCH (BODY[TEXT] {19}\r\nbody of message 1\r\n)\r\n"


def test_another_sessions_keyword_is_announced_before_it_is_shown(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1 +FLAGS ($Important)")
    mail.command(session, out, "b NOOP")
    lines = out.take().split(b"\r\n")
    assert lines[0].startswith(b"* FLAGS (") and b"$Important" in lines[0]
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (") and b"$Important" in lines[1]
    assert lines[2] == b"* 1 FETCH (UID 1 FLAGS (\\Recent $Important))"  # it selected first
    mail.command(session, out, "c STORE 1 +FLAGS ($Important)")
    assert b"* FLAGS" not in out.take()  # announced once


def test_a_session_never_reports_an_older_modseq() -> None:
    info = MailboxInfo("INBOX", 7, 2, 10)
    old = MailMessage(1, "q1", frozenset(), 0.0, 10, modseq=5)
    view = View.of(info, [old], read_only=False)
    newer = MailMessage(1, "q1", frozenset({"\\Deleted"}), 0.0, 10, modseq=9)
    assert view.remember(newer)
    assert not view.remember(old)  # a stale listing cannot take the session back
    assert view.flags[1] == {"\\Deleted"} and view.modseqs[1] == 9
    assert view.current(old) == newer


def test_modseqs_seen_by_one_session_only_grow_under_interleaved_stores(mail: Mail) -> None:
    for n in range(5):
        mail.deliver(body(n))
    sessions = [mail.selected(condstore=True) for _ in range(3)]
    seen: dict[int, int] = {}
    for round_ in range(6):
        for i, (session, out) in enumerate(sessions):
            flag = "\\Flagged" if (round_ + i) % 2 else "\\Seen"
            mail.command(session, out, f"t{i} STORE 1:5 {'+' if round_ % 2 else '-'}FLAGS ({flag})")
            mail.command(session, out, f"n{i} NOOP")
            for line in out.take().split(b"\r\n"):
                if b"MODSEQ (" in line and i == 0:
                    uid = int(line.split(b"UID ")[1].split(b" ")[0])
                    modseq = int(line.split(b"MODSEQ (")[1].split(b")")[0])
                    assert modseq >= seen.get(uid, 0), line
                    seen[uid] = modseq
    assert seen


# -- \Recent (RFC 3501 §2.3.2) ---------------------------------------------------------------------


def test_a_new_message_is_recent_to_exactly_one_session(mail: Mail) -> None:
    mail.deliver(body(1))
    mail.deliver(body(2))
    assert result_of(mail.store.mailbox_status(ALICE, "INBOX")).recent == 2
    peek = run(mail.session()[0].select("INBOX", read_only=True))
    assert peek.recent == 2  # EXAMINE shows them and takes nothing
    first = run(mail.session()[0].select("INBOX", read_only=False))
    second = run(mail.session()[0].select("INBOX", read_only=False))
    assert (first.recent, second.recent) == (2, 0)
    assert result_of(mail.store.mailbox_status(ALICE, "INBOX")).recent == 0


def test_recent_messages_show_in_fetch_and_search(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    mail.deliver(body(2))
    mail.command(session, out, "a NOOP")
    assert out.take() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
    mail.command(session, out, "b FETCH 1:2 (FLAGS)")
    assert out.take() == b"* 1 FETCH (FLAGS (\\Recent))\r\n* 2 FETCH (FLAGS (\\Recent))\r\n"
    mail.command(session, out, "c STORE 1 +FLAGS.SILENT (\\Seen)")
    mail.command(session, out, "d SEARCH RECENT")
    mail.command(session, out, "e SEARCH NEW")
    mail.command(session, out, "f SEARCH OLD")
    assert out.take() == b"* SEARCH 1 2\r\n* SEARCH 2\r\n* SEARCH\r\n"
    other, other_out = mail.selected()
    mail.command(other, other_out, "g SEARCH RECENT")
    assert other_out.take() == b"* SEARCH\r\n"


def test_a_message_seen_first_by_another_session_is_not_recent_here(mail: Mail) -> None:
    one, one_out = mail.selected()
    two, two_out = mail.selected()
    mail.deliver(body(1))
    mail.command(one, one_out, "a NOOP")
    mail.command(two, two_out, "b NOOP")
    assert one_out.take() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    assert two_out.take() == b"* 1 EXISTS\r\n"


def test_recent_cannot_be_stored(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a STORE 1 +FLAGS (\\Recent)")
    assert refused.value.status == "BAD"


# -- THREAD (RFC 5256) ----------------------------------------------------------------------------


def test_thread_references_puts_a_reply_under_its_parent(mail: Mail) -> None:
    mail.deliver(body(1, subject="plan"))
    mail.deliver(body(2, subject="other"))
    mail.deliver(body(3, subject="Re: plan", extra="In-Reply-To: <m1@origin.test>\r\n"))
    session, out = mail.selected()
    mail.command(session, out, "a THREAD REFERENCES UTF-8 ALL")
    mail.command(session, out, "b UID THREAD ORDEREDSUBJECT UTF-8 ALL")
    # ORDEREDSUBJECT: by base subject, the threads in the order of their first dates (a tie here)
    assert out.take() == b"* THREAD (1 3)(2)\r\n* THREAD (1 3)(2)\r\n"
