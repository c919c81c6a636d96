# -*- test-case-name: tests.test_core_imap_fetch -*-
"""
The FETCH response for one message, as pure code: what to load, then the (item name, value)
pairs that L{strata_twisted.proto.imap_response.fetch_response_parts} encodes.

Two steps, so that only the FETCH items asked for are loaded (issue 4):

  1. L{plan_fetch} reads the requested L{FetchAttribute}s once per command and says what each
     message needs: only its L{MailMessage} (FLAGS, UID, MODSEQ, RFC822.SIZE, INTERNALDATE),
     its MIME index (ENVELOPE, BODYSTRUCTURE, BODY, any body section but the whole message), or
     bytes of its stored body (L{body_ranges} lists them, as (offset, length)), and whether the
     fetch sets C{\\Seen} (RFC 3501 §6.4.5).
  2. L{build_fetch} takes the message, its index (when needed) and a reader C{(offset, length)
     -> bytes}, and returns the items in the order asked (RFC 3501 §7.4.2).  A body range longer
     than the streaming threshold is never read: it comes back as a L{Streamed} whose source is a
     L{ByteRange}, for the server to copy from the store straight to the transport.

A section the message does not have is answered with an empty string, as Dovecot does
(C{imap_msgpart_open} in C{src/lib-imap-storage/imap-msgpart.c}: "MIME part not found. return an
empty part.").

This module never touches a socket, a reactor, a clock or a store, and never parses a body: the
MIME index (DESIGN decision 9, "Parse once") says where everything is.
"""

from __future__ import annotations

import datetime
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, cast

from strata_twisted.model import MailMessage
from strata_twisted.proto.imap_parser import FetchAttribute, Section
from strata_twisted.proto.imap_response import (
    Atom,
    Raw,
    Streamed,
    Value,
    encode_value,
    fetch_item_name,
)
from strata_twisted.proto.mime import (
    IMAPValue,
    MessageIndex,
    SectionSyntaxError,
    bodystructure,
    envelope,
    resolve_section,
)

__all__ = [
    "STREAM_THRESHOLD",
    "ByteRange",
    "FetchPlan",
    "FetchResult",
    "Reader",
    "body_ranges",
    "build_fetch",
    "encode_body",
    "encode_envelope",
    "filter_header",
    "format_internal_date",
    "literal_safe",
    "plan_fetch",
]

STREAM_THRESHOLD: Final = 256 * 1024
"""Body ranges longer than this (octets) are streamed from the store, never held in memory."""

SEEN: Final = "\\Seen"

Reader = Callable[[int, int], bytes]
"""Reads C{length} octets from C{offset} of the stored message (the server's store access)."""

# Items answered from the MailMessage alone, and items answered from the MIME index alone.
_MESSAGE_ITEMS: Final = frozenset({"FLAGS", "UID", "MODSEQ", "RFC822.SIZE", "INTERNALDATE"})
_INDEX_ITEMS: Final = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY"})
# RFC 3501 §6.4.5: RFC822 is BODY[], RFC822.TEXT is BODY[TEXT] (both set \Seen), RFC822.HEADER
# is BODY.PEEK[HEADER] (does not).
_RFC822_SECTIONS: Final = {
    "RFC822": (Section(), False),
    "RFC822.TEXT": (Section((), "TEXT"), False),
    "RFC822.HEADER": (Section((), "HEADER"), True),
}
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


@dataclass(frozen=True)
class ByteRange:
    """
    C{length} octets from C{offset} of the stored message.  C{streamed}: too large to read into
    memory; L{build_fetch} answers it with a L{Streamed} whose C{source} is this range.
    """

    offset: int
    length: int
    streamed: bool = False


@dataclass(frozen=True)
class FetchPlan:
    """
    What one FETCH command needs from each message, from L{plan_fetch}.

    C{attributes}: the items to answer, in the order asked, duplicates dropped, UID added for UID
    FETCH.  C{needs_index}: the MIME index must be loaded.  C{needs_body}: some stored body bytes
    must be read or streamed (L{body_ranges} says which).  C{sets_seen}: the fetch sets C{\\Seen}.
    C{condstore}: CONDSTORE is enabled, so a flag change reports MODSEQ (RFC 7162 §3.2).
    """

    attributes: tuple[FetchAttribute, ...]
    needs_index: bool
    needs_body: bool
    sets_seen: bool
    condstore: bool = False


@dataclass(frozen=True)
class FetchResult:
    """
    The items of one FETCH response and whether it added C{\\Seen}, which the caller must then
    store (the FLAGS item, if any, already shows it).
    """

    items: list[tuple[str, Value]]
    seen_added: bool


