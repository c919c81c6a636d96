"""
FETCH on the core mailbox session (issue 12), with plain calls on a memory store: sequence
numbers and UIDs (RFC 3501 §6.4.5, §6.4.8), CONDSTORE's MODSEQ and CHANGEDSINCE (RFC 7162
§3.1.4), body sections byte for byte, \\Seen set only where §6.4.5 says, large bodies streamed in
bounded pieces under the client's flow control, and another session's expunge (RFC 9051 §7.1).
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from strata_twisted.core.imap_fetch import STREAM_THRESHOLD
from strata_twisted.core.imap_session import Done, MailboxSession, Refused
from strata_twisted.core.imap_shared import STREAM_CHUNK
from strata_twisted.testing import result_of
from tests.core_imap import (
    ALICE,
    Mail,
    Recorder,
    body,
    filled,
    flags,
    messages,
    ok,
    parse,
    run,
    settle,
    status,
)


@pytest.fixture
def mail() -> Mail:
    """Three messages in INBOX (UIDs 1..3), none of them \\Recent to the test's sessions."""
    return filled(3)


def modseq_of(mail: Mail, uid: int, mailbox: str = "INBOX") -> int:
    return next(m.modseq for m in messages(mail, mailbox) if m.uid == uid)


REPORT = (
    b"From: Sender <sender@origin.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"see attached: caf\xc3\xa9\r\n"
    b"--XX\r\n"
    b'Content-Type: application/pdf; name="r.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX--\r\n"
)


# -- sequence numbers and UIDs --------------------------------------------------------------------


def test_fetch_by_sequence_number_and_by_uid(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [1], "add", ["\\Deleted"]))
    result_of(mail.store.expunge(ALICE, "INBOX"))
    session, out = mail.selected()  # sequence numbers 1, 2 are UIDs 2, 3
    done = mail.command(session, out, "a FETCH 2 (UID FLAGS)")
    assert out.take() == b"* 2 FETCH (UID 3 FLAGS ())\r\n"
    assert ok("a", done) == b"a OK FETCH completed\r\n"
    # RFC 3501 §6.4.8: UID FETCH answers with the UID even when not asked for it
    done = mail.command(session, out, "b UID FETCH 3 (FLAGS)")
    assert out.take() == b"* 2 FETCH (FLAGS () UID 3)\r\n"
    assert ok("b", done) == b"b OK UID FETCH completed\r\n"
    mail.command(session, out, "c FETCH 1:* (UID)")
    assert out.take() == b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n"
    mail.command(session, out, "d UID FETCH 1:* (UID)")  # UID 1 is gone, silently
    assert out.take() == b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n"
    mail.command(session, out, "e UID FETCH 3,2 (UID)")  # answered in mailbox order
    assert out.take() == b"* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n"


def test_uid_fetch_of_uids_that_do_not_exist_answers_nothing(mail: Mail) -> None:
    session, out = mail.selected()
    done = mail.command(session, out, "a UID FETCH 7:9 (FLAGS)")
    assert out.take() == b"" and done == Done("UID FETCH completed")
    # RFC 3501 §6.4.8 / §9: "n:*" takes * as the largest UID, so 7:* is 3:7 and names UID 3
    mail.command(session, out, "b UID FETCH 7:* (UID)")
    assert out.take() == b"* 3 FETCH (UID 3)\r\n"


@pytest.mark.parametrize("sequence_set", ["4", "2:4", "1,5", "4:*"])
def test_a_sequence_number_beyond_the_mailbox_is_bad(mail: Mail, sequence_set: str) -> None:
    # RFC 3501 §9: a sequence number above the number of messages is an error; "4:*" starts
    # above it too, as Dovecot counts it (imap-search-args.c, msgset_is_valid)
    session, out = mail.selected()
    with pytest.raises(Refused) as refused:
        mail.command(session, out, f"a FETCH {sequence_set} (FLAGS)")
    assert (refused.value.status, refused.value.text) == ("BAD", "Invalid message sequence number")
    assert out.take() == b""


def test_fetch_in_an_empty_mailbox(mail: Mail) -> None:
    # no sequence number exists, not even "*" (Dovecot: "Invalid messageset"); UIDs are fine
    session, out = mail.selected("Trash")
    with pytest.raises(Refused):
        mail.command(session, out, "a FETCH 1:* (FLAGS)")
    assert mail.command(session, out, "b UID FETCH 1:* (FLAGS)") == Done("UID FETCH completed")
    assert out.take() == b""


