"""
SELECT, EXAMINE, UNSELECT and CLOSE on the core mailbox session (issue 12), with plain calls on a
memory store: what SELECT reports (RFC 3501 §6.3.1, RFC 7162 §3.1.2.1), what EXAMINE forbids
(§6.3.2), and that CLOSE expunges silently and only when read-write (§6.4.2).
"""

from __future__ import annotations

import pytest

from strata_twisted.core.imap_session import SYSTEM_FLAGS, Refused
from strata_twisted.model import NoSuchMailbox
from strata_twisted.proto.imap_server import SelectedMailbox
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    body,
    flags,
    messages,
    ok,
    run,
    settle,
    status,
    uids,
    watching,
)


@pytest.fixture
def mail() -> Mail:
    return Mail()


# -- SELECT ---------------------------------------------------------------------------------------


def test_select_reports_the_mailbox_as_it_is(mail: Mail) -> None:
    for n in range(3):
        mail.deliver(body(n))
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Seen"]))
    result_of(mail.store.store_flags(ALICE, "INBOX", [3], "add", ["$Label1", "\\Seen"]))
    before = status(mail)
    session, _ = mail.session()
    selected = run(session.select("INBOX", read_only=False))
    # RFC 3501 §6.3.1: FLAGS names the keywords in use; PERMANENTFLAGS adds \* (new keywords may
    # be stored); UNSEEN is the sequence number of the first message without \Seen.
    with_keyword = (*SYSTEM_FLAGS, "$Label1")
    assert selected == SelectedMailbox(
        flags=with_keyword,
        exists=3,
        uidvalidity=before.uidvalidity,
        uidnext=4,
        permanent_flags=(*with_keyword, "\\*"),
        first_unseen=2,
        highest_modseq=before.highest_modseq,  # RFC 7162 §3.1.2.1
        recent=3,  # RFC 3501 §2.3.2: the first session to select them
    )
    assert session.view is not None and session.view.keywords == {"$Label1"}


def test_select_an_empty_mailbox(mail: Mail) -> None:
    session, _ = mail.session()
    selected = run(session.select("Trash", read_only=False))
    assert (selected.exists, selected.recent, selected.uidnext, selected.first_unseen) == (
        0,
        0,
        1,
        None,
    )
    assert selected.flags == SYSTEM_FLAGS


def test_select_when_every_message_is_seen_names_no_first_unseen(mail: Mail) -> None:
    mail.deliver(body(1), flags=["\\Seen"])
    selected = run(mail.session()[0].select("INBOX", read_only=False))
    assert selected.exists == 1 and selected.first_unseen is None


def test_select_takes_the_name_in_any_case_of_inbox_and_keeps_uidnext_after_expunges(
    mail: Mail,
) -> None:
    for n in range(3):
        mail.deliver(body(n))
    result_of(mail.store.store_flags(ALICE, "INBOX", [3], "add", ["\\Deleted"]))
    result_of(mail.store.expunge(ALICE, "INBOX"))
    session, _ = mail.session()
    selected = run(session.select("iNbOx", read_only=False))
    assert session.view is not None and session.view.name == "INBOX"
    # RFC 3501 §2.3.1.1: UIDs are never reused, so UIDNEXT stays past the expunged one.
    assert (selected.exists, selected.uidnext) == (2, 4)
    assert session.view.uids == [1, 2]


def test_a_failed_select_leaves_no_mailbox_selected(mail: Mail) -> None:
    session, out = mail.selected()
    with pytest.raises(NoSuchMailbox) as missing:
        run(session.select("Nowhere", read_only=False))
    assert missing.value.imap_code == "NONEXISTENT"
    # RFC 3501 §6.3.1: "if a mailbox is selected and a SELECT command that fails is attempted,
    # no mailbox is selected".
    assert session.view is None
    with pytest.raises(Refused) as refused:
        mail.command(session, out, "a FETCH 1 FLAGS")
    assert (refused.value.status, refused.value.text) == ("BAD", "No mailbox selected")