def _body_section(attribute: FetchAttribute) -> tuple[Section, bool] | None:
    """The body section an item reads and whether it is a peek; None for the other items."""
    if attribute.name in _RFC822_SECTIONS:
        return _RFC822_SECTIONS[attribute.name]
    if attribute.name == "BODY" and attribute.section is not None:
        return attribute.section, attribute.peek
    return None


def plan_fetch(
    attributes: Iterable[FetchAttribute], *, uid: bool = False, condstore: bool = False
) -> FetchPlan:
    """
    Plan a FETCH of C{attributes} (macros already expanded by the parser).

    C{uid}: the command was UID FETCH, so UID is always answered (RFC 3501 §6.4.8).  C{condstore}:
    CONDSTORE is enabled on the session (RFC 7162 §3.1).
    """
    ordered: list[FetchAttribute] = []
    for attribute in attributes:
        if attribute not in ordered:
            ordered.append(attribute)
    if uid and FetchAttribute("UID") not in ordered:
        ordered.append(FetchAttribute("UID"))
    needs_index = needs_body = sets_seen = False
    for attribute in ordered:
        body = _body_section(attribute)
        if body is not None:
            section, peek = body
            needs_body = True
            # The whole message (BODY[], RFC822) is located by its size alone.
            needs_index |= section != Section()
            sets_seen |= not peek
        elif attribute.name in _INDEX_ITEMS:
            needs_index = True
        elif attribute.name not in _MESSAGE_ITEMS:
            raise ValueError(f"unknown FETCH item {attribute.name}")
    return FetchPlan(tuple(ordered), needs_index, needs_body, sets_seen, condstore)


def _section_spec(section: Section) -> str:
    spec = ".".join(str(n) for n in section.part)
    if section.text is not None:
        spec = f"{spec}.{section.text}" if spec else section.text
    if section.fields:
        spec += " (" + " ".join(section.fields) + ")"
    return spec


@dataclass(frozen=True)
class _Resolved:
    """Where an item's bytes are: a range, the HEADER.FIELDS filter, or nowhere (missing part)."""

    offset: int
    length: int
    fields: tuple[bytes, ...] | None = None
    exclude: bool = False


_MISSING: Final = _Resolved(0, 0)


def _resolve(section: Section, message: MailMessage, index: MessageIndex | None) -> _Resolved:
    if section == Section():
        return _Resolved(0, message.size)
    if index is None:
        raise ValueError("this FETCH needs the message's MIME index (see FetchPlan.needs_index)")
    try:
        found = resolve_section(index, _section_spec(section))
    except SectionSyntaxError:  # the parser already checked the syntax; answer as for a miss
        return _MISSING
    if found is None:
        return _MISSING
    return _Resolved(found.offset, found.length, found.fields, found.exclude)


