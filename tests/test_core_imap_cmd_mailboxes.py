"""
The mailbox commands of the core mailbox session (issue 12), with plain calls on a memory store:
CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.3 to §6.3.7), STATUS (§6.3.10,
\\Recent counted as §2.3.2 has it), and LIST and LSUB through the session (§6.3.8, §6.3.9,
LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819).  What a mailbox's deletion or renaming does to
the sessions that have it selected is here too.
"""

from __future__ import annotations

import pytest

from strata_twisted.core.imap_session import Done, MailboxGone, MailboxSession, Refused
from strata_twisted.model import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxRefused,
    NoSuchMailbox,
)
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    Recorder,
    Woken,
    body,
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


def names(mail: Mail) -> list[str]:
    return [m.name for m in result_of(mail.store.list_mailboxes(ALICE))]


def subscriptions(mail: Mail) -> list[str]:
    return result_of(mail.store.list_subscriptions(ALICE))


# -- CREATE ---------------------------------------------------------------------------------------


def test_create_makes_the_mailbox_and_its_superiors(mail: Mail) -> None:
    session, out = mail.session()
    done = mail.command(session, out, "a CREATE Projects/2026/Q1")
    assert ok("a", done) == b"a OK CREATE completed\r\n" and out.take() == b""
    assert {"Projects", "Projects/2026", "Projects/2026/Q1"} <= set(names(mail))
    # RFC 3501 §6.3.3: a trailing delimiter says the client means to create children; dropped
    mail.command(session, out, "b CREATE Lists/")
    assert "Lists" in names(mail) and "Lists/" not in names(mail)
    assert "Lists" not in subscriptions(mail)  # creating does not subscribe


@pytest.mark.parametrize("name", ["Projects", "inbox", "INBOX", "Projects/"])
def test_create_of_an_existing_name_is_alreadyexists(mail: Mail, name: str) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Projects")
    with pytest.raises(MailboxExists) as refused:
        mail.command(session, out, f"b CREATE {name}")
    assert refused.value.imap_code == "ALREADYEXISTS"


@pytest.mark.parametrize("name", ["a//b", "a/../b", "~x", '"a*"'])
def test_create_of_an_invalid_name_is_refused(mail: Mail, name: str) -> None:
    session, out = mail.session()
    before = names(mail)
    with pytest.raises(InvalidMailboxName):
        mail.command(session, out, f"a CREATE {name}")
    assert names(mail) == before


# -- DELETE ---------------------------------------------------------------------------------------


def test_delete(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Parent/Child")
    mail.command(session, out, "b CREATE Work")
    done = mail.command(session, out, "c DELETE Work")
    assert ok("c", done) == b"c OK DELETE completed\r\n"
    assert "Work" not in names(mail)
    with pytest.raises(NoSuchMailbox):
        mail.command(session, out, "d DELETE Work")
    # a mailbox with children is refused rather than left as a \Noselect name
    with pytest.raises(MailboxHasChildren) as children:
        mail.command(session, out, "e DELETE Parent")
    assert children.value.imap_code == "INUSE"
    with pytest.raises(MailboxRefused) as inbox:
        mail.command(session, out, "f DELETE inbox")
    assert inbox.value.imap_code == "CANNOT"
    mail.command(session, out, "g DELETE Parent/Child")
    mail.command(session, out, "h DELETE Parent")
    assert names(mail) == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]


@pytest.mark.parametrize("read_only", [False, True])
def test_delete_of_the_selected_mailbox_is_refused(mail: Mail, read_only: bool) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    mail.deliver(body(1), "Work")
    session, out = mail.selected("Work", read_only=read_only)
    for name in ("Work", "Work/"):
        with pytest.raises(Refused) as refused:
            mail.command(session, out, f"a DELETE {name}")
        assert (refused.value.status, refused.value.code, refused.value.text) == (
            "NO",
            "INUSE",
            "Cannot delete the selected mailbox",
        )
    assert "Work" in names(mail) and uids(mail, "Work") == [1]
    mail.command(session, out, "b UNSELECT")
    mail.command(session, out, "c DELETE Work")
    assert "Work" not in names(mail)


