"""
EXPUNGE and UID EXPUNGE on the core mailbox session (issue 12), with plain calls on a memory
store: only \\Deleted messages go (RFC 3501 §6.4.3; RFC 4315 §2.1), EXPUNGE responses from the
highest number down, what the user's other sessions hear, and stored bodies deleted once no
mailbox, queue entry or reading session needs them (L{BodyPins}).
"""

from __future__ import annotations

import pytest

from strata_twisted.core.imap_session import Done, Refused
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    body,
    filled,
    messages,
    ok,
    status,
    uids,
    watching,
)


@pytest.fixture
def mail() -> Mail:
    """Five messages in INBOX (UIDs 1..5), none of them \\Recent to the test's sessions."""
    return filled(5)


def stored(mail: Mail, message_id: str) -> bool:
    return result_of(mail.store.get_message(message_id)) is not None


# -- EXPUNGE --------------------------------------------------------------------------------------


def test_expunge_removes_only_deleted_messages_from_the_highest_number_down(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 2,3,5 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "b STORE 1 +FLAGS.SILENT (\\Seen \\Flagged)")
    done = mail.command(session, out, "c EXPUNGE")
    # RFC 3501 §7.4.1: each EXPUNGE renumbers what follows; from the highest, none shifts
    assert out.take() == b"* 5 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n"
    assert ok("c", done) == b"c OK EXPUNGE completed\r\n"
    assert uids(mail) == [1, 4]
    assert session.view is not None and session.view.uids == [1, 4]
    mail.command(session, out, "d EXPUNGE")
    assert out.take() == b""


def test_expunge_with_nothing_deleted_changes_nothing(mail: Mail) -> None:
    session, out = mail.selected()
    _, _, woken = watching(mail)
    before = status(mail).highest_modseq
    assert mail.command(session, out, "a EXPUNGE") == Done("EXPUNGE completed")
    assert out.take() == b"" and woken.count == 0
    assert status(mail).highest_modseq == before


def test_expunge_removes_a_message_another_session_flagged_deleted(mail: Mail) -> None:
    # RFC 3501 §6.4.3: *all* messages with \Deleted, whether or not this session heard of it
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b STORE 3 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "c EXPUNGE")
    assert out.take() == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    assert uids(mail) == [2, 4, 5]


