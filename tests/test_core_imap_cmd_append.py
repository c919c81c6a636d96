"""
APPEND on the core mailbox session (issue 12), with plain calls on a memory store: the message
is written as it arrives (append_begin, append_data, append_end) and committed only once every
check passed (RFC 3501 §6.3.11), APPENDUID (RFC 4315 §3), TRYCREATE, flags that may not be
stored, an abort that leaves nothing behind, and the sessions that hear of the new message.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from strata_twisted.core.imap_session import Done, MailboxSession, Refused
from strata_twisted.errors import StorageError
from strata_twisted.model import InvalidFlag, InvalidMailboxName, StoredMessage
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    Recorder,
    body,
    messages,
    ok,
    run,
    settle,
    status,
    uids,
    watching,
)

REPORT = (
    b"From: Sender <sender@origin.test>\r\n"
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
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX--\r\n"
)


@pytest.fixture
def mail() -> Mail:
    return Mail()


def append(
    session: MailboxSession,
    out: Recorder,
    mailbox: str,
    data: bytes,
    flags: tuple[str, ...] = (),
    date: float | None = None,
    *,
    piece: int = 7,
) -> Done:
    """An APPEND as the adapter makes it: begin, the literal in pieces, end."""
    session.append_begin(mailbox, flags, date)
    for start in range(0, len(data), piece):
        d = session.append_data(data[start : start + piece])
        if d is not None:
            result_of(d)
    return run(session.append_end(out))


def count(mail: Mail) -> int:
    return result_of(mail.store.message_count())


def test_append_stores_the_bytes_and_answers_appenduid(mail: Mail) -> None:
    session, out = mail.session()
    done = append(session, out, "Drafts", REPORT)
    drafts = status(mail, "Drafts").uidvalidity
    assert ok("c", done) == b"c OK [APPENDUID %d 1] APPEND completed\r\n" % drafts
    assert out.take() == b""
    [message] = messages(mail, "Drafts")
    assert result_of(mail.store.read_body(message.message_id)) == REPORT
    assert message.size == len(REPORT)
    done = append(session, out, "Drafts/", body(2))  # a trailing delimiter is dropped
    assert ok("d", done) == b"d OK [APPENDUID %d 2] APPEND completed\r\n" % drafts
    # an appended message goes into its mailbox only: never into the relay queue
    assert result_of(mail.store.list_entries()) == []


def test_append_keeps_flags_and_internal_date(mail: Mail) -> None:
    session, out = mail.session()
    append(session, out, "Sent", body(1), ("\\Seen", "$Forwarded"), 1_700_000_000.0)
    append(session, out, "Sent", body(2))  # no date: now (RFC 3501 §6.3.11)
    first, second = messages(mail, "Sent")
    assert first.flags == {"\\Seen", "$Forwarded"} and first.internal_date == 1_700_000_000.0
    assert second.flags == set() and second.internal_date == mail.clock.seconds()
    reader, reader_out = mail.selected("Sent", read_only=True)
    mail.command(reader, reader_out, "a FETCH 1:2 (FLAGS INTERNALDATE)")
    assert reader_out.take() == (
        # EXAMINE shows what no session has selected yet as \Recent, and takes nothing
        b'* 1 FETCH (FLAGS (\\Recent \\Seen $Forwarded) INTERNALDATE "14-Nov-2023 22:13:20 +0000")'
        b"\r\n"
        b'* 2 FETCH (FLAGS (\\Recent) INTERNALDATE "15-Jan-2027 08:00:00 +0000")\r\n'
    )


def test_an_appended_message_is_indexed_and_served_by_part(mail: Mail) -> None:
    session, out = mail.session()
    append(session, out, "Drafts", REPORT, ("\\Draft",))
    [message] = messages(mail, "Drafts")
    kept = result_of(mail.store.mime_indexes(ALICE, "Drafts", [message.uid]))
    assert message.uid in kept  # indexed once, at APPEND, not at every FETCH
    reader, reader_out = mail.selected("Drafts")
    mail.command(reader, reader_out, "a FETCH 1 (BODY.PEEK[2] BODY.PEEK[1])")
    assert reader_out.take() == (b'* 1 FETCH (BODY[2] "JVBERi0xLjQK" BODY[1] "see attached")\r\n')


def test_append_to_a_missing_mailbox_is_trycreate_and_stores_nothing(mail: Mail) -> None:
    session, out = mail.session()
    before = count(mail)
    for name in ("Nowhere", "Nowhere/Deeper"):
        with pytest.raises(Refused) as refused:
            append(session, out, name, body(1))
        # RFC 3501 §6.3.11: TRYCREATE, so the client may CREATE it and try again
        assert (refused.value.status, refused.value.code, refused.value.text) == (
            "NO",
            "TRYCREATE",
            f"Mailbox does not exist: {name}",
        )
    assert count(mail) == before
    assert result_of(mail.store.get_mailbox(ALICE, "Nowhere")) is None
    assert ok("d", append(session, out, "INBOX", body(2))).startswith(b"d OK [APPENDUID ")


def test_append_to_an_invalid_name_stores_nothing(mail: Mail) -> None:
    session, out = mail.session()
    before = count(mail)
    with pytest.raises(InvalidMailboxName):
        append(session, out, "a//b", body(1))
    assert count(mail) == before


@pytest.mark.parametrize("flag", ["\\Recent", "\\recent"])
def test_append_with_recent_is_bad_and_stores_nothing(mail: Mail, flag: str) -> None:
    session, out = mail.session()
    before = count(mail)
    with pytest.raises(Refused) as refused:
        append(session, out, "Drafts", body(1), ("\\Seen", flag))
    assert refused.value.status == "BAD"  # RFC 3501 §2.3.2: the server sets \Recent
    assert count(mail) == before and uids(mail, "Drafts") == []


@pytest.mark.parametrize("flag", ["\\Bogus", "$with]bracket"])
def test_append_with_an_invalid_flag_is_no_and_stores_nothing(mail: Mail, flag: str) -> None:
    session, out = mail.session()
    before = count(mail)
    with pytest.raises(InvalidFlag) as refused:
        append(session, out, "Drafts", body(1), ("\\Seen", flag))
    assert refused.value.imap_code == "CANNOT"
    assert count(mail) == before and uids(mail, "Drafts") == []


def test_an_aborted_append_leaves_nothing(mail: Mail) -> None:
    session, out = mail.session()
    before = count(mail)
    session.append_begin("Drafts", (), None)
    result_of(session.append_data(body(1)[:20]) or succeed(None))
    session.append_abort()
    assert count(mail) == before and uids(mail, "Drafts") == []
    # nothing in progress any more
    with pytest.raises(Refused) as refused:
        run(session.append_end(out))
    assert (refused.value.status, refused.value.text) == ("NO", "No APPEND in progress")
    assert session.append_data(b"late") is None
    # and the next APPEND is whole
    append(session, out, "Drafts", body(2))
    [message] = messages(mail, "Drafts")
    assert result_of(mail.store.read_body(message.message_id)) == body(2)


def test_a_connection_lost_during_an_append_leaves_nothing(mail: Mail) -> None:
    session, _ = mail.session()
    before = count(mail)
    session.append_begin("INBOX", (), None)
    result_of(session.append_data(body(1)) or succeed(None))
    session.ended()
    assert count(mail) == before and uids(mail) == []


class _FailingWriter:
    """A message writer whose writes fail (disk full), recording that it was aborted."""

    def __init__(self) -> None:
        self.aborted = False

    def write(self, data: bytes) -> Deferred[None]:
        return fail(StorageError("disk full"))

    def commit(self, incoming: Any) -> Deferred[StoredMessage]:
        return fail(StorageError("not written"))

    def abort(self) -> Deferred[None]:
        self.aborted = True
        return succeed(None)


def test_a_write_failure_is_reported_at_the_end_and_the_writer_aborted(mail: Mail) -> None:
    session, out = mail.session()
    writers: list[_FailingWriter] = []

    def begin(message_id: str) -> _FailingWriter:
        writers.append(_FailingWriter())
        return writers[-1]

    real = mail.store.begin
    mail.store.begin = begin  # type: ignore[assignment,method-assign]
    session.append_begin("INBOX", (), None)
    first = session.append_data(b"Subject: x\r\n")
    assert first is not None and first.called  # the failure is kept, not raised here
    assert session.append_data(b"\r\nmore\r\n") is None  # nothing more is written
    with pytest.raises(StorageError):
        run(session.append_end(out))
    assert [w.aborted for w in writers] == [True]
    mail.store.begin = real  # type: ignore[method-assign]
    assert uids(mail) == []
    assert ok("d", append(session, out, "INBOX", body(1))).startswith(b"d OK [APPENDUID ")


# -- who hears of it ------------------------------------------------------------------------------


def test_the_appending_session_hears_exists_when_it_appends_to_its_own_mailbox(
    mail: Mail,
) -> None:
    for n in range(2):
        mail.deliver(body(n))
    settle(mail)
    session, out = mail.selected()
    done = append(session, out, "INBOX", body(3))
    # the first to see it: \Recent to this session (RFC 3501 §2.3.2)
    assert out.take() == b"* 3 EXISTS\r\n* 1 RECENT\r\n"
    assert ok("c", done) == b"c OK [APPENDUID %d 3] APPEND completed\r\n" % (
        status(mail).uidvalidity
    )
    mail.command(session, out, "d FETCH 3 (UID FLAGS)")
    assert out.take() == b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"


def test_a_session_selected_on_the_target_hears_exists(mail: Mail) -> None:
    mail.deliver(body(1))
    settle(mail)
    watcher, watcher_out, woken = watching(mail)
    session, out = mail.selected("Drafts")
    append(session, out, "INBOX", body(2), ("$Draft1",))
    assert out.take() == b""  # not this session's mailbox
    assert woken.count == 1  # an IDLE hears of it at once
    mail.command(watcher, watcher_out, "a NOOP")
    assert watcher_out.take() == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Draft1)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Draft1 \\*)]"
        b" Flags permitted\r\n"
        b"* 2 EXISTS\r\n* 1 RECENT\r\n"
    )
    assert status(mail).recent == 0  # claimed by the watcher


def test_append_needs_no_selected_mailbox_and_selects_none(mail: Mail) -> None:
    session, out = mail.session()
    append(session, out, "INBOX", body(1))
    assert session.view is None
    assert status(mail).recent == 1  # nobody has seen it yet