def test_a_session_selected_on_a_deleted_mailbox_ends_at_its_next_command(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    mail.deliver(body(1), "Work")
    watcher, watcher_out, woken = watching(mail, "Work")
    session, out = mail.session()
    mail.command(session, out, "a DELETE Work")
    assert woken.count == 1  # told at once, so an IDLE ends at once
    # RFC 3501 §7.1.5: the adapter answers BYE and closes
    for line in ("b NOOP", "c FETCH 1 (FLAGS)", "d UID SEARCH ALL", "e STORE 1 +FLAGS (\\Seen)"):
        with pytest.raises(MailboxGone):
            mail.command(watcher, watcher_out, line)
    assert watcher_out.take() == b""


def test_a_deleted_mailbox_keeps_its_subscription(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Lists/ietf")
    mail.command(session, out, "b SUBSCRIBE Lists/ietf")
    mail.command(session, out, "c DELETE Lists/ietf")
    # RFC 3501 §6.3.6: the server MUST NOT unsubscribe a name because its mailbox is gone
    assert "Lists/ietf" in subscriptions(mail)
    mail.command(session, out, 'd LSUB "" "Lists/*"')
    assert out.take() == b'* LSUB () "/" Lists/ietf\r\n'
    mail.command(session, out, 'e LIST (SUBSCRIBED) "" "Lists/*"')
    assert out.take() == b'* LIST (\\Subscribed \\NonExistent) "/" Lists/ietf\r\n'  # RFC 5258
    mail.command(session, out, "f CREATE Lists/ietf")  # and a mailbox made again shows it
    mail.command(session, out, 'g LIST (SUBSCRIBED) "" "Lists/*"')
    assert out.take() == b'* LIST (\\Subscribed) "/" Lists/ietf\r\n'


def test_delete_then_create_is_a_new_empty_mailbox(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE proj")
    for n in range(3):
        mail.deliver(body(n), "proj")
    before = status(mail, "proj").uidvalidity
    mail.command(session, out, "b DELETE proj")
    mail.command(session, out, "c CREATE proj")
    mail.command(session, out, "d STATUS proj (MESSAGES UIDNEXT UIDVALIDITY)")
    after = status(mail, "proj").uidvalidity
    assert after != before
    assert out.take() == b"* STATUS proj (MESSAGES 0 UIDNEXT 1 UIDVALIDITY %d)\r\n" % after


def test_delete_releases_the_bodies_no_other_mailbox_holds(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    mail.deliver(body(1), "Work")
    mail.deliver(body(2), "Work")
    one, two = (m.message_id for m in messages(mail, "Work"))
    result_of(mail.store.copy_messages(ALICE, "Work", [2], "Trash"))
    session, out = mail.session()
    mail.command(session, out, "a DELETE Work")
    assert result_of(mail.store.get_message(one)) is None
    assert result_of(mail.store.get_message(two)) is not None  # Trash holds it


# -- RENAME ---------------------------------------------------------------------------------------


def test_rename_a_mailbox_and_its_children(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Work/Old")
    done = mail.command(session, out, "b RENAME Work Archive/Work")
    assert ok("b", done) == b"b OK RENAME completed\r\n"
    assert {"Archive", "Archive/Work", "Archive/Work/Old"} <= set(names(mail))
    assert "Work" not in names(mail) and "Work/Old" not in names(mail)
    with pytest.raises(NoSuchMailbox):
        mail.command(session, out, "c RENAME Nowhere Else")
    with pytest.raises(MailboxExists):
        mail.command(session, out, "d RENAME Archive Trash")


def test_rename_keeps_uidvalidity_and_uids(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    mail.deliver(body(1), "Work")
    before = status(mail, "Work")
    session, out = mail.session()
    mail.command(session, out, "a RENAME Work Done")
    after = status(mail, "Done")
    assert (after.uidvalidity, after.uidnext, uids(mail, "Done")) == (
        before.uidvalidity,
        before.uidnext,
        [1],
    )


def test_the_selected_mailbox_follows_its_rename(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Projects/2026"))
    mail.deliver(body(1), "Projects/2026")
    settle(mail, "Projects/2026")
    session, out = mail.selected("Projects/2026")
    mail.command(session, out, "a RENAME Projects Archive")  # a superior of it
    assert session.view is not None and session.view.name == "Archive/2026"
    mail.deliver(body(2), "Archive/2026")
    mail.command(session, out, "b NOOP")
    assert out.take() == b"* 2 EXISTS\r\n* 1 RECENT\r\n"  # still in its mailbox
    mail.command(session, out, "c RENAME Archive/2026 Done")  # itself
    assert session.view.name == "Done"
    mail.command(session, out, "d UID FETCH 1:* (UID)")
    assert out.take() == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n"


def test_renaming_a_name_that_only_starts_like_the_selected_one_leaves_it(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    result_of(mail.store.create_mailbox(ALICE, "Workshop"))
    session, out = mail.selected("Workshop")
    mail.command(session, out, "a RENAME Work Job")
    assert session.view is not None and session.view.name == "Workshop"
    mail.command(session, out, "b NOOP")  # and it is still there


def test_rename_inbox_moves_its_messages_and_the_selected_inbox_hears_expunges(
    mail: Mail,
) -> None:
    for n in range(3):
        mail.deliver(body(n))
    settle(mail)
    session, out = mail.selected()
    done = mail.command(session, out, "a RENAME INBOX Old-Inbox")
    # RFC 3501 §6.3.5: the messages move to the new mailbox; INBOX stays, empty, selected
    assert out.take() == b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"
    assert done == Done("RENAME completed")
    assert session.view is not None and session.view.name == "INBOX"
    assert uids(mail) == [] and len(uids(mail, "Old-Inbox")) == 3
    assert status(mail, "Old-Inbox").recent == 3  # arrived there: recent to whoever looks first
    mail.deliver(body(9))
    mail.command(session, out, "b NOOP")
    assert out.take() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"


def test_another_session_on_a_renamed_mailbox_ends_at_its_next_command(mail: Mail) -> None:
    result_of(mail.store.create_mailbox(ALICE, "Work"))
    watcher, watcher_out, woken = watching(mail, "Work")
    session, out = mail.session()
    mail.command(session, out, "a RENAME Work Done")
    assert woken.count == 1
    # its name no longer leads to its mailbox: BYE, as Dovecot ends it
    with pytest.raises(MailboxGone):
        mail.command(watcher, watcher_out, "b NOOP")


def test_a_rename_wakes_the_sessions_on_the_mailboxs_inferiors_too(mail: Mail) -> None:
    """
    Renaming ``Work`` moves ``Work/Sub`` as well (RFC 3501 §6.3.5): a session with ``Work/Sub``
    selected has lost its mailbox exactly as if it had been deleted, and must hear of it at
    once (an IDLE would otherwise wait for its next poll to say BYE), as DELETE makes it.
    """
    result_of(mail.store.create_mailbox(ALICE, "Work/Sub"))
    watcher, watcher_out, woken = watching(mail, "Work/Sub")
    session, out = mail.session()
    mail.command(session, out, "a RENAME Work Done")
    assert woken.count == 1
    with pytest.raises(MailboxGone):
        mail.command(watcher, watcher_out, "b NOOP")


# -- SUBSCRIBE, UNSUBSCRIBE -----------------------------------------------------------------------


def test_subscribe_and_unsubscribe(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Lists/ietf")
    done = mail.command(session, out, "b SUBSCRIBE Lists/ietf")
    assert ok("b", done) == b"b OK SUBSCRIBE completed\r\n"
    mail.command(session, out, "c SUBSCRIBE Lists/ietf")  # twice is fine
    assert subscriptions(mail).count("Lists/ietf") == 1
    mail.command(session, out, 'd LSUB "" "Lists/*"')
    assert out.take() == b'* LSUB () "/" Lists/ietf\r\n'
    done = mail.command(session, out, "e UNSUBSCRIBE Lists/ietf")
    assert ok("e", done) == b"e OK UNSUBSCRIBE completed\r\n"
    assert "Lists/ietf" not in subscriptions(mail)
    mail.command(session, out, 'f LSUB "" "Lists/*"')
    assert out.take() == b""
    mail.command(session, out, "g UNSUBSCRIBE Never/Subscribed")  # as Dovecot: OK
    mail.command(session, out, "h UNSUBSCRIBE INBOX")
    assert "INBOX" not in subscriptions(mail)


def test_subscribe_to_a_missing_mailbox_is_nonexistent(mail: Mail) -> None:
    session, out = mail.session()
    with pytest.raises(NoSuchMailbox) as refused:
        mail.command(session, out, "a SUBSCRIBE Nowhere")
    assert refused.value.imap_code == "NONEXISTENT"
    assert "Nowhere" not in subscriptions(mail)


def test_lsub_shows_the_unsubscribed_parent_of_a_subscribed_child_as_noselect(
    mail: Mail,
) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Lists/ietf")
    mail.command(session, out, "b SUBSCRIBE Lists/ietf")
    # RFC 3501 §6.3.9: "%" at the end matches the parent, listed \Noselect when not subscribed
    mail.command(session, out, 'c LSUB "" "L%"')
    assert out.take() == b'* LSUB (\\Noselect) "/" Lists\r\n'


# -- STATUS ---------------------------------------------------------------------------------------


def test_status_items(mail: Mail) -> None:
    for n in range(3):
        mail.deliver(body(n))
    result_of(mail.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Seen"]))
    now = status(mail)
    session, out = mail.session()
    items = "MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ"
    done = mail.command(session, out, f"a STATUS inbox ({items})")
    assert out.take() == (
        b"* STATUS INBOX (MESSAGES 3 RECENT 3 UIDNEXT 4 UIDVALIDITY %d UNSEEN 2 HIGHESTMODSEQ %d)"
        b"\r\n" % (now.uidvalidity, now.highest_modseq)
    )
    assert ok("a", done) == b"a OK STATUS completed\r\n"
    mail.command(session, out, "b STATUS Trash (UNSEEN MESSAGES)")  # in the order asked
    assert out.take() == b"* STATUS Trash (UNSEEN 0 MESSAGES 0)\r\n"


def test_status_recent_counts_what_no_session_has_seen(mail: Mail) -> None:
    mail.deliver(body(1))
    mail.deliver(body(2))
    session, out = mail.session()
    mail.command(session, out, "a STATUS INBOX (RECENT)")
    assert out.take() == b"* STATUS INBOX (RECENT 2)\r\n"
    run(mail.session()[0].select("INBOX", read_only=True))  # EXAMINE takes nothing
    mail.command(session, out, "b STATUS INBOX (RECENT)")
    assert out.take() == b"* STATUS INBOX (RECENT 2)\r\n"
    selected, selected_out = mail.selected()  # SELECT takes them (RFC 3501 §2.3.2)
    mail.command(session, out, "c STATUS INBOX (RECENT)")
    assert out.take() == b"* STATUS INBOX (RECENT 0)\r\n"
    mail.deliver(body(3))
    mail.command(session, out, "d STATUS INBOX (RECENT MESSAGES)")
    assert out.take() == b"* STATUS INBOX (RECENT 1 MESSAGES 3)\r\n"
    mail.command(selected, selected_out, "e NOOP")  # the selected session learns of it
    assert selected_out.take() == b"* 3 EXISTS\r\n* 3 RECENT\r\n"
    mail.command(session, out, "f STATUS INBOX (RECENT)")
    assert out.take() == b"* STATUS INBOX (RECENT 0)\r\n"


def test_status_of_the_selected_mailbox_changes_nothing_in_the_session(mail: Mail) -> None:
    mail.deliver(body(1))
    session, out = mail.selected()
    mail.deliver(body(2))
    mail.command(session, out, "a STATUS INBOX (MESSAGES)")
    # the new message is told as STATUS says, and as EXISTS (sync after the command)
    assert out.take() == b"* STATUS INBOX (MESSAGES 2)\r\n* 2 EXISTS\r\n* 2 RECENT\r\n"


def test_status_of_a_missing_mailbox_is_nonexistent(mail: Mail) -> None:
    session, out = mail.session()
    with pytest.raises(NoSuchMailbox) as refused:
        mail.command(session, out, "a STATUS Nowhere (MESSAGES)")
    assert refused.value.imap_code == "NONEXISTENT"
    assert out.take() == b""


# -- LIST, LSUB -----------------------------------------------------------------------------------


def test_list_through_the_session(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Projects/2026")
    done = mail.command(session, out, 'b LIST "" "*"')
    assert out.take() == (
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
        b'* LIST (\\HasChildren) "/" Projects\r\n'
        b'* LIST (\\HasNoChildren) "/" Projects/2026\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
    )
    assert ok("b", done) == b"b OK LIST completed\r\n"
    mail.command(session, out, 'c LIST "Projects/" "%"')
    assert out.take() == b'* LIST (\\HasNoChildren) "/" Projects/2026\r\n'
    mail.command(session, out, 'd LIST "" ""')  # RFC 3501 §6.3.8: the delimiter
    assert out.take() == b'* LIST (\\Noselect) "/" ""\r\n'


def test_list_status_answers_status_after_each_mailbox(mail: Mail) -> None:
    for n in range(2):
        mail.deliver(body(n))
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Seen"]))
    mail.deliver(body(5), "Sent")
    session, out = mail.session()
    mail.command(session, out, "a CREATE Projects/2026")
    done = mail.command(session, out, 'b LIST "" "%" RETURN (STATUS (MESSAGES UNSEEN RECENT))')
    # RFC 5819 §2: STATUS for each selectable mailbox listed; Projects/2026 does not match "%"
    assert out.take() == (
        b'* LIST () "/" Drafts\r\n* STATUS Drafts (MESSAGES 0 UNSEEN 0 RECENT 0)\r\n'
        b'* LIST () "/" INBOX\r\n* STATUS INBOX (MESSAGES 2 UNSEEN 1 RECENT 2)\r\n'
        b'* LIST () "/" Junk\r\n* STATUS Junk (MESSAGES 0 UNSEEN 0 RECENT 0)\r\n'
        b'* LIST () "/" Projects\r\n* STATUS Projects (MESSAGES 0 UNSEEN 0 RECENT 0)\r\n'
        b'* LIST () "/" Sent\r\n* STATUS Sent (MESSAGES 1 UNSEEN 1 RECENT 1)\r\n'
        b'* LIST () "/" Trash\r\n* STATUS Trash (MESSAGES 0 UNSEEN 0 RECENT 0)\r\n'
    )
    assert ok("b", done) == b"b OK LIST completed\r\n"


def test_list_subscribed_and_the_return_options(mail: Mail) -> None:
    session, out = mail.session()
    mail.command(session, out, "a CREATE Lists/ietf")
    mail.command(session, out, "b SUBSCRIBE Lists/ietf")
    # As Dovecot answers: LIST-EXTENDED gives only what RETURN asks for
    mail.command(session, out, 'c LIST (SUBSCRIBED) "" "L*"')
    assert out.take() == b'* LIST (\\Subscribed) "/" Lists/ietf\r\n'
    mail.command(session, out, 'd LIST "" "L*" RETURN (SUBSCRIBED)')
    assert out.take() == b'* LIST () "/" Lists\r\n* LIST (\\Subscribed) "/" Lists/ietf\r\n'
    # RFC 5258 §3.5 CHILDINFO: the parent of a subscribed child, with RECURSIVEMATCH
    mail.command(session, out, 'e LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    # the tag is an astring (RFC 5258 §6): Dovecot quotes it, an atom is as good
    assert out.take().replace(b'"CHILDINFO"', b"CHILDINFO") == (
        b'* LIST (\\Subscribed) "/" Drafts\r\n'
        b'* LIST (\\Subscribed) "/" INBOX\r\n'
        b'* LIST (\\Subscribed) "/" Junk\r\n'
        b'* LIST () "/" Lists (CHILDINFO ("SUBSCRIBED"))\r\n'
        b'* LIST (\\Subscribed) "/" Sent\r\n'
        b'* LIST (\\Subscribed) "/" Trash\r\n'
    )


def test_list_works_with_a_mailbox_selected_and_tells_its_changes(mail: Mail) -> None:
    session, out = mail.selected()
    mail.deliver(body(1))
    mail.command(session, out, 'a LIST "" "INBOX"')
    assert out.take() == b'* LIST (\\HasNoChildren) "/" INBOX\r\n* 1 EXISTS\r\n* 1 RECENT\r\n'
    mail.command(session, out, 'b LSUB "" "INBOX"')
    assert out.take() == b'* LSUB () "/" INBOX\r\n'


def test_a_session_of_another_user_never_sees_these_mailboxes(mail: Mail) -> None:
    bob = "bob@example.test"
    result_of(mail.store.ensure_user(bob))
    result_of(mail.store.create_mailbox(ALICE, "Private"))
    session = MailboxSession(bob, mail.shared, Woken())
    out = Recorder()
    mail.command(session, out, 'a LIST "" "*"')
    assert b"Private" not in out.take()
    with pytest.raises(NoSuchMailbox):
        mail.command(session, out, "b STATUS Private (MESSAGES)")
    with pytest.raises(NoSuchMailbox):
        run(session.select("Private", read_only=False))