def test_expunge_of_a_message_the_session_never_heard_of(mail: Mail) -> None:
    """It arrived flagged \\Deleted after the session looked: gone before it was ever shown."""
    session, out = mail.selected()
    mail.command(session, out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.deliver(body(6), flags=["\\Deleted"])
    mail.command(session, out, "b EXPUNGE")
    # no EXPUNGE for a number the client never had, and no EXISTS for it either
    assert out.take() == b"* 2 EXPUNGE\r\n"
    assert uids(mail) == [1, 3, 4, 5]
    mail.command(session, out, "c NOOP")
    assert out.take() == b""
    assert session.view is not None and session.view.uids == [1, 3, 4, 5]


def test_other_sessions_hear_the_expunge_at_their_next_command(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out, woken = watching(mail)
    mail.command(session, out, "a STORE 1,4 +FLAGS.SILENT (\\Deleted)")
    woken.count = 0
    mail.command(session, out, "b EXPUNGE")
    assert woken.count == 1
    mail.command(other, other_out, "c NOOP")
    # it had heard of neither \Deleted: the flags of what is gone are not worth telling
    assert other_out.take() == b"* 4 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    mail.command(other, other_out, "d FETCH 1:* (UID)")
    assert other_out.take() == b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 5)\r\n"


def test_expunge_in_an_examined_mailbox_is_refused(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    session, out = mail.selected(read_only=True)
    for line in ("a EXPUNGE", "b UID EXPUNGE 1"):
        with pytest.raises(Refused) as refused:
            mail.command(session, out, line)
        assert (refused.value.status, refused.value.code) == ("NO", "READ-ONLY"), line
    assert uids(mail) == [1, 2, 3, 4, 5]


def test_expunge_needs_a_selected_mailbox(mail: Mail) -> None:
    session, out = mail.session()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a EXPUNGE")
    assert refused.value.status == "BAD"


# -- UID EXPUNGE ----------------------------------------------------------------------------------


def test_uid_expunge_removes_only_the_named_deleted_uids(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    done = mail.command(session, out, "b UID EXPUNGE 2,4")
    # RFC 4315 §2.1: only messages both named and \Deleted
    assert out.take() == b"* 2 EXPUNGE\r\n"
    assert ok("b", done) == b"b OK UID EXPUNGE completed\r\n"
    assert uids(mail) == [1, 3, 4, 5]
    assert mail.command(session, out, "c UID EXPUNGE 9") == Done("UID EXPUNGE completed")
    assert out.take() == b""
    mail.command(session, out, "d UID EXPUNGE 3:*")
    assert out.take() == b"* 2 EXPUNGE\r\n"
    assert uids(mail) == [1, 4, 5]


def test_uid_expunge_reports_another_sessions_expunge_too(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 5 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    mail.command(session, out, "c STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "d UID EXPUNGE 1")
    assert out.take() == b"* 1 EXPUNGE\r\n* 4 EXPUNGE\r\n"
    assert session.view is not None and session.view.uids == [2, 3, 4]


# -- the bodies -----------------------------------------------------------------------------------


def test_a_body_is_deleted_once_no_mailbox_holds_it() -> None:
    mail = Mail()
    result_of(mail.store.create_mailbox(ALICE, "Archive"))
    mail.deliver(body(1), "Archive")
    [message] = messages(mail, "Archive")
    session, out = mail.selected("Archive")
    mail.command(session, out, "a COPY 1 Trash")
    mail.command(session, out, "b STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "c EXPUNGE")
    assert stored(mail, message.message_id)  # Trash still holds it
    trash, trash_out = mail.selected("Trash")
    mail.command(trash, trash_out, "d STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(trash, trash_out, "e UID EXPUNGE 1")
    assert not stored(mail, message.message_id)


def test_a_body_the_relay_queue_still_needs_stays(mail: Mail) -> None:
    # intake's shadow copy: its queue entry still waits for the primary
    [first, *_] = messages(mail)
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "b EXPUNGE")
    assert stored(mail, first.message_id)


def test_a_pinned_body_is_deleted_only_after_unpin() -> None:
    mail = Mail()
    result_of(mail.store.create_mailbox(ALICE, "Archive"))
    mail.deliver(body(1), "Archive")
    mail.deliver(body(2), "Archive")
    one, two = (m.message_id for m in messages(mail, "Archive"))
    pins = mail.shared.pins
    pins.pin(one)
    pins.pin(one)  # two sessions reading it
    session, out = mail.selected("Archive")
    mail.command(session, out, "a STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "b EXPUNGE")
    assert out.take() == b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    assert stored(mail, one) and not stored(mail, two)
    pins.unpin(one)
    assert stored(mail, one)  # one reader left
    pins.unpin(one)
    assert not stored(mail, one)
    assert pins.pinned == 0


def test_a_pinned_body_still_in_another_mailbox_is_not_deleted_at_unpin() -> None:
    mail = Mail()
    result_of(mail.store.create_mailbox(ALICE, "Archive"))
    mail.deliver(body(1), "Archive")
    [message] = messages(mail, "Archive")
    mail.shared.pins.pin(message.message_id)
    session, out = mail.selected("Archive")
    mail.command(session, out, "a COPY 1 Trash")
    mail.command(session, out, "b STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(session, out, "c EXPUNGE")
    mail.shared.pins.unpin(message.message_id)
    assert stored(mail, message.message_id)  # the store checks: Trash holds it
    assert uids(mail, "Trash") == [1]
