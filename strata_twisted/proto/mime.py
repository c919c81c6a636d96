# -*- test-case-name: tests.test_proto_mime -*-
"""
The MIME structure of a stored message, computed once at delivery so that IMAP FETCH never parses a
body again (DESIGN decision 9, "Parse once").

L{index_message} makes one pass over the message exactly as stored (CRLF or bare LF line ends,
8-bit bytes anywhere) and returns a L{MessageIndex}: for the message and, recursively, for every
part, the byte offset and length of its header and of its body, its line count, its parsed MIME
fields, and for the message itself and every encapsulated message/rfc822 its L{Envelope}.  From the
index alone:

  - L{envelope} and L{bodystructure} build the RFC 3501 §7.4.2 ENVELOPE and BODY/BODYSTRUCTURE
    values as L{IMAPValue} trees, ready for the IMAP encoder;
  - L{resolve_section} turns a FETCH section ("", "HEADER", "TEXT", "1.2", "1.2.MIME",
    "2.HEADER.FIELDS (...)") into a byte range of the stored message;
  - L{index_to_json} and L{index_from_json} keep the index beside the message, with a version.

Memory: the scanner holds one read buffer (L{_CHUNK} octets, plus one line of at most
L{_MAX_LINE}) and the header block of the part it is in (at most L{MAX_HEADER} octets are kept for
parsing; the rest is counted, not stored), so a 50 MiB attachment costs no more than a small one.

Header values are kept as the raw bytes sent, unfolded: 8-bit headers are served as they arrived and
RFC 2047 encoded-words and RFC 2231 parameters are not decoded (IMAP clients decode them).
Malformed MIME never raises: it degrades to the RFC 2045 defaults (text/plain;
charset=us-ascii, 7bit).

Why not C{email.parser} for the header blocks: its feed parser ends the header block at the first
line that is not a well-formed field ("X Bad Name: v", an mbox "From " line) and treats the rest as
body, losing any Content-Type below it, while the byte ranges here must end where the blank line is,
as IMAP servers do.  So header fields are split here (a few lines), and the structured values
(Content-Type parameters, address lists) are tokenised here too, on bytes, because the C{email}
package decodes encoded-words and RFC 2231 parameters that IMAP must return as sent.

This module must never touch a socket, a reactor, a clock or a store, and never raise on a message.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeAlias

__all__ = [
    "FORMAT_VERSION",
    "INDEX_CACHE_SIZE",
    "MAX_DEPTH",
    "MAX_HEADER",
    "MAX_PARTS",
    "MISSING_HOST",
    "MISSING_MAILBOX",
    "Address",
    "Envelope",
    "IMAPValue",
    "IndexFormatError",
    "MessageIndex",
    "Part",
    "Section",
    "SectionSyntaxError",
    "bodystructure",
    "envelope",
    "header_fields",
    "index_bytes",
    "index_from_json",
    "index_message",
    "index_to_json",
    "resolve_section",
]

IMAPValue: TypeAlias = bytes | int | None | list["IMAPValue"]
"""
An RFC 3501 response value: C{bytes} is a string (the encoder picks quoted or literal form),
C{int} a number, C{None} is NIL and a C{list} a parenthesised list.
"""

Params: TypeAlias = tuple[tuple[bytes, bytes], ...]

FORMAT_VERSION: Final = 1
"""Version of the L{index_to_json} format; bump it when the index changes meaning or shape."""

MAX_HEADER: Final = 1024 * 1024
"""Octets of one header block kept for parsing; fields beyond it are counted but not parsed."""

MAX_DEPTH: Final = 50
"""Nesting of multiparts and encapsulated messages beyond which parts are indexed as opaque."""

MAX_PARTS: Final = 10_000
"""Parts per message beyond which further multiparts are indexed as opaque leaves."""

MISSING_HOST: Final = b"MISSING_DOMAIN"
"""ENVELOPE host of an address that has none (a NIL host would mean group syntax, RFC 3501)."""

MISSING_MAILBOX: Final = b"MISSING_MAILBOX"
"""ENVELOPE mailbox of a display name with no address ("Name <>"); a NIL mailbox with a NIL host
would be an end-of-group marker (RFC 3501 §7.4.2).  The placeholder is Dovecot's."""

_CHUNK: Final = 64 * 1024
_MAX_LINE: Final = 8192  # longer lines are read in pieces; no boundary line is this long


# Index values.


@dataclass(frozen=True)
class Address:
    """One RFC 3501 address structure: (name adl mailbox host), raw bytes or None (NIL)."""

    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None


@dataclass(frozen=True)
class Envelope:
    """
    The header fields of one message that make its ENVELOPE, raw and unfolded.

    Address fields are parsed; an empty tuple means the header was absent or empty.  The RFC 3501
    defaults (Sender and Reply-To from From) are applied by L{envelope}, not stored.
    """

    date: bytes | None = None
    subject: bytes | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: bytes | None = None
    message_id: bytes | None = None