def test_selecting_another_mailbox_leaves_the_first(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    run(session.select("Trash", read_only=False))
    assert session.view is not None and session.view.name == "Trash"
    mail.deliver(body(2))
    mail.command(session, out, "a NOOP")
    assert out.take() == b""  # INBOX is not its mailbox any more


# -- EXAMINE --------------------------------------------------------------------------------------


def test_examine_is_read_only_and_shows_the_same_state(mail: Mail) -> None:
    mail.deliver(body(1))
    mail.deliver(body(2), flags=["$Todo"])
    settle(mail)
    session, out = mail.session()
    examined = run(session.select("INBOX", read_only=True))
    selected = run(mail.session()[0].select("INBOX", read_only=False))

    def state(answer: SelectedMailbox) -> tuple[object, ...]:
        # PERMANENTFLAGS and [READ-ONLY] are the engine's to write for EXAMINE (RFC 3501 §6.3.2)
        return (answer.flags, answer.exists, answer.recent, answer.uidvalidity, answer.uidnext,
                answer.first_unseen, answer.highest_modseq)  # fmt: skip

    assert state(examined) == state(selected)
    assert examined.exists == 2 and examined.flags == (*SYSTEM_FLAGS, "$Todo")
    assert session.view is not None and session.view.read_only
    for line in ("a STORE 1 +FLAGS (\\Seen)", "b EXPUNGE", "c UID EXPUNGE 1", "d MOVE 1 Trash"):
        with pytest.raises(Refused) as refused:
            mail.command(session, out, line)
        # RFC 3501 §6.3.2; RFC 5530 READ-ONLY
        assert (refused.value.status, refused.value.code) == ("NO", "READ-ONLY"), line
    assert flags(mail) == {1: set(), 2: {"$Todo"}} and uids(mail, "Trash") == []


def test_examine_announces_new_keywords_with_no_permanent_flags(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected(read_only=True)
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1 +FLAGS.SILENT ($Later)")
    mail.command(session, out, "b NOOP")
    # RFC 3501 §7.1: a read-only mailbox has no permanent flags.
    assert out.take() == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)\r\n"
        b"* OK [PERMANENTFLAGS ()] Flags permitted\r\n"
        b"* 1 FETCH (UID 1 FLAGS (\\Recent $Later))\r\n"  # EXAMINE shows \Recent, takes nothing
    )


def test_select_after_examine_is_read_write_again(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected(read_only=True)
    run(session.select("INBOX", read_only=False))
    assert session.view is not None and not session.view.read_only
    assert mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Flagged)").code is None
    assert flags(mail) == {1: {"\\Flagged"}}


# -- UNSELECT -------------------------------------------------------------------------------------


def test_unselect_leaves_the_mailbox_without_expunging(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Deleted)")
    done = mail.command(session, out, "b UNSELECT")
    assert ok("b", done) == b"b OK UNSELECT completed\r\n"
    assert out.take() == b""
    assert session.view is None
    assert flags(mail) == {1: {"\\Deleted"}}  # RFC 3691 §2: no expunge
    with pytest.raises(Refused):
        mail.command(session, out, "c FETCH 1 FLAGS")


# -- CLOSE ----------------------------------------------------------------------------------------


def test_close_expunges_deleted_messages_silently(mail: Mail) -> None:
    for n in range(4):
        mail.deliver(body(n))
    session, out = mail.selected()
    mail.command(session, out, "a STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    done = mail.command(session, out, "b CLOSE")
    # RFC 3501 §6.4.2: no untagged EXPUNGE responses are sent.
    assert out.take() == b""
    assert ok("b", done) == b"b OK CLOSE completed\r\n"
    assert session.view is None
    assert uids(mail) == [1, 3]


def test_close_tells_the_other_sessions(mail: Mail) -> None:
    for n in range(3):
        mail.deliver(body(n))
    session, out = mail.selected()
    other, other_out, woken = watching(mail)
    mail.command(session, out, "a STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    woken.count = 0
    mail.command(session, out, "b CLOSE")
    assert woken.count == 1
    mail.command(other, other_out, "c NOOP")
    assert other_out.take() == b"* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"


def test_close_after_examine_expunges_nothing(mail: Mail) -> None:
    mail.deliver(body(1), flags=["\\Deleted"])
    session, out = mail.selected(read_only=True)
    done = mail.command(session, out, "a CLOSE")
    assert ok("a", done) == b"a OK CLOSE completed\r\n"
    assert session.view is None and uids(mail) == [1]


def test_close_with_nothing_deleted_changes_nothing(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    before = status(mail).highest_modseq
    mail.command(session, out, "a CLOSE")
    assert uids(mail) == [1] and status(mail).highest_modseq == before


def test_close_never_expunges_a_new_mailbox_of_the_same_name(mail: Mail) -> None:
    """The mailbox was deleted and created again meanwhile: its \\Deleted messages are not ours."""
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    session, out = mail.selected("proj")
    result_of(mail.store.delete_mailbox(ALICE, "proj"))
    result_of(mail.store.create_mailbox(ALICE, "proj"))
    mail.deliver(body(1), "proj", flags=["\\Deleted"])
    mail.command(session, out, "a CLOSE")
    assert session.view is None and uids(mail, "proj") == [1]


def test_close_releases_the_bodies_nobody_holds(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Archive"))
    mail.deliver(body(1), "Archive", flags=["\\Deleted"])
    [message] = messages(mail, "Archive")
    session, out = mail.selected("Archive")
    mail.command(session, out, "a CLOSE")
    assert result_of(mail.store.get_message(message.message_id)) is None