# -- FLAGS, UID, MODSEQ ---------------------------------------------------------------------------


def test_fetch_message_attributes(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Answered", "$Work"]))
    session, out = mail.selected()
    size = len(body(2))
    mail.command(session, out, "a FETCH 2 (FLAGS UID RFC822.SIZE INTERNALDATE)")
    assert out.take() == (
        b"* 2 FETCH (FLAGS (\\Answered $Work) UID 2 RFC822.SIZE %d"
        b' INTERNALDATE " 9-Sep-2001 01:46:40 +0000")\r\n' % size
    )


def test_condstore_adds_uid_and_modseq_is_the_messages(mail: Mail) -> None:
    result_of(mail.store.store_flags(ALICE, "INBOX", [2], "add", ["\\Seen"]))
    two = modseq_of(mail, 2)
    assert two > modseq_of(mail, 1)
    session, out = mail.selected(condstore=True)
    # RFC 7162 §3.1: once CONDSTORE is on, every FETCH carries the UID
    mail.command(session, out, "a FETCH 2 (FLAGS)")
    assert out.take() == b"* 2 FETCH (FLAGS (\\Seen) UID 2)\r\n"
    mail.command(session, out, "b FETCH 1:2 (MODSEQ)")
    assert out.take() == (
        b"* 1 FETCH (MODSEQ (%d) UID 1)\r\n* 2 FETCH (MODSEQ (%d) UID 2)\r\n"
        % (modseq_of(mail, 1), two)
    )
    plain, plain_out = mail.selected()
    mail.command(plain, plain_out, "c FETCH 2 (FLAGS)")
    assert plain_out.take() == b"* 2 FETCH (FLAGS (\\Seen))\r\n"


def test_changedsince_answers_only_what_changed_with_its_modseq(mail: Mail) -> None:
    session, out = mail.selected()
    since = status(mail).highest_modseq
    mail.command(session, out, "a STORE 1 +FLAGS.SILENT (\\Seen)")
    mail.command(session, out, "b STORE 3 +FLAGS.SILENT (\\Flagged)")
    one, three = modseq_of(mail, 1), modseq_of(mail, 3)
    assert since < one < three
    # RFC 7162 §3.1.4.1: only messages whose modseq is greater, each with its MODSEQ
    done = mail.command(session, out, f"c FETCH 1:* (FLAGS) (CHANGEDSINCE {since})")
    assert out.take() == (
        b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (%d))\r\n* 3 FETCH (FLAGS (\\Flagged) MODSEQ (%d))\r\n"
        % (one, three)
    )
    assert done.code is None
    mail.command(session, out, f"d UID FETCH 1:2 (FLAGS) (CHANGEDSINCE {since})")
    assert out.take() == b"* 1 FETCH (FLAGS (\\Seen) UID 1 MODSEQ (%d))\r\n" % one
    done = mail.command(session, out, f"e FETCH 1:* (FLAGS) (CHANGEDSINCE {three})")
    assert out.take() == b"" and done.code is None


def test_changedsince_does_not_call_an_unchanged_message_expunged(mail: Mail) -> None:
    session, out = mail.selected()
    since = status(mail).highest_modseq
    mail.command(session, out, "a STORE 2 +FLAGS.SILENT (\\Seen)")
    done = mail.command(session, out, f"b FETCH 1:3 (FLAGS) (CHANGEDSINCE {since})")
    assert done.code is None  # 1 and 3 are only unchanged: no EXPUNGEISSUED
    assert out.take().startswith(b"* 2 FETCH (FLAGS (\\Seen) MODSEQ (")


def test_a_keyword_set_by_another_session_is_announced_before_a_fetch_shows_it(
    mail: Mail,
) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 3 +FLAGS.SILENT ($Phone)")
    mail.command(session, out, "b FETCH 3 (FLAGS)")
    # RFC 3501 §7.2.6: FLAGS names every keyword before a FETCH shows it
    assert out.take() == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Phone)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Phone \\*)]"
        b" Flags permitted\r\n"
        b"* 3 FETCH (FLAGS ($Phone))\r\n"
    )
    mail.command(session, out, "c FETCH 3 (FLAGS)")
    assert out.take() == b"* 3 FETCH (FLAGS ($Phone))\r\n"


# -- bodies ---------------------------------------------------------------------------------------


