# -*- test-case-name: tests.test_proto_imap_response -*-
"""
IMAP4rev1 server responses as bytes: status responses with response codes, data responses, the
continuation request, and the rules for writing strings (RFC 3501 §4, §7, §9).

Values are written by type: None is NIL, an int a number, an L{Atom} as itself, str or bytes as the
shortest safe string (an atom where the grammar allows one, else quoted, else a literal: 8-bit
octets, CR, LF, NUL or great length always get a literal), a list or tuple as a parenthesized list,
and L{Raw} as pre-encoded bytes (an ENVELOPE or BODYSTRUCTURE computed at delivery).  A large body
is never built into one bytes object: L{Streamed} stands for it, and L{fetch_response_parts} leaves
a place for the server to write its octets.

This module only builds bytes.  It never reads from or writes to a transport, and nothing a caller
passes as text can end a response line early: CR, LF and other controls in human-readable text are
replaced, and every string value is written in a form that carries its octets exactly.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from strata_twisted.proto.imap_parser import FetchAttribute, encode_mailbox_name

__all__ = [
    "Atom",
    "Raw",
    "ResponseCode",
    "StatusName",
    "Streamed",
    "ThreadNode",
    "Value",
    "capability_response",
    "compact_sequence_set",
    "continuation",
    "continuation_challenge",
    "enabled_response",
    "encode_astring",
    "encode_mailbox",
    "encode_string",
    "encode_value",
    "esearch_response",
    "exists_response",
    "expunge_response",
    "fetch_item_name",
    "fetch_response",
    "fetch_response_parts",
    "flags_response",
    "id_response",
    "list_response",
    "recent_response",
    "search_response",
    "sort_response",
    "status_data_response",
    "status_response",
    "thread_response",
]

StatusName: TypeAlias = Literal["OK", "NO", "BAD", "BYE", "PREAUTH"]


@dataclass(frozen=True)
class Atom:
    """A value written as it is: a flag (``\\Seen``), a capability, a sequence set ``1:3,5``."""

    text: str

    def __post_init__(self) -> None:
        if not _ATOM_LIKE.fullmatch(self.text):
            raise ValueError(f"{self.text!r} cannot be written as an atom")


@dataclass(frozen=True)
class Raw:
    """Bytes already in wire form, written unchanged (a cached ENVELOPE or BODYSTRUCTURE)."""

    data: bytes


@dataclass(frozen=True)
class Streamed:
    """
    A literal of ``size`` octets whose content the server writes itself (a large body part).

    L{fetch_response_parts} writes the ``{size}`` header, then leaves this object in its output
    where exactly ``size`` octets must follow; ``source`` is whatever the server needs to find them.
    """

    size: int
    source: object = None


Value: TypeAlias = (
    "None | int | str | bytes | Atom | Raw | Streamed | list[Value] | tuple[Value, ...]"
)
_Part: TypeAlias = bytes | Streamed

# RFC 3501 §9: ATOM-CHAR is any printable ASCII but the atom-specials ( ) { SP % * " \ ];
# ASTRING-CHAR adds "]".
_ATOM_CHAR: Final = (
    "[" + re.escape("".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '(){%*"\\]')) + "]"
)
_ASTRING: Final = re.compile((_ATOM_CHAR[:-1] + "\\]]+").encode("ascii"))
# What an Atom may be: an atom, a flag (a leading "\"), or "\*" in PERMANENTFLAGS.
_ATOM_LIKE: Final = re.compile(r"\\?\*|\\?" + _ATOM_CHAR + "+")
# A quoted string may hold printable ASCII; controls, 8-bit and CR/LF need a literal.
_QUOTABLE: Final = re.compile(rb"[\x20-\x7e]*")
_MAX_QUOTED: Final = 1024  # longer strings go as literals, easier on clients' line buffers
_UNSAFE_TEXT: Final = re.compile(r"[^\x20-\x7e]")


def _text(text: str) -> str:
    """Human-readable resp-text: one line of printable ASCII, never empty."""
    return _UNSAFE_TEXT.sub("?", text) or "Done"


# -- strings and values ---------------------------------------------------------------------------


def encode_string(value: str | bytes) -> bytes:
    """
    A string as a quoted string when it is short printable ASCII, else as a literal (RFC 3501 §4.3).

    A str is written as UTF-8.  Inside quotes only ``"`` and ``\\`` are escaped; anything with CR,
    LF, NUL, other controls or 8-bit octets, or longer than 1 KiB, goes as ``{n}`` CRLF octets.
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) <= _MAX_QUOTED and _QUOTABLE.fullmatch(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def encode_astring(value: str | bytes) -> bytes:
    """An astring: bare when every octet is an ASTRING-CHAR (and it is not NIL), else a string."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if _ASTRING.fullmatch(data) and data.upper() != b"NIL":
        return data
    return encode_string(data)


def encode_mailbox(name: str) -> bytes:
    """A mailbox name in modified UTF-7 (RFC 3501 §5.1.3), as an astring."""
    return encode_astring(encode_mailbox_name(name))


def encode_value(value: Value) -> bytes:
    """One value in wire form (see the module docstring); L{Streamed} is not allowed here."""
    parts = _encode_parts(value)
    if any(isinstance(part, Streamed) for part in parts):
        raise ValueError("a Streamed value needs fetch_response_parts")
    return b"".join(part for part in parts if isinstance(part, bytes))


def _encode_parts(value: Value) -> list[_Part]:
    out: list[_Part] = []
    _encode_into(value, out)
    return _merged(out)


def _merged(parts: list[_Part]) -> list[_Part]:
    """Join neighbouring byte strings, so the caller gets few, large writes."""
    merged: list[_Part] = []
    for part in parts:
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        else:
            merged.append(part)
    return merged


def _encode_into(value: Value, out: list[_Part]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise TypeError("a bool is not an IMAP value")
    elif isinstance(value, int):
        if value < 0:
            raise ValueError("IMAP numbers are never negative")
        out.append(b"%d" % value)
    elif isinstance(value, str | bytes):
        out.append(encode_string(value))
    elif isinstance(value, Atom):
        out.append(value.text.encode("ascii"))
    elif isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, Streamed):
        out.append(b"{%d}\r\n" % value.size)
        out.append(value)
    else:
        out.append(b"(")
        for i, item in enumerate(value):
            if i:
                out.append(b" ")
            _encode_into(item, out)
        out.append(b")")


# -- sequence sets --------------------------------------------------------------------------------


def compact_sequence_set(numbers: Iterable[int], *, keep_order: bool = False) -> str:
    """
    Numbers as a compact sequence set: ``[1, 2, 3, 5]`` is ``1:3,5``.

    By default the numbers are sorted and duplicates dropped.  With ``keep_order`` only runs that
    already ascend by one are joined, so the set lists the numbers in the order given, as the two
    sets of COPYUID must (RFC 4315 §3: the n-th source UID became the n-th destination UID).
    """
    values = list(numbers) if keep_order else sorted(set(numbers))
    if any(n < 1 for n in values):
        raise ValueError("sequence numbers and UIDs start at 1")
    if not values:
        raise ValueError("a sequence set cannot be empty")
    runs: list[list[int]] = []
    for n in values:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


# -- status responses -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseCode:
    """
    A response code (RFC 3501 §7.1 and extensions), written ``[NAME arg ...]``.

    The constructors below cover the codes Strata sends; ``args`` are L{Value}s.
    """

    name: str
    args: tuple[Value, ...] = ()

    def __post_init__(self) -> None:
        Atom(self.name)  # raises for a name that is not an atom

    def to_bytes(self) -> bytes:
        parts = [self.name.encode("ascii")] + [encode_value(arg) for arg in self.args]
        return b"[" + b" ".join(parts) + b"]"

    @classmethod
    def simple(cls, name: str) -> ResponseCode:
        """A code without arguments: ALERT, TRYCREATE, UNAVAILABLE, READ-ONLY, TOOBIG..."""
        return cls(name)

    @classmethod
    def number(cls, name: str, value: int) -> ResponseCode:
        """UIDVALIDITY, UIDNEXT, UNSEEN, HIGHESTMODSEQ: a code with one number."""
        return cls(name, (value,))

    @classmethod
    def capability(cls, capabilities: Iterable[str]) -> ResponseCode:
        return cls("CAPABILITY", tuple(Atom(c) for c in capabilities))

    @classmethod
    def permanent_flags(cls, flags: Iterable[str]) -> ResponseCode:
        """PERMANENTFLAGS; include ``\\*`` when clients may create keywords."""
        return cls("PERMANENTFLAGS", (tuple(Atom(f) for f in flags),))

    @classmethod
    def bad_charset(cls, charsets: Iterable[str]) -> ResponseCode:
        return cls("BADCHARSET", (tuple(Atom(c) for c in charsets),))

    @classmethod
    def append_uid(cls, uidvalidity: int, uid: int) -> ResponseCode:
        """RFC 4315 §3: ``[APPENDUID uidvalidity uid]``."""
        return cls("APPENDUID", (uidvalidity, uid))

    @classmethod
    def copy_uid(
        cls, uidvalidity: int, source: Sequence[int], destination: Sequence[int]
    ) -> ResponseCode:
        """RFC 4315 §3: ``[COPYUID uidvalidity source-set dest-set]``, pairs kept in order."""
        if len(source) != len(destination):
            raise ValueError("COPYUID needs one destination UID per source UID")
        return cls(
            "COPYUID",
            (
                uidvalidity,
                Atom(compact_sequence_set(source, keep_order=True)),
                Atom(compact_sequence_set(destination, keep_order=True)),
            ),
        )

    @classmethod
    def modified(cls, numbers: Iterable[int]) -> ResponseCode:
        """RFC 7162 §3.1.3: ``[MODIFIED set]`` for STORE ... UNCHANGEDSINCE failures."""
        return cls("MODIFIED", (Atom(compact_sequence_set(numbers)),))


def status_response(
    tag: str | None, status: StatusName, text: str, code: ResponseCode | None = None
) -> bytes:
    """
    ``<tag> <status> [code] text`` CRLF; tag None writes the untagged ``*``.

    BYE and PREAUTH are only ever untagged (RFC 3501 §7.1.4, §7.1.5).
    """
    if tag is None:
        prefix = b"*"
    elif status in ("BYE", "PREAUTH"):
        raise ValueError(f"{status} is always untagged")
    elif not _ASTRING.fullmatch(tag.encode("ascii", "replace")) or "+" in tag:
        raise ValueError(f"{tag!r} is not a valid tag")
    else:
        prefix = tag.encode("ascii")
    line = prefix + b" " + status.encode("ascii") + b" "
    if code is not None:
        line += code.to_bytes() + b" "
    return line + _text(text).encode("ascii") + b"\r\n"


def continuation(text: str = "Ready") -> bytes:
    """The command continuation request ``+ text`` (RFC 3501 §7.5)."""
    return b"+ " + _text(text).encode("ascii") + b"\r\n"


def continuation_challenge(challenge: bytes) -> bytes:
    """An AUTHENTICATE challenge, base64 (RFC 3501 §6.2.2); empty for an empty challenge."""
    return b"+ " + base64.b64encode(challenge) + b"\r\n"


# -- data responses -------------------------------------------------------------------------------


def _untagged(*parts: bytes) -> bytes:
    return b"* " + b" ".join(parts) + b"\r\n"


def _atoms(words: Iterable[str]) -> list[bytes]:
    return [Atom(word).text.encode("ascii") for word in words]


def capability_response(capabilities: Iterable[str]) -> bytes:
    """``* CAPABILITY IMAP4rev1 ...``."""
    return _untagged(b"CAPABILITY", *_atoms(capabilities))


def enabled_response(capabilities: Iterable[str]) -> bytes:
    """``* ENABLED ...`` (RFC 5161 §3.2), possibly with no capability."""
    return _untagged(b"ENABLED", *_atoms(capabilities))


def flags_response(flags: Iterable[str]) -> bytes:
    """``* FLAGS (\\Answered ...)``."""
    return _untagged(b"FLAGS", encode_value(tuple(Atom(f) for f in flags)))


def exists_response(count: int) -> bytes:
    return _untagged(b"%d" % count, b"EXISTS")


def recent_response(count: int) -> bytes:
    return _untagged(b"%d" % count, b"RECENT")


def expunge_response(sequence_number: int) -> bytes:
    return _untagged(b"%d" % sequence_number, b"EXPUNGE")


def list_response(
    flags: Iterable[str],
    delimiter: str | None,
    mailbox: str,
    *,
    command: Literal["LIST", "LSUB"] = "LIST",
    extended: Iterable[tuple[str, Value]] = (),
) -> bytes:
    """
    ``* LIST (\\HasNoChildren \\Sent) "/" Sent``: attributes, the hierarchy delimiter (None is NIL
    for a flat namespace) and the name in modified UTF-7.

    ``extended`` are RFC 5258 §6 extended data items, (tag, value) pairs written after the name
    as one list, ``* LIST () "/" Foo (CHILDINFO ("SUBSCRIBED"))``; none writes no list.  Send them
    only to a client that used the extended LIST syntax (RFC 5258 §3).
    """
    attributes = encode_value(tuple(Atom(f) for f in flags))
    separator = b"NIL" if delimiter is None else encode_string(delimiter)
    parts = [command.encode("ascii"), attributes, separator, encode_mailbox(mailbox)]
    items = [encode_astring(tag) + b" " + encode_value(value) for tag, value in extended]
    if items:
        parts.append(b"(" + b" ".join(items) + b")")
    return _untagged(*parts)


def status_data_response(mailbox: str, items: Iterable[tuple[str, int]]) -> bytes:
    """``* STATUS name (MESSAGES 3 UIDNEXT 4)``."""
    values: list[Value] = []
    for name, number in items:
        values += [Atom(name), number]
    return _untagged(b"STATUS", encode_mailbox(mailbox), encode_value(values))


def search_response(numbers: Iterable[int], modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3``, with ``(MODSEQ n)`` after a CONDSTORE search (RFC 7162 §3.1.5)."""
    parts = [b"SEARCH"] + [b"%d" % n for n in numbers]
    if modseq is not None:
        parts.append(b"(MODSEQ %d)" % modseq)
    return _untagged(*parts)


def sort_response(numbers: Iterable[int]) -> bytes:
    """``* SORT 2 3 6`` (RFC 5256 §4), in the order given."""
    return _untagged(b"SORT", *[b"%d" % n for n in numbers])


@dataclass(frozen=True)
class ThreadNode:
    """
    One member of a THREAD response (RFC 5256 §4): a message number (sequence number or UID), or
    None for a dummy, a parent that is not among the results (its children are then siblings
    under no message: ``((3)(5))``), and the node's children in order.  A reply chain can be
    thousands deep: L{thread_response} walks it without recursion, but comparing or printing
    such a tree (the dataclass's own methods) recurses.
    """

    number: int | None
    children: tuple[ThreadNode, ...] = ()


def _real_children(children: Iterable[ThreadNode]) -> list[ThreadNode]:
    """The children with every dummy among them replaced by its own children, in order."""
    out: list[ThreadNode] = []
    pending = list(children)[::-1]
    while pending:
        node = pending.pop()
        if node.number is None:
            pending.extend(reversed(node.children))
        else:
            out.append(node)
    return out


def _number(node: ThreadNode) -> bytes:
    assert node.number is not None  # _real_children leaves no dummies
    return b"%d" % node.number


def thread_response(threads: Iterable[ThreadNode]) -> bytes:
    """
    ``* THREAD (2)(3 6 (4 23)(44 7 96))`` (RFC 5256 §4): each thread a parenthesized list, a
    chain of only children written flat (``3 6``), where a message has several children each
    child's sub-thread in its own list, one after the other (``thread-nested = 2*thread-list``),
    and a dummy at the top with several children as a list of their lists (``((3)(5))``).  A
    dummy anywhere else, or with one child, stands aside for its children; one without any is
    left out.  The tree is walked without recursion, so a reply chain of any length is written.
    """
    out: list[bytes] = []
    # A stack of what is still to write: bytes as they are, a ThreadNode as its thread-members.
    for root in threads:
        members = _real_children([root]) if root.number is None else [root]
        if not members:
            continue
        pending: list[bytes | ThreadNode] = [b")"]
        if len(members) == 1:
            pending.append(members[0])
        else:
            for child in reversed(members):
                pending += [b")", child, b"("]
        out.append(b"(")
        while pending:
            item = pending.pop()
            if isinstance(item, bytes):
                out.append(item)
                continue
            # thread-members: the number, the numbers of a chain of only children, then the
            # sub-threads of the first message with several.
            numbers = [_number(item)]
            children = _real_children(item.children)
            while len(children) == 1:
                numbers.append(_number(children[0]))
                children = _real_children(children[0].children)
            out.append(b" ".join(numbers))
            if children:
                out.append(b" ")
                for child in reversed(children):
                    pending += [b")", child, b"("]
    return _untagged(b"THREAD", b"".join(out)) if out else _untagged(b"THREAD")


def esearch_response(
    tag: str | None,
    *,
    uid: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    count: int | None = None,
    all_numbers: Iterable[int] | None = None,
    modseq: int | None = None,
) -> bytes:
    """
    ``* ESEARCH (TAG "a1") UID MIN 2 COUNT 3 ALL 2,10:11`` (RFC 4731 §3.1): only the results asked
    for, ALL compacted; MIN, MAX and ALL are left out when nothing matched.
    """
    parts = [b"ESEARCH"]
    if tag is not None:
        parts.append(b"(TAG " + encode_string(tag) + b")")
    if uid:
        parts.append(b"UID")
    if minimum is not None:
        parts.append(b"MIN %d" % minimum)
    if maximum is not None:
        parts.append(b"MAX %d" % maximum)
    if count is not None:
        parts.append(b"COUNT %d" % count)
    if all_numbers is not None:
        numbers = list(all_numbers)
        if numbers:
            parts.append(b"ALL " + compact_sequence_set(numbers).encode("ascii"))
    if modseq is not None:
        parts.append(b"MODSEQ %d" % modseq)
    return _untagged(*parts)


def id_response(parameters: Iterable[tuple[str, str | None]] | None) -> bytes:
    """``* ID ("name" "Strata" ...)`` or ``* ID NIL`` (RFC 2971 §3.2)."""
    if parameters is None:
        return _untagged(b"ID", b"NIL")
    values: list[Value] = []
    for key, value in parameters:
        values += [key, value]
    return _untagged(b"ID", encode_value(values))


# -- FETCH ----------------------------------------------------------------------------------------


def fetch_item_name(attribute: FetchAttribute) -> str:
    """
    The name a FETCH response gives an item: BODY.PEEK answers as BODY (RFC 3501 §7.4.2), and a
    partial fetch as ``BODY[section]<origin>``.
    """
    section = attribute.section
    if section is None:
        return attribute.name
    spec = ".".join(str(n) for n in section.part)
    if section.text is not None:
        spec = f"{spec}.{section.text}" if spec else section.text
    if section.fields:
        spec += " (" + " ".join(section.fields) + ")"
    name = f"BODY[{spec}]"
    if attribute.partial is not None:
        name += f"<{attribute.partial[0]}>"
    return name


def fetch_response_parts(
    sequence_number: int, items: Iterable[tuple[str, Value]]
) -> list[bytes | Streamed]:
    """
    ``* n FETCH (NAME value ...)`` CRLF as byte strings with a L{Streamed} wherever the server
    must write that many octets of a body itself.  Names are written as given (they may hold a
    header field list, ``BODY[HEADER.FIELDS (SUBJECT)]``).
    """
    out: list[_Part] = [b"* %d FETCH (" % sequence_number]
    for i, (name, value) in enumerate(items):
        if "\r" in name or "\n" in name or not name.isascii():
            raise ValueError(f"{name!r} is not a FETCH item name")
        out.append((b" " if i else b"") + name.encode("ascii") + b" ")
        out.extend(_encode_parts(value))
    out.append(b")\r\n")
    return _merged(out)


def fetch_response(sequence_number: int, items: Iterable[tuple[str, Value]]) -> bytes:
    """``* n FETCH (...)`` CRLF as one byte string; use L{fetch_response_parts} for L{Streamed}."""
    parts = fetch_response_parts(sequence_number, items)
    if len(parts) != 1 or not isinstance(parts[0], bytes):
        raise ValueError("a Streamed value needs fetch_response_parts")
    return parts[0]
