"""
Tests for building FETCH responses (L{strata_twisted.core.imap_fetch}).

Messages are written by hand, indexed with L{index_message} as delivery does, and every answer is
checked as the exact FETCH line the encoder writes.  Expected values follow RFC 3501 §6.4.5 and
§7.4.2; a missing section is an empty string as in Dovecot (imap-msgpart.c).
"""

from __future__ import annotations

import datetime
import io

import pytest

from strata_twisted.core.imap_fetch import (
    STREAM_THRESHOLD,
    ByteRange,
    FetchPlan,
    FetchResult,
    body_ranges,
    build_fetch,
    filter_header,
    format_internal_date,
    plan_fetch,
)
from strata_twisted.model import MailMessage
from strata_twisted.proto.imap_parser import Fetch, FetchAttribute, IMAPCommandParser
from strata_twisted.proto.imap_response import Atom, Streamed, fetch_response, fetch_response_parts
from strata_twisted.proto.mime import MessageIndex, index_message

INNER = b"From: Inner <inner@example.org>\r\nSubject: inner\r\n\r\nInner body line\r\n"
ATTACHMENT = b"QUJD" * 10
HEADER = (
    b"Return-Path: <a@example.net>\r\n"
    b"fRoM: =?utf-8?q?x?= J\xc3\xb6rg <jorg@example.net>\r\n"
    b"To: user@example.com\r\n"
    b"SUBJECT: a folded\r\n"
    b"\tsubject line\r\n"
    b"X-Note: caf\xc3\xa9\r\n"
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\n"
    b"Message-ID: <m1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
)
TEXT = (
    b"preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello plain\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>Hi</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER + b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="a.bin"\r\n'
    b"\r\n" + ATTACHMENT + b"\r\n"
    b"--outer--\r\n"
)
MESSAGE = HEADER + TEXT

# 17-Jul-1996 02:44:25 -0700, RFC 3501's own example.
PDT = datetime.timezone(datetime.timedelta(hours=-7))
ARRIVED = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT).timestamp()


def mail(data: bytes, flags: frozenset[str] = frozenset(), uid: int = 42) -> MailMessage:
    return MailMessage(
        uid=uid,
        message_id="q1",
        flags=flags,
        internal_date=ARRIVED,
        size=len(data),
        modseq=7,
    )


def index(data: bytes) -> MessageIndex:
    return index_message(io.BytesIO(data), len(data))