def test_body_is_byte_identical_to_what_was_stored() -> None:
    mail = Mail()
    # 8-bit text, a bare LF, a long line, trailing whitespace: nothing is normalised
    data = (
        b"Subject: =?UTF-8?Q?caf=C3=A9?=\r\nX-Raw: \xe2\x82\xac  \r\n\r\n"
        b"line one\nline two\r\n" + b"z" * 5000 + b"\r\n\t \r\nno final newline"
    )
    mail.deliver(data)
    session, out = mail.selected()
    mail.command(session, out, "a FETCH 1 (BODY.PEEK[])")
    assert out.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b")\r\n"
    mail.command(session, out, "b FETCH 1 (RFC822.SIZE BODY.PEEK[TEXT])")
    text = data[data.index(b"\r\n\r\n") + 4 :]
    assert out.take() == (
        b"* 1 FETCH (RFC822.SIZE %d BODY[TEXT] {%d}\r\n" % (len(data), len(text)) + text + b")\r\n"
    )


def test_body_sections() -> None:
    mail = Mail()
    mail.deliver(REPORT)
    settle(mail)
    session, out = mail.selected()
    header = REPORT[: REPORT.index(b"\r\n\r\n") + 4]
    part1 = b"see attached: caf\xc3\xa9"
    mime1 = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    mail.command(session, out, "a FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[1] BODY.PEEK[1.MIME])")
    assert out.take() == (
        b"* 1 FETCH (BODY[HEADER] {%d}\r\n" % len(header)
        + header
        + b" BODY[1] {%d}\r\n" % len(part1)
        + part1
        + b" BODY[1.MIME] {%d}\r\n" % len(mime1)
        + mime1
        + b")\r\n"
    )
    mail.command(session, out, "b FETCH 1 (BODY.PEEK[2] BODY.PEEK[HEADER.FIELDS (SUBJECT TO)])")
    fields = b"To: alice@example.test\r\nSubject: report\r\n\r\n"  # in stored order
    assert out.take() == (
        b'* 1 FETCH (BODY[2] "JVBERi0xLjQK" BODY[HEADER.FIELDS (SUBJECT TO)] {%d}\r\n' % len(fields)
        + fields
        + b")\r\n"
    )
    # RFC 3501 §6.4.5 partial fetch: <origin.octets>, answered with the origin only
    mail.command(session, out, "c FETCH 1 (BODY.PEEK[]<6.6> BODY.PEEK[1]<100.4>)")
    assert out.take() == b'* 1 FETCH (BODY[]<6> "Sender" BODY[1]<100> "")\r\n'
    mail.command(session, out, "d FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (FROM TO SUBJECT)])")
    rest = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    assert out.take() == (
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (FROM TO SUBJECT)] {%d}\r\n" % len(rest)
        + rest
        + b")\r\n"
    )
    # RFC822.HEADER is BODY.PEEK[HEADER]: it sets no \Seen
    mail.command(session, out, "e FETCH 1 (RFC822.HEADER)")
    assert out.take() == b"* 1 FETCH (RFC822.HEADER {%d}\r\n" % len(header) + header + b")\r\n"
    assert flags(mail) == {1: set()}


def test_body_sets_seen_and_says_so(mail: Mail) -> None:
    session, out = mail.selected()
    other, other_out = mail.selected()
    data = body(1)
    done = mail.command(session, out, "a FETCH 1 (BODY[])")
    # RFC 3501 §6.4.5: BODY[] sets \Seen; the changed flags are returned as if FLAGS was asked
    assert out.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b" FLAGS (\\Seen))\r\n"
    assert done.code is None
    assert flags(mail)[1] == {"\\Seen"}
    mail.command(session, out, "b FETCH 1 (BODY[])")  # already seen: no FLAGS the second time
    assert out.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b")\r\n"
    mail.command(other, other_out, "c NOOP")  # the other session hears of it
    assert other_out.take() == b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"