@dataclass(frozen=True)
class Part:
    """
    One MIME entity of a stored message: the message itself, a multipart child, or the message
    encapsulated in a message/rfc822 part.

    Offsets count octets from the start of the stored message.  The header range includes the
    blank line that ends it; the body follows it at once, so header and body tile the part.  Per
    RFC 2046 §5.1.1 the line break before a boundary line belongs to the boundary, not the body.
    C{lines} counts the LF octets in the body (a last line without one is not counted).

    Exactly the multipart parts have C{children} (at least one), and a message/rfc822 part whose
    encoding is an identity one has C{message}, the encapsulated message.  Message-level parts
    (the root and every C{message}) carry their L{Envelope}.
    """

    header_offset: int
    header_length: int
    body_length: int
    lines: int
    type: bytes = b"text"
    subtype: bytes = b"plain"
    params: Params = ((b"charset", b"us-ascii"),)
    id: bytes | None = None
    description: bytes | None = None
    encoding: bytes = b"7bit"
    disposition: bytes | None = None
    disposition_params: Params = ()
    language: tuple[bytes, ...] | None = None
    location: bytes | None = None
    children: tuple[Part, ...] = ()
    message: Part | None = None
    envelope: Envelope | None = None

    @property
    def body_offset(self) -> int:
        """Where the body starts: just after the header's blank line."""
        return self.header_offset + self.header_length

    @property
    def end(self) -> int:
        """One past the part's last octet."""
        return self.body_offset + self.body_length

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)


@dataclass(frozen=True)
class MessageIndex:
    """What L{index_message} learnt about one stored message: its size and its root L{Part}."""

    size: int
    root: Part


@dataclass(frozen=True)
class Section:
    """
    A FETCH section resolved to the stored bytes: C{length} octets from C{offset}.

    For HEADER.FIELDS and HEADER.FIELDS.NOT the range is the header block to filter, C{fields}
    holds the field names asked for (as sent) and C{exclude} is True for .NOT; the caller filters.
    """

    offset: int
    length: int
    fields: tuple[bytes, ...] | None = None
    exclude: bool = False


class SectionSyntaxError(ValueError):
    """The FETCH section specifier is not RFC 3501 section-spec syntax (answer BAD)."""


class IndexFormatError(ValueError):
    """A stored index cannot be read (another version, or damaged): index the message again."""


# The line reader.


class _Reader:
    """
    Lines of a binary stream with their absolute offsets, from a bounded buffer.

    A line ends after LF (a CR is content); a line longer than L{_MAX_LINE} comes in pieces.
    C{lf_count} is the number of LF octets before C{offset}, so the line count of a range is a
    subtraction; C{last_eol} is the length (0, 1 or 2) of the line break that ends just before
    C{offset}, which RFC 2046 gives to a boundary line that follows.
    """

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._remaining = size
        self._buf = b""
        self._pos = 0
        self._last_octet = -1
        self.offset = 0
        self.lf_count = 0
        self.last_eol = 0

    @property
    def at_line_start(self) -> bool:
        return self.offset == 0 or self._last_octet == 0x0A

    def _fill(self) -> bool:
        if self._remaining <= 0:
            return False
        data = self._stream.read(min(_CHUNK, self._remaining))
        if not data:
            self._remaining = 0
            return False
        self._remaining -= len(data)
        self._buf = self._buf[self._pos :] + data
        self._pos = 0
        return True

    def peek_line(self) -> bytes:
        """The next line (or piece of a long one) without consuming it; b"" at the end."""
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + _MAX_LINE)
            if end >= 0:
                return self._buf[self._pos : end + 1]
            if len(self._buf) - self._pos >= _MAX_LINE or not self._fill():
                return self._buf[self._pos : self._pos + _MAX_LINE]

    def consume(self, length: int) -> None:
        """Consume C{length} buffered octets (at most what L{peek_line} returned)."""
        self._advance(self._pos + length)

    def skip_to_dash_line(self) -> None:
        """
        Consume whole lines up to the next line that starts with "--", or to the end, at C speed.

        Only such a line can be a boundary delimiter (RFC 2046 §5.1.1).
        """
        while True:
            if self.at_line_start and self._buf.startswith(b"--", self._pos):
                return
            hit = self._buf.find(b"\n--", self._pos)
            if hit >= 0:
                self._advance(hit + 1)
                return
            # Keep the last octet unread: it may be the LF of an LF "--" split across two reads.
            self._advance(max(self._pos, len(self._buf) - 1))
            if not self._fill():
                self._advance(len(self._buf))
                return

    def skip_to_end(self) -> None:
        """Consume everything that is left."""
        while True:
            self._advance(len(self._buf))
            if not self._fill():
                return

    def _advance(self, to: int) -> None:
        buf, pos = self._buf, self._pos
        if to <= pos:
            return
        self.lf_count += buf.count(b"\n", pos, to)
        self.offset += to - pos
        before = buf[to - 2] if to - 2 >= pos else self._last_octet
        self._last_octet = buf[to - 1]
        if self._last_octet != 0x0A:
            self.last_eol = 0
        else:
            self.last_eol = 2 if before == 0x0D else 1
        self._pos = to


# Scanning.


_WSP_EOL: Final = b" \t\r\n"


def _boundary_match(line: bytes, boundaries: list[bytes]) -> tuple[int, bool] | None:
    """
    Which enclosing boundary C{line} is a delimiter of (innermost first, as an inner boundary
    may extend an outer one) and whether it closes its multipart.  RFC 2046 §5.1.1: "--",
    the boundary, "--" for the close delimiter, then nothing but transport padding.
    """
    if not line.startswith(b"--"):
        return None
    for depth in range(len(boundaries) - 1, -1, -1):
        boundary = boundaries[depth]
        if not line.startswith(boundary, 2):
            continue
        rest = line[2 + len(boundary) :]
        closing = rest.startswith(b"--")
        if closing:
            rest = rest[2:]
        if not rest.strip(_WSP_EOL):
            return depth, closing
    return None


@dataclass(frozen=True)
class _Stop:
    """Where a part ended: before a boundary line (its depth in the stack), or at the end."""

    depth: int | None = None
    closing: bool = False


@dataclass
class _Scan:
    reader: _Reader
    parts: int = 0