def _partial(offset: int, length: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    """
    RFC 3501 §6.4.5: ``<origin.octets>`` is the substring from origin, at most octets long; an
    origin beyond the end gives the empty string.
    """
    if partial is None:
        return offset, length
    origin, octets = partial
    start = min(origin, length)
    return offset + start, min(octets, length - start)


def body_ranges(
    plan: FetchPlan,
    message: MailMessage,
    index: MessageIndex | None,
    *,
    stream_threshold: int = STREAM_THRESHOLD,
) -> tuple[ByteRange, ...]:
    """
    The stored byte ranges L{build_fetch} will ask for, in item order (empty ones left out):
    those with C{streamed} set are not read but answered as L{Streamed}.  A server can use this
    to read the small ranges in one go and check the large ones exist.
    """
    ranges: list[ByteRange] = []
    for attribute in plan.attributes:
        body = _body_section(attribute)
        if body is None:
            continue
        resolved = _resolve(body[0], message, index)
        if resolved.fields is not None:  # filtered in memory, then cut
            if resolved.length:
                ranges.append(ByteRange(resolved.offset, resolved.length))
            continue
        offset, length = _partial(resolved.offset, resolved.length, attribute.partial)
        if length:
            ranges.append(ByteRange(offset, length, length > stream_threshold))
    return tuple(ranges)


_LINE: Final = re.compile(rb"[^\n]*\n|[^\n]+")


def filter_header(block: bytes, names: Iterable[bytes | str], *, exclude: bool = False) -> bytes:
    """
    The fields of a raw header block named in C{names} (or, with C{exclude}, those not named),
    as stored, followed by the blank line that ends a header (RFC 3501 §6.4.5 HEADER.FIELDS and
    HEADER.FIELDS.NOT).

    Names match case-insensitively; a folded continuation line (starting with SP or HTAB) belongs
    to the field above it; a line that is no field (no colon) is kept only by C{exclude}.  The
    blank line is the block's own; a block without one (a message that is all header: RFC 3501
    §6.4.5, "the blank line is included in all header fetches, except in the case of a message
    which has no body and no blank line") gets none.
    """
    wanted = {(n.encode("ascii", "replace") if isinstance(n, str) else n).lower() for n in names}
    out: list[bytes] = []
    keep = exclude
    blank = b""
    for line in _LINE.findall(block):
        if line in (b"\r\n", b"\n"):
            blank = line
            break
        if line[:1] not in (b" ", b"\t"):
            colon = line.find(b":")
            name = line[:colon].strip().lower() if colon > 0 else None
            keep = exclude if name is None else (name in wanted) != exclude
        if keep:
            out.append(line)
    if out and not out[-1].endswith(b"\n"):
        out.append(b"\r\n")  # a header block cut short by the end of the message
    return b"".join(out) + blank


def literal_safe(data: bytes) -> bytes:
    """
    Message bytes fit for an IMAP literal: NUL is the one octet a literal may not carry (RFC 3501
    §9, CHAR8 is %x01-ff), so each NUL becomes 0x80, as Dovecot does (imap-msgpart.c, "IMAP
    literals must not contain NULs"); sizes do not change.
    """
    return data.replace(b"\x00", b"\x80") if b"\x00" in data else data


def format_internal_date(timestamp: float, tz: datetime.tzinfo = datetime.UTC) -> str:
    """
    RFC 3501 date-time: ``"17-Jul-1996 02:44:25 -0700"`` (a day below 10 is space-padded, month
    names are English whatever the locale).
    """
    moment = datetime.datetime.fromtimestamp(int(timestamp), tz)
    offset = moment.utcoffset() or datetime.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return (
        f"{moment.day:2d}-{_MONTHS[moment.month - 1]}-{moment.year:04d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {sign}{hours:02d}{mins:02d}"
    )


def _value(value: IMAPValue) -> Value:
    """An index value as an encoder value: every IMAPValue is one (lists differ only in type)."""
    return cast(Value, value)


def encode_envelope(value: IMAPValue) -> bytes:
    """
    An ENVELOPE value (from L{envelope}) in wire form.  Its address lists, unlike any other
    list, have no space between their addresses: RFC 3501 §9, ``env-from = "(" 1*address ")" /
    nil`` (and so on for sender, reply-to, to, cc and bcc), as Dovecot writes them.
    """
    if not isinstance(value, list) or len(value) != 10:
        return encode_value(_value(value))
    fields = []
    for position, field in enumerate(value):
        if 2 <= position <= 7 and isinstance(field, list):
            fields.append(b"(" + b"".join(encode_value(_value(a)) for a in field) + b")")
        else:
            fields.append(encode_value(_value(field)))
    return b"(" + b" ".join(fields) + b")"


def encode_body(value: IMAPValue) -> bytes:
    """
    A BODY or BODYSTRUCTURE value (from L{bodystructure}) in wire form.  Unlike any other list,
    a multipart's parts follow each other with no space between them: RFC 3501 §9,
    ``body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]``, as Dovecot writes it.  The
    envelope and body inside a message/rfc822 part (its 8th and 9th fields) follow their rules.
    """
    if not isinstance(value, list):
        return encode_value(_value(value))
    if value and isinstance(value[0], list):
        count = next((i for i, v in enumerate(value) if not isinstance(v, list)), len(value))
        parts = b"".join(encode_body(child) for child in value[:count])
        rest = b" ".join(encode_value(_value(v)) for v in value[count:])
        return b"(" + parts + (b" " + rest if rest else b"") + b")"
    is_message = len(value) > 9 and value[0] == b"message" and value[1] == b"rfc822"
    fields = []
    for position, field in enumerate(value):
        if is_message and position == 7:
            fields.append(encode_envelope(field))
        elif is_message and position == 8:
            fields.append(encode_body(field))
        else:
            fields.append(encode_value(_value(field)))
    return b"(" + b" ".join(fields) + b")"


ENCODED_CACHE_SIZE: Final = 4096
"""Messages whose ENVELOPE, BODY and BODYSTRUCTURE are kept encoded, most recently used first."""

_encoded: OrderedDict[tuple[int, str], tuple[MessageIndex, Raw]] = OrderedDict()


def _encoded_item(index: MessageIndex, name: str) -> Raw:
    """
    ENVELOPE, BODY or BODYSTRUCTURE of `index` in wire form, encoded once per index object: the
    parsed indexes are shared (L{strata_twisted.proto.mime.index_from_json} keeps them), and
    encoding them again for every ``FETCH 1:* (ENVELOPE)`` was its largest cost (bench.imap).
    The entry holds the index itself, so its id() cannot be reused while it is cached.
    """
    key = (id(index), name)
    hit = _encoded.get(key)
    if hit is not None and hit[0] is index:
        _encoded.move_to_end(key)
        return hit[1]
    if name == "ENVELOPE":
        raw = Raw(encode_envelope(envelope(index)))
    else:
        raw = Raw(encode_body(bodystructure(index, extended=name == "BODYSTRUCTURE")))
    _encoded[key] = (index, raw)
    if len(_encoded) > ENCODED_CACHE_SIZE:
        _encoded.popitem(last=False)
    return raw


def flag_atoms(flags: Iterable[str]) -> tuple[Atom, ...]:
    """System flags first, then keywords, each sorted: a stable order for clients and tests."""
    return tuple(Atom(f) for f in sorted(flags, key=lambda f: (not f.startswith("\\"), f)))


def _body_value(
    attribute: FetchAttribute,
    section: Section,
    message: MailMessage,
    index: MessageIndex | None,
    read: Reader,
    stream_threshold: int,
) -> Value:
    resolved = _resolve(section, message, index)
    if resolved.fields is not None:
        block = read(resolved.offset, resolved.length) if resolved.length else b""
        data = literal_safe(filter_header(block, resolved.fields, exclude=resolved.exclude))
        start, length = _partial(0, len(data), attribute.partial)
        return data[start : start + length]
    offset, length = _partial(resolved.offset, resolved.length, attribute.partial)
    if length > stream_threshold:
        return Streamed(length, ByteRange(offset, length, streamed=True))
    if not length:
        return b""
    data = read(offset, length)
    if len(data) != length:
        raise ValueError(f"reader returned {len(data)} octets for a range of {length}")
    return literal_safe(data)


def build_fetch(
    plan: FetchPlan,
    message: MailMessage,
    index: MessageIndex | None,
    read: Reader,
    *,
    tz: datetime.tzinfo = datetime.UTC,
    flags_changed: bool = False,
    stream_threshold: int = STREAM_THRESHOLD,
) -> FetchResult:
    """
    The FETCH items for one message, in the order of C{plan.attributes}, as (name, value) pairs
    for L{strata_twisted.proto.imap_response.fetch_response_parts}.

    C{index} may be None unless C{plan.needs_index}; C{read} is only called for body ranges of at
    most C{stream_threshold} octets.  C{tz} is the zone INTERNALDATE is written in.

    When the plan sets C{\\Seen} and the message lacks it, FLAGS shows it and the result says
    C{seen_added}: the caller stores it.  A flag change (that, or C{flags_changed} when the caller
    already stored it and passes the updated message) adds FLAGS when not asked for, and with
    CONDSTORE, MODSEQ too (RFC 3501 §6.4.5, RFC 7162 §3.2): pass the message as updated to
    report the new modseq.
    """
    if plan.needs_index and index is None:
        raise ValueError("this FETCH needs the message's MIME index (see FetchPlan.needs_index)")
    flags = set(message.flags)
    seen_added = plan.sets_seen and SEEN not in flags
    if seen_added:
        flags.add(SEEN)
    changed = seen_added or flags_changed
    items: list[tuple[str, Value]] = []
    names: set[str] = set()
    for attribute in plan.attributes:
        names.add(attribute.name)
        body = _body_section(attribute)
        value: Value
        if body is not None:
            name = attribute.name if attribute.section is None else fetch_item_name(attribute)
            value = _body_value(attribute, body[0], message, index, read, stream_threshold)
            items.append((name, value))
            continue
        match attribute.name:
            case "FLAGS":
                value = flag_atoms(flags)
            case "UID":
                value = message.uid
            case "MODSEQ":
                value = (message.modseq,)  # RFC 7162 §3.1.4: MODSEQ (n)
            case "RFC822.SIZE":
                value = message.size
            case "INTERNALDATE":
                value = format_internal_date(message.internal_date, tz)
            case "ENVELOPE" | "BODYSTRUCTURE" | "BODY":
                assert index is not None
                value = _encoded_item(index, attribute.name)
            case _:
                raise ValueError(f"unknown FETCH item {attribute.name}")
        items.append((attribute.name, value))
    if changed and "FLAGS" not in names:
        items.append(("FLAGS", flag_atoms(flags)))
    if changed and plan.condstore and "MODSEQ" not in names:
        items.append(("MODSEQ", (message.modseq,)))
    return FetchResult(items, seen_added)