class Store:
    """A reader over one stored message that records what it was asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset : offset + length]


def attributes(text: str) -> tuple[FetchAttribute, ...]:
    """The attributes of ``FETCH 1 <text>`` as the real parser gives them."""
    parser = IMAPCommandParser()
    parser.receive_data(b"a FETCH 1 " + text.encode("ascii") + b"\r\n")
    command = parser.next_event()
    assert isinstance(command, Fetch), command
    return command.attributes


def fetch(
    text: str,
    data: bytes = MESSAGE,
    flags: frozenset[str] = frozenset(),
    *,
    uid: bool = False,
    condstore: bool = False,
    tz: datetime.tzinfo = datetime.UTC,
) -> tuple[bytes, FetchResult, Store]:
    plan = plan_fetch(attributes(text), uid=uid, condstore=condstore)
    store = Store(data)
    result = build_fetch(
        plan, mail(data, flags), index(data) if plan.needs_index else None, store, tz=tz
    )
    return fetch_response(3, result.items), result, store


def line(text: str, data: bytes = MESSAGE, flags: frozenset[str] = frozenset()) -> bytes:
    return fetch(text, data, flags)[0]


# -- items from the MailMessage ------------------------------------------------------------------


def test_flags_uid_size_internaldate() -> None:
    encoded, result, store = fetch(
        "(FLAGS UID RFC822.SIZE INTERNALDATE)", flags=frozenset({"$Label", "\\Flagged"}), tz=PDT
    )
    assert encoded == (
        b"* 3 FETCH (FLAGS (\\Flagged $Label) UID 42 RFC822.SIZE %d "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700")\r\n' % len(MESSAGE)
    )
    assert not result.seen_added and store.reads == []


def test_internaldate_defaults_to_utc_and_pads_the_day() -> None:
    assert format_internal_date(ARRIVED) == "17-Jul-1996 09:44:25 +0000"
    early = datetime.datetime(2024, 3, 5, 1, 2, 3, tzinfo=datetime.UTC).timestamp()
    india = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    assert format_internal_date(early, india) == " 5-Mar-2024 06:32:03 +0530"


def test_fetch_flags_plans_no_index_and_no_body_read() -> None:
    plan = plan_fetch(attributes("(FLAGS UID MODSEQ RFC822.SIZE INTERNALDATE)"))
    assert plan == FetchPlan(plan.attributes, needs_index=False, needs_body=False, sets_seen=False)
    assert body_ranges(plan, mail(MESSAGE), None) == ()

    # Built without an index and with a reader that must not be called.
    def no_read(offset: int, length: int) -> bytes:
        raise AssertionError("no body read expected")

    result = build_fetch(plan, mail(MESSAGE), None, no_read)
    assert fetch_response(1, result.items) == (
        b"* 1 FETCH (FLAGS () UID 42 MODSEQ (7) RFC822.SIZE %d "
        b'INTERNALDATE "17-Jul-1996 09:44:25 +0000")\r\n' % len(MESSAGE)
    )


def test_plan_of_index_items_and_of_the_whole_message() -> None:
    plan = plan_fetch(attributes("(ENVELOPE BODYSTRUCTURE BODY)"))
    assert (plan.needs_index, plan.needs_body, plan.sets_seen) == (True, False, False)
    # BODY[] and RFC822 are located by the size alone: no index.
    plan = plan_fetch(attributes("(BODY.PEEK[] RFC822)"))
    assert (plan.needs_index, plan.needs_body, plan.sets_seen) == (False, True, True)
    plan = plan_fetch(attributes("BODY.PEEK[1]"))
    assert (plan.needs_index, plan.needs_body, plan.sets_seen) == (True, True, False)


def test_uid_fetch_always_answers_uid_once() -> None:
    plan = plan_fetch(attributes("FLAGS"), uid=True)
    assert plan.attributes == (FetchAttribute("FLAGS"), FetchAttribute("UID"))
    plan = plan_fetch(attributes("(UID FLAGS UID)"), uid=True)
    assert plan.attributes == (FetchAttribute("UID"), FetchAttribute("FLAGS"))


def test_build_without_a_needed_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="index"):
        build_fetch(plan_fetch(attributes("ENVELOPE")), mail(MESSAGE), None, Store(MESSAGE))


# -- items from the index ------------------------------------------------------------------------


def test_envelope_serves_8bit_and_folded_headers() -> None:
    from_ = b'(({19}\r\n=?utf-8?q?x?= J\xc3\xb6rg NIL "jorg" "example.net"))'
    assert line("ENVELOPE") == (
        b'* 3 FETCH (ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700" {21}\r\na folded\tsubject line '
        + from_
        + b" "
        + from_
        + b" "
        + from_
        + b' ((NIL NIL "user" "example.com")) NIL NIL NIL "<m1@example.net>"))\r\n'
    )


def test_bodystructure_and_body() -> None:
    # RFC 3501 §9: body-type-mpart = 1*body SP media-subtype: a multipart's parts follow each
    # other with no space (we wrote one; the lead's server test found it, Dovecot writes none).
    inner_env = (
        b'(NIL "inner" (("Inner" NIL "inner" "example.org")) (("Inner" NIL "inner" "example.org"))'
        b' (("Inner" NIL "inner" "example.org")) NIL NIL NIL NIL NIL)'
    )
    assert line("BODYSTRUCTURE") == (
        b"* 3 FETCH (BODYSTRUCTURE ("
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 11 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 66 '
        + inner_env
        + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 15 0 NIL NIL NIL NIL) 3'
        b" NIL NIL NIL NIL)"
        b'("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 40 NIL'
        b' ("attachment" ("filename" "a.bin")) NIL NIL)'
        b' "mixed" ("boundary" "outer") NIL NIL NIL))\r\n'
    )
    assert line("BODY") == (
        b"* 3 FETCH (BODY ("
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 11 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0) "alternative")'
        b'("message" "rfc822" NIL NIL NIL "7bit" 66 '
        + inner_env
        + b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 15 0) 3)'
        b'("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 40)'
        b' "mixed"))\r\n'
    )


def test_multipart_inside_an_encapsulated_message_has_no_space_between_parts() -> None:
    data = (
        b"Content-Type: message/rfc822\r\n\r\n"
        b"Subject: in\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n"
    )
    reply = line("BODY", data)
    assert b' "7bit" 3 0)("text" "plain"' in reply, reply


def test_envelope_and_structure_are_encoded_once_per_index() -> None:
    # bench.imap: encoding ENVELOPE again on every FETCH 1:* was its largest cost.
    from strata_twisted.core import imap_fetch

    result = index(MESSAGE)
    plan = plan_fetch(attributes("(ENVELOPE BODYSTRUCTURE)"))
    first = build_fetch(plan, mail(MESSAGE), result, Store(MESSAGE)).items
    again = build_fetch(plan, mail(MESSAGE), result, Store(MESSAGE)).items
    assert [value for _, value in first] == [value for _, value in again]
    assert all(a is b for (_, a), (_, b) in zip(first, again, strict=True))
    other = build_fetch(plan, mail(MESSAGE), index(MESSAGE), Store(MESSAGE)).items
    assert other == first  # another index object of the same message: encoded again, equal
    assert len(imap_fetch._encoded) <= imap_fetch.ENCODED_CACHE_SIZE


# -- body sections -------------------------------------------------------------------------------


def test_body_whole_message_sets_seen() -> None:
    encoded, result, store = fetch("(FLAGS BODY[])")
    assert encoded == (
        b"* 3 FETCH (FLAGS (\\Seen) BODY[] {%d}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n"
    )
    assert result.seen_added
    assert store.reads == [(0, len(MESSAGE))]


def test_header_fields_filters_case_insensitively_with_folds_and_8bit() -> None:
    expected = (
        b"fRoM: =?utf-8?q?x?= J\xc3\xb6rg <jorg@example.net>\r\n"
        b"SUBJECT: a folded\r\n\tsubject line\r\n\r\n"
    )
    encoded, result, _ = fetch("BODY.PEEK[HEADER.FIELDS (From sUbject)]")
    assert encoded == (
        b"* 3 FETCH (BODY[HEADER.FIELDS (FROM SUBJECT)] {%d}\r\n" % len(expected)
        + expected
        + b")\r\n"
    )
    assert not result.seen_added


def test_header_fields_not() -> None:
    kept = (
        b"Return-Path: <a@example.net>\r\n"
        b"To: user@example.com\r\n"
        b"X-Note: caf\xc3\xa9\r\n"
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700\r\n"
        b"Message-ID: <m1@example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n'
        b"\r\n"
    )
    assert line("BODY.PEEK[HEADER.FIELDS.NOT (FROM SUBJECT)]") == (
        b"* 3 FETCH (BODY[HEADER.FIELDS.NOT (FROM SUBJECT)] {%d}\r\n" % len(kept) + kept + b")\r\n"
    )


def test_header_fields_of_an_encapsulated_message_and_no_match() -> None:
    assert line("BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]") == (
        b"* 3 FETCH (BODY[2.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n)\r\n"
    )
    # Nothing matches: only the blank line that ends a header.
    assert line("BODY.PEEK[HEADER.FIELDS (X-ABSENT)]") == (
        b"* 3 FETCH (BODY[HEADER.FIELDS (X-ABSENT)] {2}\r\n\r\n)\r\n"
    )


def test_header_fields_partial_applies_after_filtering() -> None:
    assert line("BODY.PEEK[HEADER.FIELDS (TO)]<4.7>") == (
        b'* 3 FETCH (BODY[HEADER.FIELDS (TO)]<4> "user@ex")\r\n'
    )


def test_filter_header_edge_cases() -> None:
    block = b"A: 1\r\n b\r\nNoColonLine\r\na : 2\r\nB: 3"
    # A block cut short: its last line is completed, and it gets no blank line (it had none).
    assert filter_header(block, [b"a"]) == b"A: 1\r\n b\r\na : 2\r\n"
    assert filter_header(block, ["A"], exclude=True) == b"NoColonLine\r\nB: 3\r\n"
    assert filter_header(b"A: 1\nB: 2\n\n", [b"B"]) == b"B: 2\n\n"
    assert filter_header(b"A: 1\r\n\r\n", [b"Z"]) == b"\r\n"


def test_header_fields_of_a_message_without_blank_line_add_none() -> None:
    # Found by the Dovecot differential test (enmime-not-a-message.eml, a message that is all
    # header): RFC 3501 §6.4.5, the blank line is in every header fetch "except in the case of a
    # message which has no body and no blank line".  We added CRLF anyway.
    data = b"Subject: s\r\nX-A: 1\r\n"
    assert line("BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]", data) == (
        b"* 3 FETCH (BODY[HEADER.FIELDS.NOT (SUBJECT)] {8}\r\nX-A: 1\r\n)\r\n"
    )
    assert line("BODY.PEEK[HEADER.FIELDS (X-NONE)]", data) == (
        b'* 3 FETCH (BODY[HEADER.FIELDS (X-NONE)] "")\r\n'
    )
    assert line("BODY.PEEK[HEADER]", data) == b"* 3 FETCH (BODY[HEADER] {20}\r\n" + data + b")\r\n"


def test_nul_octets_never_reach_a_literal() -> None:
    # Found by the Dovecot differential test (spamscope-nul-bytes.eml): RFC 3501 §9 forbids NUL
    # in a literal (CHAR8 = %x01-ff).  Like Dovecot, each NUL is sent as 0x80; sizes stay.
    data = b"Subject: a\x00b\r\n\r\nx\x00y\r\n"
    reply = line("(BODY.PEEK[] BODY.PEEK[TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)",
                 data)  # fmt: skip
    assert b"\x00" not in reply
    assert b"BODY[TEXT] {5}\r\nx\x80y\r\n" in reply
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: a\x80b\r\n\r\n" in reply
    assert b"RFC822.SIZE 21" in reply


def test_partial_fetch_at_and_beyond_the_end() -> None:
    # Part 1.2 is "<p>Hi</p>" (9 octets).
    assert line("BODY.PEEK[1.2]<0.10>") == b'* 3 FETCH (BODY[1.2]<0> "<p>Hi</p>")\r\n'
    assert line("BODY.PEEK[1.2]<3.4>") == b'* 3 FETCH (BODY[1.2]<3> "Hi</")\r\n'
    assert line("BODY.PEEK[1.2]<9.10>") == b'* 3 FETCH (BODY[1.2]<9> "")\r\n'
    encoded, _, store = fetch("BODY.PEEK[1.2]<100.10>")
    assert encoded == b'* 3 FETCH (BODY[1.2]<100> "")\r\n'
    assert store.reads == []


def test_mime_header_of_a_part() -> None:
    assert line("BODY.PEEK[2.MIME]") == (
        b"* 3 FETCH (BODY[2.MIME] {32}\r\nContent-Type: message/rfc822\r\n\r\n)\r\n"
    )


def test_text_of_an_encapsulated_message() -> None:
    assert line("BODY.PEEK[2.TEXT]") == b'* 3 FETCH (BODY[2.TEXT] "Inner body line")\r\n'


def test_missing_sections_are_empty_strings() -> None:
    encoded, _, store = fetch("(BODY.PEEK[9] BODY.PEEK[1.1.TEXT] BODY.PEEK[4.MIME])")
    assert encoded == b'* 3 FETCH (BODY[9] "" BODY[1.1.TEXT] "" BODY[4.MIME] "")\r\n'
    assert store.reads == []


def test_rfc822_header_and_text() -> None:
    encoded, result, _ = fetch("RFC822.HEADER")
    assert encoded == b"* 3 FETCH (RFC822.HEADER {%d}\r\n" % len(HEADER) + HEADER + b")\r\n"
    assert not result.seen_added
    encoded, result, _ = fetch("RFC822.TEXT")
    assert encoded == (
        b"* 3 FETCH (RFC822.TEXT {%d}\r\n" % len(TEXT) + TEXT + b" FLAGS (\\Seen))\r\n"
    )
    assert result.seen_added


def test_rfc822_is_the_whole_message() -> None:
    encoded, result, _ = fetch("RFC822", flags=frozenset({"\\Seen"}))
    assert encoded == b"* 3 FETCH (RFC822 {%d}\r\n" % len(MESSAGE) + MESSAGE + b")\r\n"
    assert not result.seen_added  # already seen: nothing to store, no FLAGS added


@pytest.mark.parametrize(
    ("items", "sets_seen"),
    [
        ("BODY[]", True),
        ("BODY[1.1]", True),
        ("BODY[HEADER]", True),
        ("BODY[2.MIME]<0.5>", True),
        ("RFC822", True),
        ("RFC822.TEXT", True),
        ("BODY.PEEK[]", False),
        ("BODY.PEEK[TEXT]", False),
        ("RFC822.HEADER", False),
        ("RFC822.SIZE", False),
        ("(ENVELOPE BODYSTRUCTURE BODY FLAGS)", False),
        ("(BODY.PEEK[1] BODY[2])", True),
    ],
)
def test_seen_is_set_only_by_non_peek_body_fetches(items: str, sets_seen: bool) -> None:
    assert plan_fetch(attributes(items)).sets_seen is sets_seen
    _, result, _ = fetch(items)
    assert result.seen_added is sets_seen
    assert (("FLAGS", (Atom("\\Seen"),)) in result.items) is sets_seen


def test_condstore_reports_modseq_with_the_implicit_seen() -> None:
    encoded, result, _ = fetch("BODY[1.2]", condstore=True)
    assert encoded == b'* 3 FETCH (BODY[1.2] "<p>Hi</p>" FLAGS (\\Seen) MODSEQ (7))\r\n'
    assert result.seen_added
    # No flag change: no MODSEQ unless asked.
    assert fetch("BODY.PEEK[1.2]", condstore=True)[0] == (b'* 3 FETCH (BODY[1.2] "<p>Hi</p>")\r\n')


def test_flags_changed_by_the_caller_are_reported() -> None:
    plan = plan_fetch(attributes("UID"), condstore=True)
    message = mail(MESSAGE, frozenset({"\\Seen"}))
    result = build_fetch(plan, message, None, Store(MESSAGE), flags_changed=True)
    assert fetch_response(3, result.items) == (b"* 3 FETCH (UID 42 FLAGS (\\Seen) MODSEQ (7))\r\n")
    assert not result.seen_added


# -- large bodies --------------------------------------------------------------------------------


def big_message() -> tuple[bytes, bytes]:
    attachment = (b"A" * 76 + b"\r\n") * (2 * 1024 * 1024 // 78 + 1)
    data = (
        b"From: a@example.net\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n'
        b"\r\n"
        b"--b\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"see attached\r\n"
        b"--b\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + attachment + b"--b--\r\n"
    )
    return data, attachment[:-2]  # the CRLF before the boundary belongs to it


def test_a_large_attachment_is_streamed_not_read() -> None:
    data, attachment = big_message()
    assert len(attachment) > 2 * 1024 * 1024
    offset = data.index(attachment)
    plan = plan_fetch(attributes("(UID BODY[2] BODY.PEEK[1])"))
    idx = index(data)
    assert body_ranges(plan, mail(data), idx) == (
        ByteRange(offset, len(attachment), streamed=True),
        ByteRange(data.index(b"see attached"), 12),
    )
    store = Store(data)
    result = build_fetch(plan, mail(data), idx, store)
    source = ByteRange(offset, len(attachment), streamed=True)
    streamed = Streamed(len(attachment), source)
    assert fetch_response_parts(5, result.items) == [
        b"* 5 FETCH (UID 42 BODY[2] {%d}\r\n" % len(attachment),
        streamed,
        b' BODY[1] "see attached" FLAGS (\\Seen))\r\n',
    ]
    assert store.reads == [(data.index(b"see attached"), 12)]
    # The server fills the placeholder from the store: the bytes are the attachment.
    assert data[source.offset : source.offset + source.length] == attachment


def test_a_partial_of_a_large_part_is_read_when_small() -> None:
    data, attachment = big_message()
    offset = data.index(attachment)
    encoded, _, store = fetch("BODY.PEEK[2]<1000.8>", data)
    assert encoded == b'* 3 FETCH (BODY[2]<1000> "%s")\r\n' % attachment[1000:1008]
    assert store.reads == [(offset + 1000, 8)]
    # The whole message is over the threshold too, and needs no index.
    plan = plan_fetch(attributes("BODY.PEEK[]"))
    assert not plan.needs_index
    result = build_fetch(plan, mail(data), None, Store(data))
    assert result.items == [("BODY[]", Streamed(len(data), ByteRange(0, len(data), True)))]
    assert len(data) > STREAM_THRESHOLD


def test_addresses_of_an_envelope_list_have_no_space_between_them() -> None:
    # Found by the Dovecot differential test's syntax check: RFC 3501 §9, env-to = "(" 1*address
    # ")" / nil; we wrote "(addr) (addr)", Dovecot writes "(addr)(addr)".  Groups too.
    data = b"To: a@x.test, B <b@y.test>\r\nCc: team: c@z.test;\r\nSubject: s\r\n\r\nbody\r\n"
    reply = line("ENVELOPE", data)
    assert b'((NIL NIL "a" "x.test")("B" NIL "b" "y.test"))' in reply, reply
    assert b'((NIL NIL "team" NIL)(NIL NIL "c" "z.test")(NIL NIL NIL NIL))' in reply, reply
    inner = b"Content-Type: message/rfc822\r\n\r\n" + data
    assert b'((NIL NIL "a" "x.test")("B" NIL "b" "y.test"))' in line("BODYSTRUCTURE", inner)