def test_body_with_flags_asked_shows_seen_once(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a FETCH 2 (FLAGS BODY[TEXT])")
    assert out.take() == (
        b"* 2 FETCH (FLAGS (\\Seen) BODY[TEXT] {19}\r\nbody of message 2\r\n)\r\n"
    )


def test_rfc822_and_rfc822_text_set_seen_too(mail: Mail) -> None:
    session, out = mail.selected()
    mail.command(session, out, "a FETCH 1 (RFC822.TEXT)")
    assert out.take() == b"* 1 FETCH (RFC822.TEXT {19}\r\nbody of message 1\r\n FLAGS (\\Seen))\r\n"
    mail.command(session, out, "b FETCH 2 (RFC822)")
    data = body(2)
    assert out.take() == b"* 2 FETCH (RFC822 {%d}\r\n" % len(data) + data + b" FLAGS (\\Seen))\r\n"
    assert flags(mail) == {1: {"\\Seen"}, 2: {"\\Seen"}, 3: set()}


def test_peek_and_header_fetches_do_not_set_seen(mail: Mail) -> None:
    session, out = mail.selected()
    before = status(mail).highest_modseq
    for line in (
        "a FETCH 1:3 (BODY.PEEK[])",
        "b FETCH 1:3 (BODY.PEEK[TEXT])",
        "c FETCH 1:3 (ENVELOPE BODYSTRUCTURE)",
        "d FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    ):
        mail.command(session, out, line)
        assert b"FLAGS" not in out.take(), line
    assert flags(mail) == {1: set(), 2: set(), 3: set()}
    assert status(mail).highest_modseq == before


def test_examine_never_sets_seen(mail: Mail) -> None:
    session, out = mail.selected(read_only=True)
    data = body(1)
    mail.command(session, out, "a FETCH 1 (BODY[] FLAGS)")
    # RFC 3501 §6.3.2: EXAMINE changes nothing, not even \Seen
    assert out.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b" FLAGS ())\r\n"
    assert flags(mail) == {1: set(), 2: set(), 3: set()}


def test_condstore_fetch_that_sets_seen_reports_uid_and_modseq(mail: Mail) -> None:
    session, out = mail.selected(condstore=True)
    mail.command(session, out, "a FETCH 3 (BODY[TEXT])")
    # RFC 7162 §3.1: a FETCH that implicitly set \Seen reports UID and MODSEQ
    assert out.take() == (
        b"* 3 FETCH (BODY[TEXT] {19}\r\nbody of message 3\r\n UID 3 FLAGS (\\Seen) MODSEQ (%d))"
        b"\r\n" % modseq_of(mail, 3)
    )


# -- large bodies ---------------------------------------------------------------------------------


class Client(Recorder):
    """
    A client that takes a streamed literal only when the test lets it: every L{ready} waits
    until L{drain}.  ``pieces``: the size of each write made while streaming.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Deferred[None]] = []
        self.pieces: list[int] = []
        self.streaming = False
        self.ended = 0

    def begin_stream(self) -> None:
        super().begin_stream()
        self.streaming = True

    def end_stream(self) -> None:
        self.streaming = False
        self.ended += 1

    def write(self, data: bytes) -> None:
        if self.streaming:
            self.pieces.append(len(data))
        super().write(data)

    def ready(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        return d

    def drain(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def large_body() -> bytes:
    head = b"Subject: big\r\nMessage-ID: <big@origin.test>\r\n\r\n"
    return head + b"".join(b"%07d " % n + b"y" * 1014 + b"\r\n" for n in range(700))


def test_a_large_body_is_streamed_in_bounded_pieces_as_the_client_takes_them() -> None:
    mail = Mail()
    data = large_body()
    assert len(data) > 2 * STREAM_CHUNK and len(data) > STREAM_THRESHOLD
    mail.deliver(data)
    session, _ = mail.selected()
    client = Client()
    reads: list[int] = []
    real = mail.store.read_body_range

    def spy(message_id: str, offset: int, length: int) -> Deferred[bytes]:
        reads.append(length)
        return real(message_id, offset, length)

    mail.store.read_body_range = spy  # type: ignore[method-assign]
    answer = Deferred.fromCoroutine(session.command(parse("a FETCH 1 (BODY.PEEK[])"), client))
    # Nothing of the body is read before the client can take it.
    assert not answer.called and client.streams == 1 and reads == [] and client.pieces == []
    taken = 0
    while client.waiting:
        client.drain()
        assert len(client.pieces) == taken + 1  # one piece per go-ahead, never more
        taken += 1
    assert answer.called and client.ended == 1
    assert result_of(answer) == Done("FETCH completed")
    expected_pieces = -(-len(data) // STREAM_CHUNK)
    assert client.pieces == [STREAM_CHUNK] * (expected_pieces - 1) + [len(data) % STREAM_CHUNK]
    assert reads == client.pieces and max(reads) <= STREAM_CHUNK
    assert client.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b")\r\n"
    assert mail.shared.pins.pinned == 0


def test_a_large_section_is_streamed_and_a_small_one_is_not() -> None:
    mail = Mail()
    data = large_body()
    mail.deliver(data)
    session, out = mail.selected()
    text = data[data.index(b"\r\n\r\n") + 4 :]
    mail.command(session, out, "a FETCH 1 (BODY.PEEK[TEXT] BODY.PEEK[HEADER])")
    assert out.streams == 1
    assert out.take() == (
        b"* 1 FETCH (BODY[TEXT] {%d}\r\n" % len(text)
        + text
        + b" BODY[HEADER] {47}\r\nSubject: big\r\nMessage-ID: <big@origin.test>\r\n\r\n)\r\n"
    )
    mail.command(session, out, "b FETCH 1 (BODY.PEEK[]<0.1000>)")
    assert out.streams == 1  # a small partial is read at once


def test_a_client_gone_during_a_stream_stops_it(mail: Mail) -> None:
    data = large_body()
    mail.deliver(data)
    session, _ = mail.selected()
    client = Client()
    answer = Deferred.fromCoroutine(session.command(parse("a FETCH 4 (BODY.PEEK[])"), client))
    client.drain()
    client.gone = True
    client.drain()
    assert answer.called and client.ended == 1
    assert len(client.pieces) == 1
    assert mail.shared.pins.pinned == 0


# -- another session's expunge --------------------------------------------------------------------


def test_uid_fetch_leaves_out_the_expunged_then_reports_the_expunge(mail: Mail) -> None:
    reader, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a UID EXPUNGE 2")  # not \Deleted: nothing happens
    mail.command(other, other_out, "b STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "c UID EXPUNGE 2")
    done = mail.command(reader, out, "d UID FETCH 1:3 (UID FLAGS)")
    # RFC 9051 §7.1: answered what it could, completed with EXPUNGEISSUED; a UID command may
    # carry the EXPUNGE itself (RFC 3501 §7.4.1), after the FETCH responses.
    assert out.take() == (
        b"* 1 FETCH (UID 1 FLAGS ())\r\n* 3 FETCH (UID 3 FLAGS ())\r\n* 2 EXPUNGE\r\n"
    )
    assert ok("d", done) == b"d OK [EXPUNGEISSUED] Some messages were also expunged\r\n"
    mail.command(reader, out, "e FETCH 1:2 (UID)")
    assert out.take() == b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\n"


def test_a_fetch_of_only_expunged_messages_completes(mail: Mail) -> None:
    reader, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(reader, out, "c FETCH 1:3 (BODY.PEEK[] FLAGS)")
    assert out.take() == b""
    assert ok("c", done) == b"c OK [EXPUNGEISSUED] Some messages were also expunged\r\n"
    mail.command(reader, out, "d NOOP")
    assert out.take() == b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"


def test_a_body_fetch_does_not_set_seen_on_what_another_session_expunged(mail: Mail) -> None:
    reader, out = mail.selected()
    other, other_out = mail.selected()
    mail.command(other, other_out, "a STORE 2 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "b EXPUNGE")
    done = mail.command(reader, out, "c FETCH 1:3 (BODY[TEXT])")
    assert done.code is not None and done.code.name == "EXPUNGEISSUED"
    assert out.take() == (
        b"* 1 FETCH (BODY[TEXT] {19}\r\nbody of message 1\r\n FLAGS (\\Seen))\r\n"
        b"* 3 FETCH (BODY[TEXT] {19}\r\nbody of message 3\r\n FLAGS (\\Seen))\r\n"
    )
    assert flags(mail) == {1: {"\\Seen"}, 3: {"\\Seen"}}


def test_an_expunge_while_a_large_body_streams_does_not_cut_it_short() -> None:
    mail = Mail()
    result_of(mail.store.create_mailbox(ALICE, "Archive"))
    data = large_body()
    mail.deliver(data, "Archive")
    [message] = messages(mail, "Archive")
    reader, _ = mail.selected("Archive")
    client = Client()
    answer = Deferred.fromCoroutine(reader.command(parse("a FETCH 1 (BODY.PEEK[])"), client))
    client.drain()  # the literal has begun
    other = MailboxSession(ALICE, mail.shared)
    other_out = Recorder()
    run(other.select("Archive", read_only=False))
    mail.command(other, other_out, "b STORE 1 +FLAGS.SILENT (\\Deleted)")
    mail.command(other, other_out, "c EXPUNGE")
    assert other_out.take() == b"* 1 EXPUNGE\r\n"
    # The body is pinned while it streams: still there, and the literal completes.
    assert result_of(mail.store.get_message(message.message_id)) is not None
    while client.waiting:
        client.drain()
    assert result_of(answer) == Done("FETCH completed")
    assert client.take() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(data) + data + b")\r\n"
    # Then nobody needs it: deleted.
    assert result_of(mail.store.get_message(message.message_id)) is None
