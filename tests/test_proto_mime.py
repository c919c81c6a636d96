"""
Tests for the MIME index of stored messages (L{strata_twisted.proto.mime}).

Expected values are worked out by hand from RFC 3501 §6.4.5 / §7.4.2, RFC 2045 and RFC 2046.  The
invariants (ranges nest and tile, TEXT matches what C{email} calls the body) are checked on the
hand-written cases and, when present, on every message of the shared corpus (C{../shared/corpus},
or C{$STRATA_CORPUS}); a few tests also check exact values on named corpus messages, and skip,
saying why, where the corpus is absent (DESIGN: corpus files are never copied into the project).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strata_twisted.proto import mime
from strata_twisted.proto.mime import (
    FORMAT_VERSION,
    MISSING_HOST,
    MISSING_MAILBOX,
    IndexFormatError,
    MessageIndex,
    Part,
    Section,
    SectionSyntaxError,
    bodystructure,
    envelope,
    index_from_json,
    index_message,
    index_to_json,
    resolve_section,
)

CORPUS = Path(os.environ.get("STRATA_CORPUS", Path(__file__).parents[2] / "shared" / "corpus"))


def corpus_message(name: str) -> bytes:
    """One message of the shared corpus (DESIGN: read in place, never copied into the project);
    the test skips, saying why, where the corpus is absent."""
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"shared corpus message {name} not found under {CORPUS}")
    return path.read_bytes()


US_ASCII = [b"charset", b"us-ascii"]


def index(data: bytes) -> MessageIndex:
    result = index_message(io.BytesIO(data), len(data))
    check_invariants(result, data)
    return result


def section(data: bytes, result: MessageIndex, spec: str) -> bytes:
    found = resolve_section(result, spec)
    assert found is not None, spec
    return data[found.offset : found.offset + found.length]


def walk(part: Part) -> Iterator[Part]:
    yield part
    for child in part.children:
        yield from walk(child)
    if part.message is not None:
        yield from walk(part.message)


def check_invariants(result: MessageIndex, data: bytes) -> None:
    """Part ranges nest, lie in the message, and header + body tile each part."""
    root = result.root
    assert result.size == len(data)
    assert root.header_offset == 0 and root.end == len(data)

    def check(part: Part, start: int, end: int) -> None:
        assert start <= part.header_offset <= part.body_offset <= part.end <= end
        assert part.header_length >= 0 and part.body_length >= 0 and part.lines >= 0
        body = data[part.body_offset : part.end]
        assert part.lines == body.count(b"\n")
        previous = part.body_offset
        for child in part.children:
            assert child.header_offset >= previous  # siblings in order, never overlapping
            check(child, part.body_offset, part.end)
            previous = child.end
        if part.message is not None:
            assert not part.children
            assert part.message.header_offset == part.body_offset
            assert part.message.end == part.end
            check(part.message, part.body_offset, part.end)
        assert bool(part.children) == (part.type == b"multipart")

    check(root, 0, len(data))


# Hand-written messages: byte ranges.

SIMPLE = b"From: a@b.test\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n"


def test_simple_message_ranges() -> None:
    result = index(SIMPLE)
    root = result.root
    assert (root.header_offset, root.header_length) == (0, 31)  # includes the blank line
    assert (root.body_offset, root.body_length, root.lines) == (31, 16, 2)
    assert section(SIMPLE, result, "") == SIMPLE
    assert section(SIMPLE, result, "HEADER") == b"From: a@b.test\r\nSubject: hi\r\n\r\n"
    assert section(SIMPLE, result, "TEXT") == b"line 1\r\nline 2\r\n"
    # RFC 3501 §6.4.5: a message that is not multipart has exactly one part, "1", its body.
    assert section(SIMPLE, result, "1") == b"line 1\r\nline 2\r\n"
    assert section(SIMPLE, result, "1.MIME") == section(SIMPLE, result, "HEADER")
    assert resolve_section(result, "2") is None
    assert resolve_section(result, "1.1") is None


def test_bare_lf_and_last_line_without_newline() -> None:
    data = b"Subject: x\n\none\ntwo"
    result = index(data)
    assert section(data, result, "TEXT") == b"one\ntwo"
    assert result.root.lines == 1  # LF octets in the body: the unterminated line does not count


def test_header_only_message() -> None:
    data = b"Subject: no body\r\n"
    result = index(data)
    assert result.root.header_length == len(data) and result.root.body_length == 0


NESTED = (
    b"From: Alice <alice@a.test>\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"part one\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Description: forwarded\r\n"
    b"\r\n"
    b"From: Bob <bob@b.test>\r\n"
    b"Subject: inner\r\n"
    b'Content-Type: multipart/alternative; boundary="in ner"\r\n'
    b"\r\n"
    b"--in ner\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--in ner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--in ner--\r\n"
    b"--outer--\r\n"
    b"epilogue\r\n"
)


def test_nested_sections() -> None:
    result = index(NESTED)
    assert section(NESTED, result, "1") == b"part one"  # RFC 2046: the CRLF goes with the boundary
    assert section(NESTED, result, "1.MIME") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    inner_message = section(NESTED, result, "2")
    assert inner_message.startswith(b"From: Bob") and inner_message.endswith(b"--in ner--")
    assert section(NESTED, result, "2.MIME").startswith(b"Content-Type: message/rfc822\r\n")
    assert section(NESTED, result, "2.HEADER").startswith(b"From: Bob")
    assert section(NESTED, result, "2.HEADER").endswith(b'"in ner"\r\n\r\n')
    assert section(NESTED, result, "2.TEXT").startswith(b"--in ner\r\n")
    assert section(NESTED, result, "2.1") == b"plain"
    assert section(NESTED, result, "2.1.MIME") == b"\r\n"  # a part with no header fields
    assert section(NESTED, result, "2.2") == b"<p>html</p>"
    assert section(NESTED, result, "TEXT").endswith(b"--outer--\r\nepilogue\r\n")
    assert resolve_section(result, "3") is None
    assert resolve_section(result, "2.3") is None
    assert resolve_section(result, "1.HEADER") is None  # part 1 is not a message/rfc822


def test_nested_bodystructure() -> None:
    result = index(NESTED)
    inner_html = [b"text", b"html", US_ASCII, None, None, b"7bit", 11, 0]
    inner_plain = [b"text", b"plain", US_ASCII, None, None, b"7bit", 5, 0]
    inner_envelope = [
        None,
        b"inner",
        [[b"Bob", None, b"bob", b"b.test"]],
        [[b"Bob", None, b"bob", b"b.test"]],
        [[b"Bob", None, b"bob", b"b.test"]],
        None,
        None,
        None,
        None,
        None,
    ]
    rfc822_size = NESTED.index(b"--in ner--") + len(b"--in ner--") - NESTED.index(b"From: Bob")
    assert bodystructure(result, extended=False) == [
        [b"text", b"plain", [b"charset", b"utf-8"], None, None, b"7bit", 8, 0],
        [
            b"message",
            b"rfc822",
            None,
            None,
            b"forwarded",
            b"7bit",
            rfc822_size,
            inner_envelope,
            [inner_plain, inner_html, b"alternative"],
            11,  # LFs from "From: Bob" to "--in ner--"; the CRLF after it goes with --outer--
        ],
        b"mixed",
    ]
    extended = bodystructure(result, extended=True)
    assert isinstance(extended, list)
    assert extended[-5:] == [b"mixed", [b"boundary", b"outer"], None, None, None]
    first = extended[0]
    assert isinstance(first, list) and first[-4:] == [None, None, None, None]  # md5 dsp lang loc


def test_rfc2060_example_part_numbers() -> None:
    """RFC 2060's own example: every part's body says which specifier reaches it."""
    data = corpus_message("mimekit-rfc2060-bodystructure-example.eml")
    result = index(data)
    for spec in ["1", "2", "3.1", "3.2", "4.1", "4.2.1", "4.2.2.1", "4.2.2.2"]:
        body = section(data, result, spec)
        assert body.strip() == f"This part specifier should be: {spec}".encode(), spec
    assert b"Subject: This part specifier should be: 3" in section(data, result, "3.HEADER")
    assert b"Subject: This part specifier should be: 4.2" in section(data, result, "4.2.HEADER")
    assert section(data, result, "4.2.HEADER.FIELDS (SUBJECT)") == section(
        data, result, "4.2.HEADER"
    )


def test_part_1_of_a_leaf_is_the_leaf_itself() -> None:
    # Dovecot (imap_msgpart_find) answers BODY[2.1] of a leaf part with the part itself: a part
    # that is not a multipart has one part, 1 (RFC 3501 §6.4.5 says so of messages).  We gave
    # an empty string; the differential test found it on 102 corpus messages.
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner\r\n--b--\r\n"
    )
    result = index(data)
    assert section(data, result, "1.1") == section(data, result, "1") == b"one"
    assert resolve_section(result, "1.1.1") is None  # only once: a leaf has no part 1.1
    assert resolve_section(result, "1.2") is None
    assert section(data, result, "2.1") == b"inner"  # the encapsulated message's part 1
    assert resolve_section(result, "2.1.1") is None
    # A message that is not multipart: "1" is its body, "1.1" does not exist.
    single = b"Subject: x\r\n\r\nbody\r\n"
    assert section(single, index(single), "1") == b"body\r\n"
    assert resolve_section(index(single), "1.1") is None


def test_header_fields_section_names_fields_and_range() -> None:
    result = index(NESTED)
    found = resolve_section(result, '2.HEADER.FIELDS.NOT (Subject "From")')
    header = resolve_section(result, "2.HEADER")
    assert found == Section(header.offset, header.length, (b"Subject", b"From"), True)  # type: ignore[union-attr]
    plain = resolve_section(result, b"header.fields (x-a)")
    assert plain is not None and plain.fields == (b"x-a",) and not plain.exclude
    assert (plain.offset, plain.length) == (0, result.root.header_length)


@pytest.mark.parametrize(
    "spec",
    ["MIME", "0", "1.0", "01", "1.", "HEADERS", "TEXT.1", "HEADER.FIELDS", "HEADER.FIELDS ()",
     "1.MIME.TEXT", "HEADER.FIELDS (a b", "x"],
)  # fmt: skip
def test_bad_section_syntax(spec: str) -> None:
    with pytest.raises(SectionSyntaxError):
        resolve_section(index(SIMPLE), spec)


# Content-Type: defaults and malformations.


def structure_of(data: bytes) -> list[mime.IMAPValue]:
    value = bodystructure(index(data), extended=False)
    assert isinstance(value, list)
    return value


def test_missing_content_type_is_text_plain_us_ascii() -> None:
    assert structure_of(b"Subject: x\r\n\r\nhello\r\n") == [
        b"text", b"plain", US_ASCII, None, None, b"7bit", 7, 1,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [b"text", b"text/", b"/plain", b"text plain", b"te xt/plain", b"", b";", b"multipart/mixed"],
)
def test_malformed_content_type_defaults(value: bytes) -> None:
    # RFC 2045 §5.2; a multipart without its required boundary (RFC 2046 §5.1.1) likewise.
    data = b"Content-Type: " + value + b"\r\n\r\nbody\r\n"
    assert structure_of(data)[:3] == [b"text", b"plain", US_ASCII]


def test_content_type_ending_in_semicolon() -> None:
    assert structure_of(b"Content-Type: text/html;\r\n\r\n<p>\r\n")[:3] == [
        b"text", b"html", US_ASCII,
    ]  # fmt: skip
    data = corpus_message("cpython-msg41-trailing-semicolon.eml")
    assert structure_of(data)[:3] == [b"text", b"plain", US_ASCII]  # multipart, no boundary


def test_params_as_sent() -> None:
    data = (
        b'Content-Type: application/octet-stream; name=a; NAME="b\\"c";;\r\n'
        b"  name*0*=utf-8''%E2%82; name*1*=%AC.txt; x=(comment)y\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt\r\n"
        b"Content-Language: en, de\r\n"
        b"Content-Location: http://x.test/a\r\n"
        b"Content-ID: <id@x>\r\n"
        b"\r\n"
        b"AAAA\r\n"
    )
    assert bodystructure(index(data), extended=True) == [
        b"application",
        b"octet-stream",
        [b"name", b"a", b"NAME", b'b"c', b"name*0*", b"utf-8''%E2%82", b"name*1*", b"%AC.txt",
         b"x", b"y"],
        b"<id@x>",
        None,
        b"BASE64",
        6,
        None,
        [b"attachment", [b"filename*", b"utf-8''%E2%82%AC.txt"]],
        [b"en", b"de"],
        b"http://x.test/a",
    ]  # fmt: skip


def test_unquoted_boundary_with_equals_and_case() -> None:
    data = (
        b"Content-Type: MULTIPART/Alternative; boundary=----=_Next_1\r\n\r\n"
        b"------=_Next_1\r\nContent-Type: TEXT/Plain\r\n\r\nx\r\n------=_Next_1--\r\n"
    )
    assert structure_of(data) == [
        [b"text", b"plain", US_ASCII, None, None, b"7bit", 1, 0],
        b"alternative",
    ]


def test_boundary_with_transport_padding_and_prefix_lookalikes() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b \t\r\n\r\none\r\n--bb\r\nstill one\r\n--b-\r\n--b--  \r\n"
    )
    result = index(data)
    assert section(data, result, "1") == b"one\r\n--bb\r\nstill one\r\n--b-"
    assert len(result.root.children) == 1


def test_missing_final_boundary() -> None:
    data = b"Content-Type: multipart/mixed; boundary=z\n\n--z\n\none\n--z\n\ntwo\n"
    result = index(data)
    assert section(data, result, "2") == b"two\n"  # runs to the end of the message
    data = corpus_message("flanker-missing-final-boundary.eml")
    result = index(data)
    assert section(data, result, "1").startswith(b"Some body")


def test_boundary_never_found_is_one_text_part() -> None:
    data = b"Content-Type: multipart/mixed; boundary=nope\r\n\r\njust text\r\n"
    result = index(data)
    assert structure_of(data) == [
        [b"text", b"plain", US_ASCII, None, None, b"7bit", 11, 1],
        b"mixed",
    ]
    assert section(data, result, "1") == b"just text\r\n"


def test_inner_part_missing_close_ends_at_outer_boundary() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
        b"Content-Type: multipart/mixed; boundary=i\n\n--i\n\ninner\n--o\n\nsecond\n--o--\n"
    )
    result = index(data)
    assert section(data, result, "1.1") == b"inner"
    assert section(data, result, "2") == b"second"


def test_digest_parts_default_to_message_rfc822() -> None:
    data = b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody\n--d--\n"
    result = index(data)
    part = result.root.children[0]
    assert (part.type, part.subtype, part.message is not None) == (b"message", b"rfc822", True)
    assert section(data, result, "1.HEADER") == b"Subject: one\n\n"
    assert section(data, result, "1.TEXT") == b"body"
    data = corpus_message("cpython-msg02-digest-nested.eml")
    digest = index(data).root.children[2]
    assert digest.subtype == b"digest" and all(c.message is not None for c in digest.children)


EMPTY_BODY = [b"text", b"plain", US_ASCII, None, None, b"7bit", 0, 0, None, None, None, None]


def test_encoded_message_rfc822_is_opaque() -> None:
    # Found by the Dovecot differential test (mime4j-base64-rfc822-nested.eml): the structure
    # lacked the envelope, body and lines that RFC 3501 §9 body-type-msg requires of every
    # MESSAGE/RFC822, so a client's parser lost its place.  The content stays opaque (not
    # parsed), with Dovecot's empty envelope and body.
    data = b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAo=\n"
    result = index(data)
    assert bodystructure(result) == [
        b"message", b"rfc822", None, None, None, b"base64", 17, [None] * 10, EMPTY_BODY, 1,
        None, None, None, None,
    ]  # fmt: skip
    assert result.root.message is None
    assert resolve_section(result, "1.HEADER") is None


def test_empty_message_rfc822_part_has_envelope_and_body() -> None:
    # mailparser-decoder-ended.eml: a message/rfc822 part with no content at all.
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n--b--\r\n"
    )
    full = bodystructure(index(data))
    assert isinstance(full, list)
    assert full[1] == [
        b"message", b"rfc822", None, None, None, b"8bit", 0, [None] * 10, EMPTY_BODY, 0,
        None, None, None, None,
    ]  # fmt: skip
    value = bodystructure(index(data), extended=False)
    assert isinstance(value, list) and isinstance(value[1], list)
    assert value[1][8] == EMPTY_BODY[:8]  # BODY: no extension data, inside either


def test_message_rfc822_top_level_nested_twice() -> None:
    data = corpus_message("imaptest-fetch-body-message-rfc822-x2.eml")
    result = index(data)
    assert section(data, result, "1.1.HEADER").startswith(b"From: sub@domain.org")
    assert section(data, result, "1.1.TEXT") == b"Hello world\n"
    assert section(data, result, "1.HEADER").startswith(b"From: user2@domain.org")


def test_header_line_without_colon_does_not_end_the_header() -> None:
    # email.parser would end the header at "X Bad" and lose the Content-Type below it.
    data = b"Subject: a\r\nX Bad\r\nContent-Type: text/html\r\n\r\n<p>\r\n"
    assert structure_of(data)[:2] == [b"text", b"html"]


def test_long_lines_and_boundary_after_them() -> None:
    long_line = b"x" * (3 * 8192 + 17)
    data = (
        b"Content-Type: multipart/mixed; boundary=L\r\n\r\n--L\r\n\r\n"
        + long_line
        + b"--L\r\n"  # not at the start of a line: content
        + b"\r\n--L--\r\n"
    )
    result = index(data)
    assert section(data, result, "1") == long_line + b"--L\r\n"
    assert len(result.root.children) == 1


def test_100_kib_lines_in_the_header_and_the_parts() -> None:
    """Issue 11, point 3: intake stores lines of any length.  A 100 KiB header field does not
    hide the fields after it; "--L" inside a long line, even where the reader cuts it into
    pieces, is content; the parts end where their boundaries are and count their lines."""
    kib = 1024
    long_field = b"X-Long: " + b"h" * (100 * kib) + b"\r\n"
    # "--L" at the start of the 2nd, 3rd... 8 KiB piece of the line, and at its very end.
    trap = b"".join(b"y" * (8192 - 3) + b"--L" for _ in range(12)) + b"--L--"
    body1 = b"b" * (100 * kib) + b"\r\n" + trap + b"\r\n" + b"." * (100 * kib)
    data = (
        b"From: a@sender.test\r\n" + long_field + b"Subject: after the long field\r\n"
        b"Content-Type: multipart/mixed; boundary=L\r\n\r\n"
        b"--L\r\nContent-Type: text/plain\r\n\r\n" + body1 + b"\r\n"
        b"--L\r\n" + long_field + b"\r\n" + b"z" * (100 * kib) + b"\r\n"
        b"--L--\r\n"
    )
    result = index(data)
    assert result.root.envelope is not None
    assert result.root.envelope.subject == b"after the long field"
    assert [child.type for child in result.root.children] == [b"text", b"text"]
    assert section(data, result, "1") == body1
    assert result.root.children[0].lines == 2
    assert section(data, result, "2") == b"z" * (100 * kib)  # RFC 2046: the CRLF is the boundary's
    assert section(data, result, "2.MIME") == long_field + b"\r\n"
    header = section(data, result, "HEADER")
    assert header.startswith(b"From: a@sender.test\r\n" + long_field)


# ENVELOPE.


def envelope_of(headers: bytes) -> list[mime.IMAPValue]:
    value = envelope(index(headers + b"\r\nbody\r\n"))
    assert isinstance(value, list)
    return value


def test_envelope_full_and_raw_8bit() -> None:
    data = (
        b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?= and caf\xc3\xa9\r\n"
        b"  folded\r\n"
        b'From: "J\\"o" <j@x.test>\r\n'
        b"Sender: s@x.test (The Sender)\r\n"
        b"To: R\xc3\xa9ne <r@y.test>, <@a.test,@b.test:z@z.test>\r\n"
        b"Bcc: undisclosed-recipients:;\r\n"
        b"In-Reply-To: <p@x>\r\n"
        b"Message-ID: <m@x>\r\n"
    )
    assert envelope_of(data) == [
        b"Thu, 15 Feb 2007 01:02:03 +0200",
        b"=?utf-8?q?caf=C3=A9?= and caf\xc3\xa9  folded",  # raw, unfolded, not decoded
        [[b'J"o', None, b"j", b"x.test"]],
        [[b"The Sender", None, b"s", b"x.test"]],
        [[b'J"o', None, b"j", b"x.test"]],  # Reply-To defaults to From
        [[b"R\xc3\xa9ne", None, b"r", b"y.test"], [None, b"@a.test,@b.test", b"z", b"z.test"]],
        None,
        [[None, None, b"undisclosed-recipients", None], [None, None, None, None]],
        b"<p@x>",
        b"<m@x>",
    ]


def test_envelope_defaults_and_empty_fields() -> None:
    value = envelope_of(b"From: a@b.test\r\nSender:\r\nReply-To: \r\nSubject:\r\n")
    assert value[1] == b""
    assert value[2] == value[3] == value[4] == [[None, None, b"a", b"b.test"]]
    assert envelope_of(b"X: y\r\n") == [None] * 10


def test_envelope_groups_from_imaptest() -> None:
    data = corpus_message("imaptest-fetch-envelope-4-groups.eml")
    value = envelope(index(data))
    assert isinstance(value, list)
    assert value[2] == [[b"Real Name", None, b"user", b"domain"]]
    assert value[5] == [
        [None, None, b"group", None],
        [None, None, b"g1", b"d1.org"],
        [None, None, b"g2", b"d2.org"],
        [None, None, None, None],
        [None, None, b"group2", None],
        [None, None, b"g3", b"d3.org"],
        [None, None, None, None],
    ]
    assert value[6] == [
        [None, None, b"group", None],
        [None, None, None, None],
        [None, None, b"group2", None],
        [None, None, None, None],
    ]


def test_envelope_odd_addresses() -> None:
    value = envelope_of(b'To: local, "a b"@c.test, Name <>, ,\r\n')
    assert value[5] == [
        [None, None, b"local", MISSING_HOST],
        [None, None, b'"a b"', b"c.test"],
        [b"Name", None, MISSING_MAILBOX, MISSING_HOST],
    ]


def test_name_with_empty_address_is_not_an_end_of_group_marker() -> None:
    # Found by the Dovecot differential test (mikel-encoding-madness.eml, 'Reply-To: "K" <>'):
    # (name NIL NIL NIL) reads as an end-of-group marker (RFC 3501 §7.4.2: NIL host is group
    # syntax, NIL mailbox too ends the group).  Dovecot answers (name NIL MISSING_MAILBOX
    # MISSING_DOMAIN); so do we.
    value = envelope_of(b'Reply-To: "KLAUS- H\xc3\x84NSCHEL" <>\r\nTo: <>, x@y\r\n')
    assert value[4] == [[b"KLAUS- H\xc3\x84NSCHEL", None, MISSING_MAILBOX, MISSING_HOST]]
    assert value[5] == [[None, None, b"x", b"y"]]  # "<>" alone is no address at all


def test_display_name_alone_is_a_name_like_dovecot() -> None:
    # A lone quoted-string or several words without "@" is a display name with no address
    # (Dovecot: james-duplicate-headers-rfc2231.eml 'From: "Drew Fossum"'); one word is a
    # local mailbox.
    value = envelope_of(b'To: "Drew Fossum", Two Words, plainlocal, john.doe\r\n')
    assert value[5] == [
        [b"Drew Fossum", None, MISSING_MAILBOX, MISSING_HOST],
        [b"Two Words", None, MISSING_MAILBOX, MISSING_HOST],
        [None, None, b"plainlocal", MISSING_HOST],
        [None, None, b"john.doe", MISSING_HOST],
    ]


def test_display_name_keeps_its_dots_as_written() -> None:
    # "Sandy M." came out as "Sandy M ." (mikel-trailing-dot-no-eol.eml, Dovecot diff).
    value = envelope_of(
        b"From: Sandy M. <a@b.c>\r\nCc: A. B. C. <x@y>, J.R.R. Tolkien <t@y>, Mr . Dot"
        b" <d@y>, John (middle) Doe <j@y>\r\n"
    )
    assert value[2] == [[b"Sandy M.", None, b"a", b"b.c"]]
    cc = value[6]
    assert isinstance(cc, list)
    assert [a[0] for a in cc if isinstance(a, list)] == [
        b"A. B. C.",
        b"J.R.R. Tolkien",
        b"Mr . Dot",
        b"John Doe",
    ]


def test_two_addr_specs_without_separator_take_the_first() -> None:
    # 'To: tim@powerupdev.com concierge@powerupdev.com' (mikel-multiple-from.eml) gave the
    # mailbox "tim@powerupdev.comconcierge"; Dovecot, like us now, takes the first addr-spec.
    value = envelope_of(b"To: tim@powerupdev.com concierge@powerupdev.com\r\n")
    assert value[5] == [[None, None, b"tim", b"powerupdev.com"]]
    # Folding white space around the dots of a domain is still one domain (RFC 5322 §4.4).
    assert envelope_of(b"To: a @ b . c\r\n")[5] == [[None, None, b"a", b"b.c"]]


def test_envelope_from_corpus_8bit_header() -> None:
    data = corpus_message("flanker-raw-8bit-from.eml")
    value = envelope(index(data))
    assert isinstance(value, list)
    assert value[2] == [[b"Ingo L\xfctkebohle", None, b"ingo", b"blank.pages.de"]]
    assert value[4] == [[None, None, b"new-httpd", b"apache.org"]]


def test_encapsulated_envelope_is_its_own() -> None:
    data = corpus_message("flanker-no-content-type-gmail.eml")
    result = index(data)
    value = envelope(result)
    assert isinstance(value, list) and value[1] == b"Testing message parsing"
    assert bodystructure(result, extended=False)[:2] == [b"text", b"plain"]  # type: ignore[index]


# Serialisation.


def test_json_round_trip() -> None:
    for data in [SIMPLE, NESTED, corpus_message("mimekit-rfc2060-bodystructure-example.eml")]:
        result = index(data)
        stored = index_to_json(result)
        assert index_from_json(stored) == result
        assert stored.isascii()


def test_reading_an_index_back_is_cached() -> None:
    # bench.imap: reading indexes back was most of FETCH 1:* (ENVELOPE) and of header SEARCH.
    stored = index_to_json(index(NESTED))
    first = index_from_json(stored)
    assert index_from_json(bytes(stored)) is first  # equal bytes: the same (frozen) index
    assert index_from_json(bytearray(stored)) == first  # not hashable: parsed, not cached
    for _ in range(2):  # a failure is never cached
        with pytest.raises(IndexFormatError):
            index_from_json(stored.replace(b'"v":1', b'"v":99'))


def test_json_keeps_8bit_octets() -> None:
    data = corpus_message("flanker-raw-8bit-from.eml")
    result = index(data)
    assert envelope(index_from_json(index_to_json(result))) == envelope(result)


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"[]",
        b'{"v": 999, "size": 1, "root": {}}',
        b'{"v": %d, "size": 1, "root": {}}' % FORMAT_VERSION,
        b'{"v": %d, "size": -1, "root": {}}' % FORMAT_VERSION,
        b'{"v": %d, "size": 1, "root": {"h": [0, 0, 0], "t": ["a", "b", []], "e": "x"}}'
        % FORMAT_VERSION,
        b'{"v": %d, "size": 1, "root": {"h": [0, 0, 0, 0], "t": ["\\u20ac", "b", []], "e": "x"}}'
        % FORMAT_VERSION,
    ],
)
def test_json_rejects_other_versions_and_damage(stored: bytes) -> None:
    with pytest.raises(IndexFormatError):
        index_from_json(stored)


# Properties.


class TrickleStream(io.RawIOBase):
    """A stream that returns at most C{step} octets per read, as a pipe or socket might."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