def _scan_part(
    scan: _Scan, boundaries: list[bytes], digest: bool, level: int, is_message: bool
) -> tuple[Part, _Stop]:
    """
    Index one entity from the reader's position up to an enclosing boundary line or the end.

    The header block ends after its blank line; when a boundary or the end comes first, the
    header is what was read (less the line break before the boundary) and the body is empty.
    """
    reader = scan.reader
    scan.parts += 1
    header_offset = reader.offset
    header = bytearray()
    stop: _Stop | None = None
    while True:
        line = reader.peek_line()
        if not line:
            stop = _Stop()
            break
        whole_line = reader.at_line_start
        if whole_line and boundaries:
            match = _boundary_match(line, boundaries)
            if match is not None:
                stop = _Stop(*match)
                break
        reader.consume(len(line))
        if whole_line and line in (b"\n", b"\r\n"):
            # RFC 5322 §2.1: the empty line ends the header block, and belongs to it, unless a
            # boundary follows at once: then RFC 2046 gives its line break to the boundary.
            match = _boundary_match(reader.peek_line(), boundaries) if boundaries else None
            if match is not None:
                stop = _Stop(*match)
            break
        if len(header) + len(line) <= MAX_HEADER:
            header += line
    if stop is None or stop.depth is None:
        body_offset, body_lf = reader.offset, reader.lf_count
    else:
        body_offset = max(header_offset, reader.offset - reader.last_eol)
        body_lf = reader.lf_count - (reader.offset != body_offset)
    fields = header_fields(bytes(header))
    mime = _mime_fields(fields, digest)
    children: tuple[Part, ...] = ()
    message: Part | None = None
    if stop is None:
        boundary = _param(mime.params, b"boundary") if mime.type == b"multipart" else None
        if boundary and level < MAX_DEPTH and scan.parts < MAX_PARTS:
            children, stop = _scan_multipart(scan, boundaries, boundary, mime.subtype, level)
        elif mime.encapsulates and level < MAX_DEPTH:
            message, stop = _scan_part(scan, boundaries, False, level + 1, True)
        else:
            stop = _scan_leaf(scan, boundaries)
        body_end = reader.offset - (reader.last_eol if stop.depth is not None else 0)
        end_lf = reader.lf_count - (body_end != reader.offset)
        if body_end < body_offset:
            body_end, end_lf = body_offset, body_lf
    else:
        body_end, end_lf = body_offset, body_lf
    if mime.type == b"multipart" and not children:
        # RFC 2046 requires at least one body part: a body in which the boundary never appears
        # (or one past the nesting limits) is served as one text part holding all of it.
        children = (Part(body_offset, 0, body_end - body_offset, end_lf - body_lf),)
    part = Part(
        header_offset=header_offset,
        header_length=body_offset - header_offset,
        body_length=body_end - body_offset,
        lines=end_lf - body_lf,
        type=mime.type,
        subtype=mime.subtype,
        params=mime.params,
        id=mime.id,
        description=mime.description,
        encoding=mime.encoding,
        disposition=mime.disposition,
        disposition_params=mime.disposition_params,
        language=mime.language,
        location=mime.location,
        children=children,
        message=message,
        envelope=_envelope(fields) if is_message else None,
    )
    return part, stop


def _scan_leaf(scan: _Scan, boundaries: list[bytes]) -> _Stop:
    """Skip a body that is not a container, up to an enclosing boundary line or the end."""
    reader = scan.reader
    if not boundaries:
        reader.skip_to_end()
        return _Stop()
    while True:
        reader.skip_to_dash_line()
        line = reader.peek_line()
        if not line:
            return _Stop()
        match = _boundary_match(line, boundaries)
        if match is not None:
            return _Stop(*match)
        reader.consume(len(line))


def _scan_multipart(
    scan: _Scan, boundaries: list[bytes], boundary: bytes, subtype: bytes, level: int
) -> tuple[tuple[Part, ...], _Stop]:
    """
    Index a multipart body: preamble, parts, close delimiter, epilogue (RFC 2046 §5.1.1).

    A part ends at the next line that delimits this multipart or any enclosing one; a missing
    close delimiter ends the multipart where its last part ends.
    """
    reader = scan.reader
    inner = [*boundaries, boundary]
    mine = len(boundaries)
    digest = subtype == b"digest"
    children: list[Part] = []
    stop = _scan_leaf(scan, inner)  # the preamble
    while stop.depth == mine and not stop.closing:
        reader.consume(len(reader.peek_line()))  # the delimiter line
        child, stop = _scan_part(scan, inner, digest, level + 1, False)
        children.append(child)
    if stop.depth == mine:
        reader.consume(len(reader.peek_line()))  # the close delimiter; then the epilogue
        stop = _scan_leaf(scan, boundaries)
    return tuple(children), stop


def index_message(stream: BinaryIO, size: int) -> MessageIndex:
    """
    Index the C{size} octets of a stored message read from C{stream} (from its current position).

    Reads the stream once, front to back, in bounded chunks.  Never raises on malformed MIME; a
    stream shorter than C{size} is indexed as far as it goes.
    """
    reader = _Reader(stream, size)
    root, _ = _scan_part(_Scan(reader), [], False, 0, True)
    return MessageIndex(size=reader.offset, root=root)


# Header fields.


_FIELD_NAME: Final = re.compile(rb"([^\x00-\x20\x7f:]+)[ \t]*:")
_FOLD: Final = re.compile(rb"\r?\n(?=[ \t])")


def header_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """
    Split a header block into (lowercased name, raw unfolded value) in order.

    RFC 5322 §2.2.3: a line starting with SP or HT continues the field before it.  A line that is
    neither a field nor a continuation is skipped, and parsing goes on (unlike C{email.parser}).
    """
    fields: list[tuple[bytes, bytearray]] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1][1].extend(line)
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            continue
        fields.append((match.group(1).lower(), bytearray(line[match.end() :])))
    return [(name, _FOLD.sub(b"", bytes(value)).strip(_WSP_EOL)) for name, value in fields]


def _first(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in fields:
        if key == name:
            return value
    return None


_TOKEN: Final = re.compile(rb"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")


def _parse_params(text: bytes) -> Params:
    """
    Parameters after the first ";" of a Content-Type or Content-Disposition value, as sent.

    Tolerant: empty parameters (a trailing ";") are dropped, an unquoted value runs to the next
    ";" (Outlook's unquoted "=" in boundaries), duplicates are kept in order, and RFC 2231 names
    (C{filename*0*}) and values are returned as sent.
    """
    params: list[tuple[bytes, bytes]] = []
    pos, size = 0, len(text)
    while pos < size:
        semi = text.find(b";", pos)
        if semi < 0:
            break
        pos = semi + 1
        equals = text.find(b"=", pos)
        next_semi = text.find(b";", pos)
        if equals < 0 or (0 <= next_semi < equals):
            continue
        name = _strip_comments(text[pos:equals]).strip(_WSP_EOL)
        pos = equals + 1
        while pos < size and text[pos] in b" \t":
            pos += 1
        if pos < size and text[pos] == 0x22:  # '"'
            value, pos = _quoted(text, pos)
        else:
            end = text.find(b";", pos)
            end = size if end < 0 else end
            value = _strip_comments(text[pos:end]).strip(_WSP_EOL)
            pos = end
        if name:
            params.append((name, value))
    return tuple(params)


def _quoted(text: bytes, pos: int) -> tuple[bytes, int]:
    """The content of the quoted-string at C{pos} (escapes removed) and the offset after it."""
    out = bytearray()
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == 0x5C and pos + 1 < len(text):  # backslash
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == 0x22:
            return bytes(out), pos + 1
        out.append(char)
        pos += 1
    return bytes(out), pos


def _strip_comments(text: bytes) -> bytes:
    if b"(" not in text:
        return text
    out, depth = bytearray(), 0
    for char in text:
        if char == 0x28:
            depth += 1
        elif char == 0x29 and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return bytes(out)


def _param(params: Params, name: bytes) -> bytes | None:
    for key, value in params:
        if key.lower() == name:
            return value
    return None


_DEFAULT_TEXT: Final = (b"text", b"plain", ((b"charset", b"us-ascii"),))
_DIGEST_DEFAULT: Final = (b"message", b"rfc822", ())


def _content_type(value: bytes | None, digest: bool) -> tuple[bytes, bytes, Params]:
    """
    Type, subtype (lowercased) and parameters; the defaults of RFC 2045 §5.2 (text/plain;
    charset=us-ascii) when the header is absent or its type is not "token/token", and of
    RFC 2046 §5.1.5 (message/rfc822) for a part of a multipart/digest without one.
    """
    if value is None:
        return _DIGEST_DEFAULT if digest else _DEFAULT_TEXT
    head, _, _ = value.partition(b";")
    head = _strip_comments(head).strip(_WSP_EOL)
    kind, slash, sub = head.partition(b"/")
    kind, sub = kind.strip(_WSP_EOL), sub.strip(_WSP_EOL)
    if not slash or not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(sub):
        return _DEFAULT_TEXT
    params = _parse_params(value)
    kind, sub = kind.lower(), sub.lower()
    if kind == b"multipart" and not _param(params, b"boundary"):
        return _DEFAULT_TEXT  # RFC 2046 §5.1.1: the boundary parameter is required
    return kind, sub, params


@dataclass(frozen=True)
class _Mime:
    type: bytes
    subtype: bytes
    params: Params
    encoding: bytes
    id: bytes | None
    description: bytes | None
    disposition: bytes | None
    disposition_params: Params
    language: tuple[bytes, ...] | None
    location: bytes | None

    @property
    def encapsulates(self) -> bool:
        # RFC 2046 §5.2.1: a message/rfc822 body is only ever 7bit, 8bit or binary; one that
        # was encoded anyway is opaque.  RFC 6532 §3.7 message/global is parsed the same way.
        return (
            self.type == b"message"
            and self.subtype in (b"rfc822", b"global")
            and self.encoding.lower() in (b"7bit", b"8bit", b"binary")
        )


def _mime_fields(fields: list[tuple[bytes, bytes]], digest: bool) -> _Mime:
    """The MIME fields of one part (RFC 2045, RFC 2183, RFC 3282, RFC 2557); first one wins."""
    kind, subtype, params = _content_type(_first(fields, b"content-type"), digest)
    encoding = _first(fields, b"content-transfer-encoding")
    if encoding is not None:
        encoding = _strip_comments(encoding).strip(_WSP_EOL).rstrip(b";").strip(_WSP_EOL)
    disposition: bytes | None = None
    disposition_params: Params = ()
    value = _first(fields, b"content-disposition")
    if value is not None:
        disposition = _strip_comments(value.partition(b";")[0]).strip(_WSP_EOL) or None
        if disposition is not None:
            disposition_params = _parse_params(value)
    language: tuple[bytes, ...] | None = None
    value = _first(fields, b"content-language")
    if value is not None:
        language = tuple(tag for tag in re.split(rb"[,\s]+", _strip_comments(value)) if tag)
    return _Mime(
        type=kind,
        subtype=subtype,
        params=params,
        encoding=encoding or b"7bit",
        id=_first(fields, b"content-id"),
        description=_first(fields, b"content-description"),
        disposition=disposition,
        disposition_params=disposition_params,
        language=language or None,
        location=_first(fields, b"content-location"),
    )


# Addresses (RFC 5322 §3.4, with the obsolete forms of §4.4 tolerated).

_SPECIALS: Final = frozenset(b"<>,:;@.")
_ATOM_STOP: Final = frozenset(b'<>,:;@."()[] \t\r\n')

_Token: TypeAlias = tuple[str, bytes]
"""(kind, text); kind: "atom", "quoted", "comment", "special" or "space" (a run of white space)."""


def _address_tokens(value: bytes) -> list[_Token]:
    """RFC 5322 lexical tokens of an address header; unterminated quotes and comments end it."""
    tokens: list[_Token] = []
    pos, size = 0, len(value)
    while pos < size:
        char = value[pos]
        if char in b" \t\r\n":
            if not tokens or tokens[-1][0] != "space":
                tokens.append(("space", b" "))
            pos += 1
        elif char == 0x22:  # '"'
            text, pos = _quoted(value, pos)
            tokens.append(("quoted", text))
        elif char == 0x28:  # '('
            depth, start = 1, pos + 1
            pos += 1
            while pos < size and depth:
                if value[pos] == 0x5C:
                    pos += 1
                elif value[pos] == 0x28:
                    depth += 1
                elif value[pos] == 0x29:
                    depth -= 1
                pos += 1
            tokens.append(("comment", value[start : pos - 1 if not depth else pos]))
        elif char == 0x5B:  # '[': a domain literal is one atom
            end = value.find(b"]", pos)
            end = size if end < 0 else end + 1
            tokens.append(("atom", value[pos:end]))
            pos = end
        elif char in _SPECIALS:
            tokens.append(("special", value[pos : pos + 1]))
            pos += 1
        else:
            start = pos
            while pos < size and value[pos] not in _ATOM_STOP:
                pos += 1
            if pos == start:  # a stray ")" or "]"
                pos += 1
                continue
            tokens.append(("atom", value[start:pos]))
    return tokens


def _words(tokens: list[_Token]) -> list[_Token]:
    """The tokens that carry text: no comments, no white space."""
    return [t for t in tokens if t[0] not in ("comment", "space")]


def _phrase(tokens: list[_Token]) -> bytes | None:
    """
    A display name as written: words and "." kept with the white space between them (one space
    for a run, comments count as white space), quoted-strings unquoted; None when empty.  So
    "Sandy M." stays "Sandy M." and "J.R.R. Tolkien" stays as it is (RFC 5322 §4.1 obs-phrase).
    """
    out = bytearray()
    space = False
    for kind, text in tokens:
        if kind in ("space", "comment"):
            space = bool(out)
            continue
        if space:
            out += b" "
        out += text
        space = False
    return bytes(out) if out else None


def _spec(tokens: list[_Token]) -> bytes:
    """An addr-spec piece as sent, quoted-strings re-quoted and white space and comments dropped."""
    out = bytearray()
    for kind, text in tokens:
        if kind == "quoted":
            out += b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        elif kind not in ("comment", "space"):
            out += text
    return bytes(out)


def _domain_end(tokens: list[_Token], start: int) -> int:
    """
    Where the domain that starts at C{tokens[start]} ends, for an addr-spec without angle
    brackets: atoms joined by "." (white space allowed around the dots, RFC 5322 §4.4
    obs-domain); white space between two atoms ends it, as in "a@b.test c@d.test".
    """
    end = start
    last = None  # kind of the last word taken: "atom" or "dot"
    for i in range(start, len(tokens)):
        kind, text = tokens[i]
        if kind in ("space", "comment"):
            continue
        if kind == "special" and text == b".":
            last = "dot"
        elif kind in ("atom", "quoted") and last != "atom":
            last = "atom"
        else:
            break
        end = i + 1
    return end


def _mailbox(tokens: list[_Token]) -> Address | None:
    """
    One mailbox: name-addr or addr-spec; None when there is nothing but comments.

    What cannot be an address is still reported the way Dovecot does, never as a group marker
    (RFC 3501 §7.4.2: a NIL host means group syntax): a display name with no address (C{Name <>},
    a lone quoted-string, several words without "@") is (name NIL "MISSING_MAILBOX"
    "MISSING_DOMAIN"); a single word without "@" is a local mailbox, (NIL NIL word
    "MISSING_DOMAIN").
    """
    words = _words(tokens)
    if not words:
        return None
    angle = next((i for i, t in enumerate(tokens) if t == ("special", b"<")), None)
    if angle is not None:
        name = _phrase(tokens[:angle])
        close = next(
            (i for i in range(angle + 1, len(tokens)) if tokens[i] == ("special", b">")),
            len(tokens),
        )
        inside = _words(tokens[angle + 1 : close])
    else:
        # An addr-spec's display name is a comment after it (``user@host (Name)``, the old
        # style); a comment before it is no name (as Dovecot reads it).
        last = max(i for i, t in enumerate(tokens) if t[0] not in ("space", "comment"))
        comments = [text for kind, text in tokens[last + 1 :] if kind == "comment"]
        name = (comments[-1].strip(_WSP_EOL) or None) if comments else None
        inside = tokens
    adl: bytes | None = None
    if inside and _words(inside)[:1] == [("special", b"@")]:
        # obs-route: "@a,@b:" before the addr-spec
        colon = next((i for i, t in enumerate(inside) if t == ("special", b":")), None)
        if colon is not None:
            adl, inside = _spec(inside[:colon]), inside[colon + 1 :]
    if angle is not None:
        at = max((i for i, t in enumerate(inside) if t == ("special", b"@")), default=None)
        if at is None:
            local = _spec(inside)
            if not local:
                if name is None:
                    return None  # "<>" alone: no address at all
                return Address(name, adl, MISSING_MAILBOX, MISSING_HOST)
            return Address(name, adl, local, MISSING_HOST)
        return Address(
            name,
            adl,
            _spec(inside[:at]) or MISSING_MAILBOX,
            _spec(inside[at + 1 :]) or MISSING_HOST,
        )
    at = next((i for i, t in enumerate(inside) if t == ("special", b"@")), None)
    if at is None:
        spec = _strip_space(inside)
        if all(kind == "atom" or (kind, text) == ("special", b".") for kind, text in spec):
            return Address(name, adl, _spec(spec), MISSING_HOST)  # "local", "john.doe"
        return Address(_phrase(inside), adl, MISSING_MAILBOX, MISSING_HOST)  # a name alone
    end = _domain_end(inside, at + 1)
    local, domain = _spec(inside[:at]), _spec(inside[at + 1 : end])
    return Address(name, adl, local or MISSING_MAILBOX, domain or MISSING_HOST)


def _strip_space(tokens: list[_Token]) -> list[_Token]:
    """C{tokens} without leading and trailing white space and comments."""
    words = [i for i, t in enumerate(tokens) if t[0] not in ("space", "comment")]
    return tokens[words[0] : words[-1] + 1] if words else []


def _address_list(value: bytes | None) -> tuple[Address, ...]:
    """
    An address-list as RFC 3501 §7.4.2 addresses: a group is a start marker (NIL NIL name NIL),
    its members, and an end marker (NIL NIL NIL NIL).
    """
    if value is None:
        return ()
    out: list[Address] = []
    current: list[_Token] = []
    in_angle = in_group = False

    def flush() -> None:
        mailbox = _mailbox(current)
        if mailbox is not None:
            out.append(mailbox)
        current.clear()

    for token in _address_tokens(value):
        if token[0] != "special" or in_angle and token[1] != b">":
            current.append(token)
        elif token[1] == b",":
            flush()
        elif token[1] == b":" and not in_group:
            out.append(Address(None, None, _phrase(current) or b"", None))
            current.clear()
            in_group = True
        elif token[1] == b";" and in_group:
            flush()
            out.append(Address(None, None, None, None))
            in_group = False
        else:
            in_angle = token[1] == b"<" or (in_angle and token[1] != b">")
            current.append(token)
    flush()
    if in_group:
        out.append(Address(None, None, None, None))
    return tuple(out)


def _envelope(fields: list[tuple[bytes, bytes]]) -> Envelope:
    """The ENVELOPE header fields of one message; the first of duplicated fields wins."""
    return Envelope(
        date=_first(fields, b"date"),
        subject=_first(fields, b"subject"),
        from_=_address_list(_first(fields, b"from")),
        sender=_address_list(_first(fields, b"sender")),
        reply_to=_address_list(_first(fields, b"reply-to")),
        to=_address_list(_first(fields, b"to")),
        cc=_address_list(_first(fields, b"cc")),
        bcc=_address_list(_first(fields, b"bcc")),
        in_reply_to=_first(fields, b"in-reply-to"),
        message_id=_first(fields, b"message-id"),
    )


# RFC 3501 §7.4.2 values.


def _addresses(addresses: tuple[Address, ...]) -> IMAPValue:
    if not addresses:
        return None
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def envelope(index: MessageIndex | Part) -> IMAPValue:
    """
    The ENVELOPE of a message (or of an encapsulated message's L{Part}), RFC 3501 §7.4.2:
    (date subject from sender reply-to to cc bcc in-reply-to message-id).

    Sender and Reply-To default to From when absent or empty; empty address lists are NIL.
    """
    part = index.root if isinstance(index, MessageIndex) else index
    env = part.envelope or Envelope()
    return [
        env.date,
        env.subject,
        _addresses(env.from_),
        _addresses(env.sender or env.from_),
        _addresses(env.reply_to or env.from_),
        _addresses(env.to),
        _addresses(env.cc),
        _addresses(env.bcc),
        env.in_reply_to,
        env.message_id,
    ]


def _param_list(params: Params) -> IMAPValue:
    if not params:
        return None
    flat: list[IMAPValue] = []
    for name, value in params:
        flat += [name, value]
    return flat


def _extension_tail(part: Part) -> list[IMAPValue]:
    disposition: IMAPValue = None
    if part.disposition is not None:
        disposition = [part.disposition, _param_list(part.disposition_params)]
    language: IMAPValue = list(part.language) if part.language else None
    return [disposition, language, part.location]


def bodystructure(index: MessageIndex | Part, extended: bool = True) -> IMAPValue:
    """
    The BODYSTRUCTURE (C{extended}) or BODY value of a message or part, RFC 3501 §7.4.2.

    A multipart is (part part ... subtype [params disposition language location]); any other
    part is (type subtype params id description encoding size ...), followed for text/* by its
    line count and for message/rfc822 by (envelope body lines), then with C{extended} by
    (md5 disposition language location).  MD5 is always NIL.
    """
    part = index.root if isinstance(index, MessageIndex) else index
    if part.children:
        value: list[IMAPValue] = [bodystructure(child, extended) for child in part.children]
        value.append(part.subtype)
        if extended:
            value += [_param_list(part.params), *_extension_tail(part)]
        return value
    params = part.params
    if part.type == b"text" and _param(params, b"charset") is None:
        params += ((b"charset", b"us-ascii"),)  # RFC 2045 §5.2: the default charset, made explicit
    value = [
        part.type,
        part.subtype,
        _param_list(params),
        part.id,
        part.description,
        part.encoding,
        part.body_length,
    ]
    if part.message is not None:
        value += [envelope(part.message), bodystructure(part.message, extended), part.lines]
    elif part.type == b"message" and part.subtype == b"rfc822":
        # RFC 3501 §9 body-type-msg: a MESSAGE/RFC822 body always carries an envelope, a body
        # and a line count.  One that is not parsed (encoded, which RFC 2046 §5.2.1 forbids, or
        # cut off) gets Dovecot's answer: an empty envelope and an empty text/plain body.
        empty = Part(part.body_offset, 0, 0, 0)
        value += [envelope(empty), bodystructure(empty, extended), part.lines]
    elif part.type == b"text":
        value.append(part.lines)
    if extended:
        value += [None, *_extension_tail(part)]
    return value


# FETCH sections (RFC 3501 §6.4.5).

_SECTION: Final = re.compile(
    rb"(?P<path>[1-9][0-9]*(?:\.[1-9][0-9]*)*)?"
    rb"(?:(?(path)\.)(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
    rb"(?P<rest>.*)",
    re.IGNORECASE | re.DOTALL,
)


def _field_names(rest: bytes) -> tuple[bytes, ...]:
    """The header-list "(" header-fld-name *(SP header-fld-name) ")" after HEADER.FIELDS."""
    rest = rest.strip()
    if not (rest.startswith(b"(") and rest.endswith(b")")):
        raise SectionSyntaxError("HEADER.FIELDS needs a parenthesised list of field names")
    names: list[bytes] = []
    inner = rest[1:-1]
    pos = 0
    while pos < len(inner):
        if inner[pos] in b" ":
            pos += 1
        elif inner[pos] == 0x22:
            name, pos = _quoted(inner, pos)
            names.append(name)
        else:
            end = inner.find(b" ", pos)
            end = len(inner) if end < 0 else end
            names.append(inner[pos:end])
            pos = end
    if not names or not all(_FIELD_NAME.fullmatch(name + b":") for name in names):
        raise SectionSyntaxError("bad header field name in HEADER.FIELDS")
    return tuple(names)


def resolve_section(index: MessageIndex, spec: bytes | str) -> Section | None:
    """
    Resolve a FETCH BODY[...] section specifier (what is between the brackets) to bytes.

    Raises L{SectionSyntaxError} for what is not RFC 3501 section-spec syntax.  Returns None when
    the syntax is fine but the message has no such part, or HEADER/TEXT names a part that is not
    a message/rfc822 (servers answer those with an empty string).  Part numbering follows
    RFC 3501 §6.4.5: a non-multipart message has one part, "1", its body; MIME of that part is
    the message header.
    """
    raw = spec.encode("ascii", "replace") if isinstance(spec, str) else spec
    match = _SECTION.fullmatch(raw)
    if match is None:  # cannot happen: the pattern ends in ".*"
        raise SectionSyntaxError(f"bad section specifier {raw!r}")
    path, text, rest = match.group("path"), match.group("text"), match.group("rest")
    text = text.upper() if text else None
    if text not in (b"HEADER.FIELDS", b"HEADER.FIELDS.NOT") and rest:
        raise SectionSyntaxError(f"bad section specifier {raw!r}")
    if text == b"MIME" and not path:
        raise SectionSyntaxError("MIME needs a part number")
    part: Part = index.root
    numbers = [int(n) for n in path.split(b".")] if path else []
    for position, number in enumerate(numbers, 1):
        more = position < len(numbers)
        if part.children:
            if number > len(part.children):
                return None
            part = part.children[number - 1]
        elif number != 1 or (more and part.message is None):
            # A part that is not a multipart has only a part 1: itself (so "2.1" of a leaf is
            # the leaf, as Dovecot's imap_msgpart_find has it); only a message/rfc822 has more.
            return None
        if more and part.message is not None:
            part = part.message  # the numbers that follow are inside the encapsulated message
    if text is None:
        if not path:
            return Section(0, index.size)
        return Section(part.body_offset, part.body_length)
    if text == b"MIME":
        return Section(part.header_offset, part.header_length)
    if path:
        if part.message is None:
            return None
        part = part.message
    if text == b"TEXT":
        return Section(part.body_offset, part.body_length)
    if text == b"HEADER":
        return Section(part.header_offset, part.header_length)
    return Section(
        part.header_offset, part.header_length, _field_names(rest), text == b"HEADER.FIELDS.NOT"
    )


# Serialisation.


def _b(value: bytes) -> str:
    return value.decode("latin-1")  # one code point per octet: lossless and JSON-safe


def _nb(value: bytes | None) -> str | None:
    return None if value is None else _b(value)


def _params_out(params: Params) -> list[list[str]]:
    return [[_b(name), _b(value)] for name, value in params]


def _addresses_out(addresses: tuple[Address, ...]) -> list[list[str | None]]:
    return [[_nb(a.name), _nb(a.adl), _nb(a.mailbox), _nb(a.host)] for a in addresses]


def _part_out(part: Part) -> dict[str, object]:
    out: dict[str, object] = {
        "h": [part.header_offset, part.header_length, part.body_length, part.lines],
        "t": [_b(part.type), _b(part.subtype), _params_out(part.params)],
        "e": _b(part.encoding),
    }
    for key, value in (("id", part.id), ("de", part.description), ("lo", part.location)):
        if value is not None:
            out[key] = _b(value)
    if part.disposition is not None:
        out["d"] = [_b(part.disposition), _params_out(part.disposition_params)]
    if part.language is not None:
        out["la"] = [_b(tag) for tag in part.language]
    if part.children:
        out["c"] = [_part_out(child) for child in part.children]
    if part.message is not None:
        out["m"] = _part_out(part.message)
    if part.envelope is not None:
        env = part.envelope
        out["env"] = [
            _nb(env.date),
            _nb(env.subject),
            *(
                _addresses_out(a)
                for a in (env.from_, env.sender, env.reply_to, env.to, env.cc, env.bcc)
            ),
            _nb(env.in_reply_to),
            _nb(env.message_id),
        ]
    return out


def index_bytes(stream: BinaryIO, size: int) -> bytes:
    """L{index_message} then L{index_to_json}: the index as the store keeps it."""
    return index_to_json(index_message(stream, size))


def index_to_json(index: MessageIndex) -> bytes:
    """The index as compact JSON (octets as latin-1 code points), tagged with L{FORMAT_VERSION}."""
    document = {"v": FORMAT_VERSION, "size": index.size, "root": _part_out(index.root)}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _o(value: object) -> bytes:
    if not isinstance(value, str):
        raise IndexFormatError(f"expected a string, got {type(value).__name__}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as error:
        raise IndexFormatError("string is not latin-1 octets") from error


def _no(value: object) -> bytes | None:
    return None if value is None else _o(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise IndexFormatError("expected a non-negative integer")
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise IndexFormatError("expected a list")
    return value


def _params_in(value: object) -> Params:
    pairs = [_list(pair) for pair in _list(value)]
    if any(len(pair) != 2 for pair in pairs):
        raise IndexFormatError("a parameter is not a pair")
    return tuple((_o(pair[0]), _o(pair[1])) for pair in pairs)


def _addresses_in(value: object) -> tuple[Address, ...]:
    rows = [_list(row) for row in _list(value)]
    if any(len(row) != 4 for row in rows):
        raise IndexFormatError("an address is not four fields")
    return tuple(Address(*(_no(item) for item in row)) for row in rows)


def _part_in(value: object) -> Part:
    if not isinstance(value, dict):
        raise IndexFormatError("a part is not an object")
    try:
        offsets = [_int(n) for n in _list(value["h"])]
        ctype = _list(value["t"])
        header_offset, header_length, body_length, lines = offsets
        kind, subtype, params = ctype
        envelope_: Envelope | None = None
        if "env" in value:
            env = _list(value["env"])
            if len(env) != 10:
                raise IndexFormatError("an envelope is not ten fields")
            from_, sender, reply_to, to, cc, bcc = (_addresses_in(a) for a in env[2:8])
            envelope_ = Envelope(
                date=_no(env[0]),
                subject=_no(env[1]),
                from_=from_,
                sender=sender,
                reply_to=reply_to,
                to=to,
                cc=cc,
                bcc=bcc,
                in_reply_to=_no(env[8]),
                message_id=_no(env[9]),
            )
        disposition = _list(value["d"]) if "d" in value else None
        if disposition is not None and len(disposition) != 2:
            raise IndexFormatError("a disposition is not a pair")
        return Part(
            header_offset=header_offset,
            header_length=header_length,
            body_length=body_length,
            lines=lines,
            type=_o(kind),
            subtype=_o(subtype),
            params=_params_in(params),
            id=_no(value.get("id")),
            description=_no(value.get("de")),
            encoding=_o(value["e"]),
            disposition=_o(disposition[0]) if disposition else None,
            disposition_params=_params_in(disposition[1]) if disposition else (),
            language=tuple(_o(t) for t in _list(value["la"])) if "la" in value else None,
            location=_no(value.get("lo")),
            children=tuple(_part_in(child) for child in _list(value.get("c", []))),
            message=_part_in(value["m"]) if "m" in value else None,
            envelope=envelope_,
        )
    except (KeyError, ValueError, TypeError) as error:
        if isinstance(error, IndexFormatError):
            raise
        raise IndexFormatError(f"damaged part: {error}") from error


INDEX_CACHE_SIZE: Final = 512
"""Parsed indexes kept by L{index_from_json}, most recently used first (they are immutable).  The
IMAP sessions keep their own by message id (core/imap_shared.py); this serves the other callers."""


def index_from_json(data: bytes | bytearray) -> MessageIndex:
    """
    Read back what L{index_to_json} wrote.  Raises L{IndexFormatError} for another version or
    damaged data: the caller indexes the message again.

    The last L{INDEX_CACHE_SIZE} results are kept, keyed by the stored bytes: a mail client lists
    the same messages again and again (Roundcube on every page), and reading an index back was
    the largest cost of ``FETCH 1:* (ENVELOPE)`` and of a header SEARCH (bench.imap).  A
    L{MessageIndex} is frozen all the way down, so sharing one is safe.
    """
    if type(data) is bytes:
        return _cached_index(data)
    return _index_from_json(data)


@functools.lru_cache(maxsize=INDEX_CACHE_SIZE)
def _cached_index(data: bytes) -> MessageIndex:
    return _index_from_json(data)


def _index_from_json(data: bytes | bytearray) -> MessageIndex:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise IndexFormatError(f"not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        raise IndexFormatError("unknown index format version")
    try:
        return MessageIndex(size=_int(document["size"]), root=_part_in(document["root"]))
    except (KeyError, RecursionError) as error:
        raise IndexFormatError(f"damaged index: {error}") from error