_LINES = st.sampled_from(
    [b"--a", b"--a--", b"--b", b"--b--", b"", b"text", b"-", b"Content-Type: multipart/mixed;"
     b" boundary=b", b"Content-Type: message/rfc822", b"Subject: \xff", b" folded", b"--a \t",
     b"Content-Type: multipart/digest; boundary=a", b"From: x <y@z>"]
)  # fmt: skip
_MESSAGES = st.builds(
    lambda head, lines, eols: (
        head + b"".join(line + eol for line, eol in zip(lines, eols, strict=False))
    ),
    st.sampled_from([b"Content-Type: multipart/mixed; boundary=a\r\n\r\n", b""]),
    st.lists(_LINES, max_size=40),
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b""]), min_size=40, max_size=40),
)


@given(data=_MESSAGES | st.binary(max_size=300), step=st.integers(1, 7))
@settings(max_examples=300, deadline=None)
def test_any_read_split_gives_the_same_index(data: bytes, step: int) -> None:
    expected = index(data)
    assert index_message(TrickleStream(data, step), len(data)) == expected  # type: ignore[arg-type]
    assert index_from_json(index_to_json(expected)) == expected


def test_small_chunks_still_find_split_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every place a chunk can end, including inside "\\n--" and inside a CRLF."""
    monkeypatch.setattr(mime, "_CHUNK", 3)
    result = index(NESTED)
    monkeypatch.undo()
    assert result == index(NESTED)


@given(st.binary(max_size=500))
@settings(max_examples=300, deadline=None)
def test_never_raises_on_garbage(data: bytes) -> None:
    result = index(data)
    bodystructure(result)
    envelope(result)


# The real world.


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not corpus_files(), reason=f"shared corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_invariants(path: Path) -> None:
    data = path.read_bytes()
    result = index(data)
    assert index_from_json(index_to_json(result)) == result
    bodystructure(result, extended=True)
    envelope(result)
    compare_with_email_package(data, result)


def compare_with_email_package(data: bytes, result: MessageIndex) -> None:
    """
    For well-formed single-part messages, TEXT is what C{email} calls the body, octet for octet;
    for well-formed multiparts, so is every leaf.  Messages C{email} finds defects in are skipped:
    there the two parsers may legitimately disagree.
    """
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    if any(part.defects for part in parsed.walk()):
        return
    ours = [p for p in walk(result.root) if not p.children and p.message is None]
    theirs = [p for p in parsed.walk() if not p.is_multipart()]
    if len(ours) != len(theirs) or any(
        p.get_content_maintype() == "message" for p in parsed.walk()
    ):
        return  # email parses every message/* body as headers; IMAP only message/rfc822
    for mine, their in zip(ours, theirs, strict=True):
        payload = getattr(their, "_payload")  # noqa: B009 - raw body; get_payload() decodes 8-bit
        expected = payload.encode("ascii", "surrogateescape")
        got = data[mine.body_offset : mine.end]
        assert got == expected


# Bounded memory.


def write_large_message(path: Path, attachment_size: int) -> tuple[int, int, str]:
    """A multipart message with a base64 attachment of C{attachment_size} octets, written in
    pieces; returns the attachment's body offset, length and SHA-256."""
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    head = (
        b"From: big@x.test\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=BIG\r\n\r\n"
        b"--BIG\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--BIG\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    digest = hashlib.sha256()
    with path.open("wb") as out:
        out.write(head)
        block = line * 1024
        written = 0
        while written + len(block) <= attachment_size:
            out.write(block)
            digest.update(block)
            written += len(block)
        last = line * ((attachment_size - written) // len(line))
        out.write(last)
        digest.update(last)
        written += len(last)
        out.write(b"--BIG--\r\n")
    # The CRLF of the last base64 line belongs to the boundary (RFC 2046 §5.1.1).
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        stream.seek(len(head))
        remaining = written - 2
        while remaining:
            chunk = stream.read(min(remaining, 1 << 20))
            digest.update(chunk)
            remaining -= len(chunk)
    return len(head), written - 2, digest.hexdigest()


def test_50_mib_attachment_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    offset, length, sha = write_large_message(path, 50 * 1024 * 1024)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            result = index_message(stream, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"peak {peak} octets while indexing"
    attachment = result.root.children[1]
    assert (attachment.body_offset, attachment.body_length) == (offset, length)
    assert attachment.lines == length // 78
    found = resolve_section(result, "2")
    assert found == Section(offset, length)
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        stream.seek(found.offset)
        remaining = found.length
        while remaining:
            chunk = stream.read(min(remaining, 1 << 20))
            digest.update(chunk)
            remaining -= len(chunk)
    assert digest.hexdigest() == sha
    assert result.root.end == size
    assert bodystructure(result, extended=False) == [
        [b"text", b"plain", US_ASCII, None, None, b"7bit", 14, 0],
        [b"application", b"octet-stream", [b"name", b"big.bin"], None, None, b"base64", length],
        b"mixed",
    ]


def test_blank_line_before_boundary_goes_with_the_boundary() -> None:
    # RFC 2046 §5.1.1: "Header\r\n\r\n--b" holds a part "Header\r\n" with an empty body.
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX: y\r\n\r\n--b--\r\n"
    result = index(data)
    assert section(data, result, "1.MIME") == b"X: y\r\n"
    assert section(data, result, "1") == b""
