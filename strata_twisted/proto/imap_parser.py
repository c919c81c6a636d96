# -*- test-case-name: tests.test_proto_imap_parser -*-
"""
The IMAP4rev1 command parser as a sans-IO engine: bytes in, parsed commands out.

The adapter feeds what the client sent to L{IMAPCommandParser.receive_data} and takes events from
L{IMAPCommandParser.next_event} until it gets L{NEED_DATA}.  Nothing is parsed until
L{IMAPCommandParser.next_event} asks for it, so the server decides when the next pipelined command
is read: after STARTTLS it calls L{IMAPCommandParser.discard_buffered} before anything sent in the
clear behind the command can count (RFC 3501 §6.2.1, RFC 2595 §3.1); after IDLE it calls
L{IMAPCommandParser.start_idle}; for an AUTHENTICATE exchange it calls
L{IMAPCommandParser.expect_authenticate_response} after each challenge it writes.

The grammar is RFC 3501 §9 with the commands and arguments of LITERAL+ (RFC 7888), IDLE (RFC 2177),
NAMESPACE (RFC 2342), UIDPLUS (RFC 4315), MOVE (RFC 6851), UNSELECT (RFC 3691), ID (RFC 2971),
ENABLE (RFC 5161), LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154), LIST-STATUS (RFC 5819),
CONDSTORE (RFC 7162), ESEARCH (RFC 4731), SORT and THREAD (RFC 5256) and SASL-IR (RFC 4959).

Literals.  A synchronizing literal ``{n}`` yields L{ContinuationRequired} (or L{AppendStart} for the
message of an APPEND); the parser reads none of its octets until the server calls
L{IMAPCommandParser.accept_literal} (after writing ``+ ...``) or refuses it with
L{IMAPCommandParser.reject_literal} (after writing a tagged NO or BAD), in which case the client
sends nothing more of that command (RFC 3501 §7.5).  A non-synchronizing literal ``{n+}`` is read
at once.  The message of an APPEND is never held whole: it arrives as L{AppendData} events, as the
bytes come, so the server can write it to storage as it goes.

Limits (L{ParserLimits}, changeable between commands through L{IMAPCommandParser.limits}): the
octets of one command outside its literals, the size of any other literal, the size of an APPEND
message, and the number of literals in one command.  An ID command may always be as long as the
longest legal ID (RFC 2971 §3.3: 30 pairs, fields of 30 octets, values of 1024), whatever the
line limit; what goes beyond RFC 2971's limits is refused.  A command that breaks one yields
L{CommandError} and the parser keeps its place in the stream: the rest of an over-long line is
dropped up to its end, a too-large synchronizing literal is refused before the client sends it, and
a too-large non-synchronizing literal is read and thrown away, never stored.

This module must never touch a socket, a reactor, a clock or a store, and it must never raise on
anything a client sends: every byte sequence ends in an event or a wait for more bytes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

__all__ = [
    "MAX_SEARCH_DEPTH",
    "NEED_DATA",
    "AppendData",
    "AppendEnd",
    "AppendStart",
    "Authenticate",
    "AuthenticateCancelled",
    "AuthenticateResponse",
    "Command",
    "CommandError",
    "ContinuationRequired",
    "Copy",
    "Enable",
    "Event",
    "Expunge",
    "Fetch",
    "FetchAttribute",
    "IMAPCommandParser",
    "Id",
    "IdleDone",
    "ListMailboxes",
    "Login",
    "Lsub",
    "MailboxCommand",
    "NeedData",
    "ParserLimits",
    "Rename",
    "Search",
    "SearchKey",
    "Section",
    "Select",
    "SequenceSet",
    "Simple",
    "Sort",
    "SortCriterion",
    "Status",
    "Store",
    "Thread",
    "decode_mailbox_name",
    "encode_mailbox_name",
]


@dataclass(frozen=True)
class ParserLimits:
    """What one command may hold before the parser refuses it."""

    max_line_length: int = 64 * 1024  # octets of one command outside its literals, CRLFs excluded
    max_literal_size: int = 64 * 1024  # any literal but an APPEND message; small before login
    max_append_size: int = 50 * 1024 * 1024  # the message literal of APPEND
    max_literals: int = 32  # literals in one command

    def __post_init__(self) -> None:
        for name in ("max_literal_size", "max_append_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_line_length", "max_literals"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


_DEFAULT_LIMITS: Final = ParserLimits()


class NeedData(enum.Enum):
    """The type of L{NEED_DATA}."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by L{IMAPCommandParser.next_event} when it needs more bytes or an answer."""


# -- values inside commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """
    A sequence set (RFC 3501 §9 ``sequence-set``) as written: ranges whose ends are numbers or None
    for ``*``, the largest number in use.  ``5`` is the range ``(5, 5)``.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """
        The set as sorted, merged, inclusive ranges, ``*`` standing for ``largest``.

        RFC 3501 §9: a range ``a:b`` means the same as ``b:a``, so ``559:*`` holds ``largest`` even
        when 559 is above it.  Numbers above ``largest`` or below 1 name nothing (an empty mailbox
        has nothing, not even ``*``); whether naming them is an error is the caller's business.
        """
        spans: list[tuple[int, int]] = []
        for start, stop in self.ranges:
            a = largest if start is None else start
            b = largest if stop is None else stop
            low, high = max(min(a, b), 1), min(max(a, b), largest)
            if low <= high:
                spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        """Whether ``number`` is in the set, ``*`` standing for ``largest``."""
        return any(low <= number <= high for low, high in self.resolve(largest))


@dataclass(frozen=True)
class Section:
    """
    A body section (RFC 3501 §6.4.5): ``part`` numbers (empty for the whole message), then
    ``text`` — None, ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``, ``TEXT`` or ``MIME`` —
    and, for the HEADER.FIELDS forms, the upper-cased field names.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchAttribute:
    """
    One FETCH data item, macros already expanded.

    ``name`` is upper-cased (``FLAGS``, ``RFC822.SIZE``, ``BODY``, ``MODSEQ``...).  BODY with a
    ``section`` is a body-part fetch, ``peek`` when written BODY.PEEK (no ``\\Seen``), and
    ``partial`` is ``(origin, length)`` from ``<origin.length>``.  BODY without a section is the
    non-extensible BODYSTRUCTURE.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


SearchValue: TypeAlias = "str | int | datetime.date | SequenceSet | None"


@dataclass(frozen=True)
class SearchKey:
    """
    One node of a SEARCH criteria tree (RFC 3501 §6.4.4).

    ``name`` is the upper-cased key (``SUBJECT``, ``SINCE``, ``UID``, ``MODSEQ``...),
    ``SEQUENCE-SET`` for a bare sequence set, ``AND`` for a parenthesized list or several top-level
    keys, ``OR`` and ``NOT`` for those.  ``value`` is its argument (a str for strings and keywords,
    an int for LARGER/SMALLER/MODSEQ, a date, or a L{SequenceSet}); ``field`` is the HEADER field
    name; ``keys`` are the operands of AND, OR and NOT.

    AND and OR have two operands or more: the parser merges an AND that is an operand of an AND
    into it, and an OR into an OR (``OR OR a b c`` is OR of a, b and c), and a list of one key is
    that key.  A tree from the parser nests at most L{MAX_SEARCH_DEPTH} deep.
    """

    name: str
    value: SearchValue = None
    field: str | None = None
    keys: tuple[SearchKey, ...] = ()


@dataclass(frozen=True)
class SortCriterion:
    """One SORT key (RFC 5256 §3), upper-cased, and whether REVERSE precedes it."""

    key: str
    reverse: bool = False


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandError:
    """
    A command the parser could not accept; the server answers ``<tag> <status> [code] text``.

    ``tag`` is None when not even the tag could be read (answer ``* BAD``).  ``status`` is BAD for
    syntax and limits, NO where the RFC asks for it (an unsupported SEARCH charset:
    ``NO [BADCHARSET (US-ASCII UTF-8)]``).  ``code`` is a response code name such as ``TOOBIG``.
    After an L{AppendStart} an error with the same tag means the message is incomplete: drop it.
    """

    tag: str | None
    text: str
    status: Literal["BAD", "NO"] = "BAD"
    code: str | None = None


@dataclass(frozen=True)
class ContinuationRequired:
    """
    A synchronizing literal of ``size`` octets is announced.  Write ``+ ...`` and call
    L{IMAPCommandParser.accept_literal}, or answer the tag with NO/BAD and call
    L{IMAPCommandParser.reject_literal}.
    """

    tag: str
    size: int


@dataclass(frozen=True)
class AppendStart:
    """
    APPEND (RFC 3501 §6.3.11) is about to send its message of ``size`` octets.

    When ``needs_continuation``, the client waits: write ``+ ...`` and call
    L{IMAPCommandParser.accept_literal}, or refuse (``NO [TRYCREATE]``...) and call
    L{IMAPCommandParser.reject_literal}.  Otherwise (LITERAL+) the message follows anyway;
    L{IMAPCommandParser.reject_literal} may still be called at any time before L{AppendEnd} to have
    the rest thrown away.  Then come L{AppendData} events and L{AppendEnd} (or L{CommandError}).
    """

    tag: str
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime.datetime | None
    size: int
    needs_continuation: bool


@dataclass(frozen=True)
class AppendData:
    """Octets of the APPEND message, in order; how they are cut into events is not meaningful."""

    tag: str
    data: bytes


@dataclass(frozen=True)
class AppendEnd:
    """The APPEND message and its command line are complete: store it and answer the tag."""

    tag: str


@dataclass(frozen=True)
class IdleDone:
    """The line that ends IDLE (RFC 2177 §3): ``valid`` when it was DONE, else answer BAD."""

    valid: bool


@dataclass(frozen=True)
class AuthenticateResponse:
    """
    The client's answer to an AUTHENTICATE challenge, base64-decoded (RFC 3501 §6.2.2); None when
    it was not valid base64 (answer the AUTHENTICATE tag with BAD).
    """

    data: bytes | None


@dataclass(frozen=True)
class AuthenticateCancelled:
    """The client answered a challenge with ``*``: answer the AUTHENTICATE tag with BAD."""


# Commands.  Each carries its tag; ``name`` is the upper-cased command name.


@dataclass(frozen=True)
class Simple:
    """
    A command without arguments: CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE, IDLE, NAMESPACE,
    UNSELECT.
    """

    tag: str
    name: str


@dataclass(frozen=True)
class Login:
    """LOGIN user password; both decoded as UTF-8, undecodable octets kept as surrogates."""

    tag: str
    user: str
    password: str
    name: ClassVar[str] = "LOGIN"


@dataclass(frozen=True)
class Authenticate:
    """AUTHENTICATE mechanism, upper-cased, with the SASL-IR initial response (RFC 4959)."""

    tag: str
    mechanism: str
    initial_response: bytes | None = None  # b"" when sent as "="
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True)
class MailboxCommand:
    """CREATE, DELETE, SUBSCRIBE or UNSUBSCRIBE of one mailbox."""

    tag: str
    name: str
    mailbox: str


@dataclass(frozen=True)
class Select:
    """SELECT or EXAMINE, with the CONDSTORE select parameter (RFC 7162 §3.1.8)."""

    tag: str
    name: str
    mailbox: str
    condstore: bool = False


@dataclass(frozen=True)
class Rename:
    """RENAME existing new."""

    tag: str
    mailbox: str
    new_name: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True)
class ListMailboxes:
    """
    LIST, basic or extended (RFC 5258): selection options, reference, one or more patterns, and
    return options (upper-cased, each once); ``status_items`` are those of
    ``RETURN (STATUS (...))`` (RFC 5819), or None.

    ``extended`` tells the two forms apart, because their answers differ (RFC 5258 §3): it is set
    when the command has a selection option list (even ``()``), a parenthesized pattern list or a
    RETURN list (even ``RETURN ()``).  Only the parser's known options get here: an unknown one,
    or RECURSIVEMATCH without SUBSCRIBED or SPECIAL-USE, is a L{CommandError} (BAD).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()
    return_options: frozenset[str] = frozenset()
    status_items: tuple[str, ...] | None = None
    extended: bool = False
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True)
class Lsub:
    """LSUB reference pattern."""

    tag: str
    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True)
class Status:
    """STATUS mailbox (items), items upper-cased."""

    tag: str
    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True)
class Fetch:
    """[UID] FETCH with its items and the CONDSTORE CHANGEDSINCE modifier (RFC 7162 §3.1.4)."""

    tag: str
    sequence_set: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None
    name: ClassVar[str] = "FETCH"


@dataclass(frozen=True)
class Store:
    """
    [UID] STORE: ``mode`` is ``+`` (add), ``-`` (remove) or ``""`` (replace); ``silent`` for
    ``.SILENT``; ``unchanged_since`` is the CONDSTORE modifier (RFC 7162 §3.1.3).
    """

    tag: str
    sequence_set: SequenceSet
    mode: Literal["+", "-", ""]
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    unchanged_since: int | None = None
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True)
class Copy:
    """[UID] COPY or [UID] MOVE (RFC 6851) to a mailbox."""

    tag: str
    name: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True)
class Search:
    """
    [UID] SEARCH.  ``charset`` as given (upper-cased) or None; strings in ``key`` are decoded with
    it.  ``return_options`` is None without RETURN (answer ``* SEARCH``), else the ESEARCH options
    (RFC 4731), empty for ``RETURN ()``, which means ALL.
    """

    tag: str
    key: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    uid: bool = False
    name: ClassVar[str] = "SEARCH"


@dataclass(frozen=True)
class Sort:
    """[UID] SORT (RFC 5256 §3), with ESORT return options (RFC 5267) or None."""

    tag: str
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    return_options: tuple[str, ...] | None = None
    uid: bool = False
    name: ClassVar[str] = "SORT"


@dataclass(frozen=True)
class Thread:
    """
    [UID] THREAD (RFC 5256 §3): ``algorithm`` upper-cased, ORDEREDSUBJECT or REFERENCES (any
    other is refused with BAD), ``charset`` as given (upper-cased), strings in ``key`` decoded
    with it, as for SORT.
    """

    tag: str
    algorithm: str
    charset: str
    key: SearchKey
    uid: bool = False
    name: ClassVar[str] = "THREAD"


@dataclass(frozen=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE with its UID set (RFC 4315 §2.1)."""

    tag: str
    uid_set: SequenceSet | None = None
    name: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True)
class Enable:
    """ENABLE (RFC 5161) with the upper-cased capability names."""

    tag: str
    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True)
class Id:
    """ID (RFC 2971): the field/value pairs, or None for ``ID NIL``."""

    tag: str
    parameters: tuple[tuple[str, str | None], ...] | None
    name: ClassVar[str] = "ID"


Command: TypeAlias = (
    Simple
    | Login
    | Authenticate
    | MailboxCommand
    | Select
    | Rename
    | ListMailboxes
    | Lsub
    | Status
    | Fetch
    | Store
    | Copy
    | Search
    | Sort
    | Thread
    | Expunge
    | Enable
    | Id
)

Event: TypeAlias = (
    Command
    | CommandError
    | ContinuationRequired
    | AppendStart
    | AppendData
    | AppendEnd
    | IdleDone
    | AuthenticateResponse
    | AuthenticateCancelled
)


# -- modified UTF-7 (RFC 3501 §5.1.3) -------------------------------------------------------------


def encode_mailbox_name(name: str) -> str:
    """
    A mailbox name in modified UTF-7: printable ASCII but ``&`` stands for itself, ``&`` is ``&-``,
    and every other run of characters is ``&`` + base64 of its UTF-16BE, ``,`` for ``/``, + ``-``.

    Raises ValueError for a name holding lone surrogates, which UTF-16 cannot carry.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            try:
                raw = "".join(run).encode("utf-16-be")
            except UnicodeEncodeError as e:
                raise ValueError("a mailbox name cannot hold lone surrogates") from e
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            run.clear()

    for char in name:
        if "\x20" <= char <= "\x7e":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


_MUTF7_PART: Final = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mailbox_name(encoded: str) -> str:
    """
    The mailbox name that ``encoded`` (modified UTF-7) stands for.

    Only the one canonical spelling is accepted (RFC 3501 §5.1.3: no printable ASCII inside base64,
    no two adjacent base64 runs, zero padding bits), so a name has exactly one wire form; anything
    else raises ValueError.
    """

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        data = body.replace(",", "/")
        try:
            raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
            return raw.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ValueError(f"{encoded!r} is not valid modified UTF-7") from e

    if any(not "\x20" <= char <= "\x7e" for char in encoded):
        raise ValueError(f"{encoded!r} is not valid modified UTF-7")
    decoded = _MUTF7_PART.sub(replace, encoded)
    # A stray "&" (one _MUTF7_PART did not consume) or any non-canonical form fails this check.
    try:
        canonical = encode_mailbox_name(decoded)
    except ValueError:
        canonical = ""
    if canonical != encoded:
        raise ValueError(f"{encoded!r} is not valid modified UTF-7")
    return decoded


# -- grammar ---------------------------------------------------------------------------------------


class _SyntaxError(Exception):
    """A command does not follow the grammar; becomes a L{CommandError}."""

    def __init__(
        self, text: str, status: Literal["BAD", "NO"] = "BAD", code: str | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        self.status: Literal["BAD", "NO"] = status
        self.code = code


# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
# resp-specials.  Octets above 0x7f are not CHARs, so not ATOM-CHARs either.
_ATOM_CHARS: Final = frozenset(range(0x21, 0x7F)) - frozenset(b'(){%*"\\]')
_ASTRING_CHARS: Final = _ATOM_CHARS | frozenset(b"]")
_LIST_CHARS: Final = _ASTRING_CHARS | frozenset(b"%*")
_TAG_CHARS: Final = _ASTRING_CHARS - frozenset(b"+")
_DIGITS: Final = frozenset(b"0123456789")
_NAME_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_LITERAL_MARK: Final = 0  # a NUL in the assembled command text stands for the next literal
_MAX_NUMBER: Final = 2**32 - 1  # RFC 3501 §9: number is an unsigned 32-bit integer
_MAX_MODSEQ: Final = 2**63 - 1  # RFC 7162 §7: mod-sequence-value is at most 63 bits
MAX_SEARCH_DEPTH: Final = 64
"""
How deeply SEARCH criteria may nest: NOT, OR and parenthesized lists one inside another, counted
after merging an AND into the AND it is in (an OR into its OR), so that ``OR OR OR a b c d`` and
``((((a))))`` are flat however long they are.  Deeper criteria are refused with BAD.  The parser
reads any nesting without recursion; this bound keeps recursive walks of a L{SearchKey} tree (the
matcher, the planner, the dataclass's own ==, hash and repr: up to 4 levels of Python's recursion
count per level) within about 270 of Python's 1000.  Dovecot has no bound below its line
length, but no client nests alternating lists and ORs anywhere near this deep; long chains of one
operator, which clients do send, are flat here.
"""
# RFC 2971 §3.3: "Field strings MUST NOT be longer than 30 octets.  Value strings MUST NOT be
# longer than 1024 octets.  Implementations MUST NOT send more than 30 field-value pairs."
_MAX_ID_PAIRS: Final = 30
_MAX_ID_FIELD: Final = 30
_MAX_ID_VALUE: Final = 1024
# The longest legal ID line outside literals: every pair quoted with every octet escaped, one
# space after each string, "tag ID (" ")" and 1 KiB for the tag.  About 63 KiB.
_MAX_ID_LINE: Final = (
    1024
    + len(" ID ()")
    + _MAX_ID_PAIRS * ((2 + 2 * _MAX_ID_FIELD + 1) + (2 + 2 * _MAX_ID_VALUE + 1))
)
_ID_COMMAND: Final = re.compile(rb"[\x21-\x7e]+ ID[ (]", re.IGNORECASE)

_SYSTEM_FLAGS: Final = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
# RFC 3501 §9 date-time, with date-day-fixed (SP DIGIT / 2DIGIT) widened to 1*2DIGIT.
_DATE_TIME: Final = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_DATE: Final = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")

_MACROS: Final = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_NAMES: Final = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE"}
    | {"RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"}
)
_SECTION_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})
_STATUS_ITEMS: Final = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"}
)
# RFC 5258 §3.1 and §3.2, RFC 6154 §3 (SPECIAL-USE), RFC 5819 §2 (STATUS).  REMOTE is accepted and
# means nothing here: Strata has no remote mailboxes (RFC 5258 §3.1 lets such a server ignore it).
_LIST_SELECTION: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
_SEARCH_FLAG_KEYS: Final = frozenset(
    {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN"}
    | {"UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
)
_SEARCH_STRING_KEYS: Final = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_SEARCH_DATE_KEYS: Final = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_SEARCH_RETURN: Final = frozenset({"MIN", "MAX", "ALL", "COUNT"})
_SEARCH_CHARSETS: Final = {"US-ASCII": "ascii", "UTF-8": "utf-8"}
_SORT_KEYS: Final = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
_THREAD_ALGORITHMS: Final = frozenset({"ORDEREDSUBJECT", "REFERENCES"})  # RFC 5256 §3
_UID_COMMANDS: Final = frozenset(
    {"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "SORT", "THREAD", "EXPUNGE"}
)
_SIMPLE_COMMANDS: Final = frozenset(
    {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "IDLE", "NAMESPACE", "UNSELECT"}
)


class _Cursor:
    """
    Reads one assembled command: its text, where each literal stands as one NUL, and the literals.

    Every reader raises L{_SyntaxError} when the input does not match.
    """

    def __init__(self, text: bytes, literals: list[bytes]) -> None:
        self.text = text
        self.pos = 0
        self.literals = literals
        self.next_literal = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> int:
        """The next octet, or -1 at the end."""
        return self.text[self.pos] if self.pos < len(self.text) else -1

    def expect(self, token: bytes, what: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise _SyntaxError(f"expected {what}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def try_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def run(self, allowed: frozenset[int], what: str) -> bytes:
        """One or more octets from ``allowed``."""
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] in allowed:
            self.pos += 1
        if self.pos == start:
            raise _SyntaxError(f"expected {what}")
        return text[start : self.pos]

    def atom(self) -> str:
        return self.run(_ATOM_CHARS, "an atom").decode("ascii")

    def keyword(self) -> str:
        return self.atom().upper()

    def peek_keyword(self) -> str:
        """The upper-cased atom at the cursor, without consuming it; "" when there is none."""
        end = self.pos
        while end < len(self.text) and self.text[end] in _ATOM_CHARS:
            end += 1
        return self.text[self.pos : end].decode("ascii").upper()

    def number(self, maximum: int = _MAX_NUMBER, *, nonzero: bool = False) -> int:
        digits = self.run(_DIGITS, "a number")
        if len(digits) > 20:
            raise _SyntaxError("number too large")
        value = int(digits)
        if value > maximum:
            raise _SyntaxError("number too large")
        if nonzero and value == 0:
            raise _SyntaxError("expected a number above zero")
        return value

    def literal(self) -> bytes:
        if self.peek() != _LITERAL_MARK:
            raise _SyntaxError("expected a literal")
        self.pos += 1
        data = self.literals[self.next_literal]
        self.next_literal += 1
        return data

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        out = bytearray()
        text = self.text
        while True:
            if self.pos >= len(text):
                raise _SyntaxError("unterminated quoted string")
            char = text[self.pos]
            self.pos += 1
            if char == 0x22:
                return bytes(out)
            if char == 0x5C:
                # RFC 3501 §9: only "\"" and "\\" may be escaped.
                if self.pos >= len(text) or text[self.pos] not in b'"\\':
                    raise _SyntaxError("bad escape in quoted string")
                char = text[self.pos]
                self.pos += 1
            elif char == _LITERAL_MARK:
                raise _SyntaxError("unterminated quoted string")
            out.append(char)

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == _LITERAL_MARK:
            return self.literal()
        raise _SyntaxError("expected a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, _LITERAL_MARK):
            return self.string()
        return self.run(_ASTRING_CHARS, "a string")

    def nstring(self) -> bytes | None:
        if self.peek_keyword() == "NIL":
            self.pos += 3
            return None
        return self.string()

    def mailbox(self) -> str:
        return _mailbox_from(self.astring())

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, _LITERAL_MARK):
            raw = self.string()
        else:
            raw = self.run(_LIST_CHARS, "a mailbox pattern")
        return _mailbox_from(raw, pattern=True)

    def parenthesized(self, item: Callable[[], object], *, allow_empty: bool = False) -> None:
        """``(`` item *(SP item) ``)``; the caller's ``item`` collects what it reads."""
        self.expect(b"(", '"("')
        if allow_empty and self.peek() == 0x29:
            self.pos += 1
            return
        item()
        while self.try_sp():
            item()
        self.expect(b")", '")"')

    def keyword_list(self, *, allow_empty: bool = True) -> list[str]:
        words: list[str] = []
        self.parenthesized(lambda: words.append(self.keyword()), allow_empty=allow_empty)
        return words

    def flag(self) -> str:
        if self.peek() == 0x5C:
            self.pos += 1
            name = "\\" + self.atom()
            return _SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        flags: list[str] = []
        self.parenthesized(lambda: flags.append(self.flag()), allow_empty=True)
        return tuple(flags)

    def sequence_set(self) -> SequenceSet:
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            start = self._seq_number()
            stop = start
            if self.peek() == 0x3A:
                self.pos += 1
                stop = self._seq_number()
            ranges.append((start, stop))
            if self.peek() != 0x2C:
                return SequenceSet(tuple(ranges))
            self.pos += 1

    def _seq_number(self) -> int | None:
        if self.peek() == 0x2A:
            self.pos += 1
            return None
        return self.number(nonzero=True)

    def date_time(self) -> datetime.datetime:
        raw = self.quoted()
        match = _DATE_TIME.fullmatch(raw)
        if match is None:
            raise _SyntaxError("bad date-time")
        day, month, year, hour, minute, second, sign, zh, zm = match.groups()
        month_number = _MONTHS.get(month.decode("ascii").upper())
        offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
        try:
            zone = datetime.timezone(-offset if sign == b"-" else offset)
            if month_number is None:
                raise ValueError("bad month")
            return datetime.datetime(
                int(year), month_number, int(day), int(hour), int(minute), int(second), 0, zone
            )
        except ValueError as e:
            raise _SyntaxError("bad date-time") from e

    def date(self) -> datetime.date:
        raw = self.quoted() if self.peek() == 0x22 else self.run(_ATOM_CHARS, "a date")
        match = _DATE.fullmatch(raw)
        month_number = None if match is None else _MONTHS.get(match[2].decode("ascii").upper())
        if match is None or month_number is None:
            raise _SyntaxError("bad date")
        try:
            return datetime.date(int(match[3]), month_number, int(match[1]))
        except ValueError as e:
            raise _SyntaxError("bad date") from e


def _mailbox_from(raw: bytes, *, pattern: bool = False) -> str:
    """A mailbox name (or pattern) from its wire form: modified UTF-7, INBOX in any case."""
    try:
        name = decode_mailbox_name(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _SyntaxError("mailbox name is not valid modified UTF-7") from e
    # RFC 3501 §5.1: INBOX is case-insensitive.
    if not pattern and name.upper() == "INBOX":
        return "INBOX"
    return name


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# Command arguments: each reader starts just after the command name and returns the command.


def _parse_simple(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    return Simple(tag, name)


def _parse_login(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    user = cur.astring()
    cur.sp()
    return Login(tag, _utf8(user), _utf8(cur.astring()))


def _parse_authenticate(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mechanism = cur.keyword()
    initial: bytes | None = None
    if cur.try_sp():
        # RFC 4959 §3: the initial response, base64, "=" for an empty one.
        raw = cur.run(_ATOM_CHARS, "an initial response")
        initial = b"" if raw == b"=" else _base64(raw)
        if initial is None:
            raise _SyntaxError("initial response is not valid base64")
    return Authenticate(tag, mechanism, initial)


def _base64(raw: bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        return None


def _parse_mailbox_command(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    return MailboxCommand(tag, name, cur.mailbox())


def _parse_select(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    condstore = False
    if cur.try_sp():
        params = cur.keyword_list(allow_empty=False)
        for param in params:
            if param != "CONDSTORE":
                raise _SyntaxError(f"unknown {name} parameter {param}")
        condstore = True
    return Select(tag, name, mailbox, condstore)


def _parse_rename(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    return Rename(tag, old, cur.mailbox())


def _parse_list(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    # RFC 5258 §3: the extended syntax is in use when the first argument is a parenthesized list
    # (selection options), the second is (patterns), or RETURN follows.
    extended = False
    selection: frozenset[str] = frozenset()
    if cur.peek() == 0x28:
        extended = True
        selection = frozenset(cur.keyword_list())
        _check_selection(selection)
        cur.sp()
    reference = _mailbox_from(cur.astring(), pattern=True)
    cur.sp()
    patterns: list[str] = []
    if cur.peek() == 0x28:
        extended = True
        cur.parenthesized(lambda: patterns.append(cur.list_mailbox()))
    else:
        patterns.append(cur.list_mailbox())
    options: set[str] = set()
    status_items: tuple[str, ...] | None = None
    if cur.try_sp():
        if cur.keyword() != "RETURN":
            raise _SyntaxError("expected RETURN")
        cur.sp()
        extended = True

        def option() -> None:
            nonlocal status_items
            word = cur.keyword()
            if word not in _LIST_RETURN:
                # RFC 5258 §3: "A server MUST respond to options it does not recognize with a
                # BAD response."
                raise _SyntaxError(f"unknown LIST return option {word}")
            options.add(word)
            if word == "STATUS":
                # RFC 5819 §2: RETURN (STATUS (status-att ...)).
                cur.sp()
                status_items = _status_items(cur)

        cur.parenthesized(option, allow_empty=True)
    return ListMailboxes(
        tag, reference, tuple(patterns), selection, frozenset(options), status_items, extended
    )


def _check_selection(selection: frozenset[str]) -> None:
    """The LIST selection options must be ones we know, and RECURSIVEMATCH needs company."""
    unknown = sorted(selection - _LIST_SELECTION)
    if unknown:
        # RFC 5258 §3: "A server MUST respond to options it does not recognize with a BAD
        # response."
        raise _SyntaxError(f"unknown LIST selection option {unknown[0]}")
    if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
        # RFC 5258 §3.1: RECURSIVEMATCH "MUST NOT occur as the only selection option (or only
        # with REMOTE) ... The server MUST return BAD tagged response in such case."
        raise _SyntaxError("RECURSIVEMATCH needs another selection option")


def _parse_lsub(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    reference = _mailbox_from(cur.astring(), pattern=True)
    cur.sp()
    return Lsub(tag, reference, cur.list_mailbox())


def _status_items(cur: _Cursor) -> tuple[str, ...]:
    items = cur.keyword_list(allow_empty=False)
    for item in items:
        if item not in _STATUS_ITEMS:
            raise _SyntaxError(f"unknown STATUS item {item}")
    return tuple(items)


def _parse_status(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    mailbox = cur.mailbox()
    cur.sp()
    return Status(tag, mailbox, _status_items(cur))


def _fetch_attribute(cur: _Cursor) -> list[FetchAttribute]:
    word = cur.run(_NAME_CHARS, "a FETCH item").decode("ascii").upper()
    if word in _MACROS:
        return [FetchAttribute(n) for n in _MACROS[word]]
    if word in ("BODY", "BODY.PEEK") and cur.peek() == 0x5B:
        section = _section(cur)
        partial: tuple[int, int] | None = None
        if cur.peek() == 0x3C:
            cur.pos += 1
            origin = cur.number()
            cur.expect(b".", '"."')
            length = cur.number(nonzero=True)
            cur.expect(b">", '">"')
            partial = (origin, length)
        return [FetchAttribute("BODY", section, partial, word == "BODY.PEEK")]
    if word not in _FETCH_NAMES:
        raise _SyntaxError(f"unknown FETCH item {word}")
    return [FetchAttribute(word)]


def _section(cur: _Cursor) -> Section:
    cur.expect(b"[", '"["')
    if cur.peek() == 0x5D:
        cur.pos += 1
        return Section()
    spec = cur.run(_NAME_CHARS, "a section").decode("ascii").upper().split(".")
    part: list[int] = []
    while spec and spec[0].isdigit():
        number = spec.pop(0)
        if len(number) > 10 or int(number) == 0 or int(number) > _MAX_NUMBER:
            raise _SyntaxError("bad section part")
        part.append(int(number))
    text = ".".join(spec) or None
    if text is not None and text not in _SECTION_TEXTS:
        raise _SyntaxError("bad section")
    if text == "MIME" and not part:
        raise _SyntaxError("MIME needs a section part")
    fields: list[str] = []
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cur.sp()
        cur.parenthesized(lambda: fields.append(_utf8(cur.astring()).upper()))
    cur.expect(b"]", '"]"')
    return Section(tuple(part), text, tuple(fields))


def _parse_fetch(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    sequence_set = cur.sequence_set()
    cur.sp()
    attributes: list[FetchAttribute] = []
    if cur.peek() == 0x28:
        cur.parenthesized(lambda: attributes.extend(_fetch_attribute(cur)))
    else:
        attributes.extend(_fetch_attribute(cur))
    changed_since: int | None = None
    if cur.try_sp():

        def modifier() -> None:
            nonlocal changed_since
            word = cur.keyword()
            if word != "CHANGEDSINCE":
                raise _SyntaxError(f"unknown FETCH modifier {word}")
            cur.sp()
            changed_since = cur.number(_MAX_MODSEQ, nonzero=True)

        cur.parenthesized(modifier)
    if uid and FetchAttribute("UID") not in attributes:
        # RFC 3501 §6.4.8: UID FETCH always returns the UID.
        attributes.append(FetchAttribute("UID"))
    if changed_since is not None and FetchAttribute("MODSEQ") not in attributes:
        # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ.
        attributes.append(FetchAttribute("MODSEQ"))
    return Fetch(tag, sequence_set, tuple(attributes), uid, changed_since)


_STORE_ITEM: Final = re.compile(r"([+-]?)FLAGS(\.SILENT)?")


def _parse_store(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    sequence_set = cur.sequence_set()
    cur.sp()
    unchanged_since: int | None = None
    if cur.peek() == 0x28:

        def modifier() -> None:
            nonlocal unchanged_since
            word = cur.keyword()
            if word != "UNCHANGEDSINCE":
                raise _SyntaxError(f"unknown STORE modifier {word}")
            cur.sp()
            unchanged_since = cur.number(_MAX_MODSEQ)

        cur.parenthesized(modifier)
        cur.sp()
    match = _STORE_ITEM.fullmatch(cur.keyword())
    if match is None:
        raise _SyntaxError("expected FLAGS, +FLAGS or -FLAGS")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        words = [cur.flag()]
        while cur.try_sp():
            words.append(cur.flag())
        flags = tuple(words)
    mode: Literal["+", "-", ""] = "+" if match[1] == "+" else "-" if match[1] == "-" else ""
    return Store(tag, sequence_set, mode, match[2] is not None, flags, uid, unchanged_since)


def _parse_copy(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    sequence_set = cur.sequence_set()
    cur.sp()
    return Copy(tag, name, sequence_set, cur.mailbox(), uid)


def _return_options(cur: _Cursor) -> tuple[str, ...] | None:
    """ESEARCH ``RETURN (...)`` (RFC 4731 §3) and the space after it, when present."""
    if cur.peek_keyword() != "RETURN":
        return None
    cur.keyword()
    cur.sp()
    options = cur.keyword_list()
    for option in options:
        if option not in _SEARCH_RETURN:
            raise _SyntaxError(f"unknown RETURN option {option}")
    cur.sp()
    return tuple(options)


def _charset(cur: _Cursor) -> tuple[str, str]:
    """A SEARCH charset and the codec it names; NO [BADCHARSET] for one we cannot search in."""
    charset = _utf8(cur.astring()).upper()
    codec = _SEARCH_CHARSETS.get(charset)
    if codec is None:
        raise _SyntaxError(f"unsupported charset {charset}", "NO", "BADCHARSET")
    return charset, codec


@dataclass
class _Merged:
    """
    An AND or OR not yet made a L{SearchKey}: its operands in a deque, so that merging it into
    an AND (OR) around it adds only the other operands, at either end.  A chain of thousands of
    ORs, nested to the left (``OR OR OR a b c d``) or to the right (``OR a OR b OR c d``), costs
    time in proportion to its length, not its square.
    """

    name: Literal["AND", "OR"]
    keys: deque[SearchKey]
    depth: int


_Operand: TypeAlias = "SearchKey | _Merged"


def _finished(operand: _Operand) -> SearchKey:
    if isinstance(operand, _Merged):
        return SearchKey(operand.name, keys=tuple(operand.keys))
    return operand


@dataclass
class _Open:
    """A search-key being read: a parenthesized list, an OR or a NOT, or the top level."""

    name: Literal["AND", "OR", "NOT", "TOP"]
    operands: list[tuple[_Operand, int]]  # the operands read so far, each with its depth


def _combined(
    name: Literal["AND", "OR"], operands: list[tuple[_Operand, int]]
) -> tuple[_Operand, int]:
    """
    AND or OR of the operands, and its depth.  An operand that is itself an AND (OR) gives its
    operands instead (the same search, by associativity); a list of one key is that key.
    """
    if len(operands) == 1:
        return operands[0]
    same = [i for i, (op, _) in enumerate(operands) if isinstance(op, _Merged) and op.name == name]
    base = max(same, key=lambda i: len(operands[i][0].keys), default=None)
    keys: deque[SearchKey] = deque()
    depth = 0
    if base is not None:
        merged = operands[base][0]
        assert isinstance(merged, _Merged)
        keys, depth = merged.keys, operands[base][1] - 1
    before = operands[:base] if base is not None else []
    after = operands[base + 1 :] if base is not None else operands
    for operand, operand_depth in reversed(before):
        if isinstance(operand, _Merged) and operand.name == name:
            keys.extendleft(reversed(operand.keys))
            depth = max(depth, operand_depth - 1)
        else:
            keys.appendleft(_finished(operand))
            depth = max(depth, operand_depth)
    for operand, operand_depth in after:
        if isinstance(operand, _Merged) and operand.name == name:
            keys.extend(operand.keys)
            depth = max(depth, operand_depth - 1)
        else:
            keys.append(_finished(operand))
            depth = max(depth, operand_depth)
    return _Merged(name, keys, depth + 1), depth + 1


def _search_keys(cur: _Cursor, codec: str) -> SearchKey:
    """
    1*(SP search-key) after the first space: one key, or AND of several.  Read without recursion
    (a stack of the keys open), so nesting costs memory, not Python stack; the tree it makes is
    refused when it nests more than L{MAX_SEARCH_DEPTH} deep (depth MAX_SEARCH_DEPTH + 1, a key
    alone being depth 1).
    """
    stack = [_Open("TOP", [])]
    while True:
        # The start of one search-key: "(" or NOT or OR opens one; anything else is whole.
        if cur.peek() == 0x28:
            cur.pos += 1
            stack.append(_Open("AND", []))
            continue
        word = cur.peek_keyword()
        if word in ("NOT", "OR"):
            cur.pos += len(word)
            cur.sp()
            stack.append(_Open("NOT" if word == "NOT" else "OR", []))
            continue
        done: tuple[_Operand, int] = (_search_key(cur, codec), 1)
        # Close every key this one completes.
        while True:
            if done[1] > MAX_SEARCH_DEPTH + 1:
                raise _SyntaxError("search criteria nested too deeply")
            top = stack[-1]
            top.operands.append(done)
            if top.name == "NOT":
                stack.pop()
                done = (SearchKey("NOT", keys=(_finished(done[0]),)), done[1] + 1)
            elif top.name == "OR" and len(top.operands) == 2:
                stack.pop()
                done = _combined("OR", top.operands)
            elif top.name == "AND" and cur.peek() == 0x29:
                cur.pos += 1
                stack.pop()
                done = _combined("AND", top.operands)
            elif top.name == "TOP" and not cur.try_sp():
                key, depth = _combined("AND", top.operands)
                if depth > MAX_SEARCH_DEPTH + 1:
                    raise _SyntaxError("search criteria nested too deeply")
                return _finished(key)
            else:
                if top.name != "TOP":
                    cur.sp()  # the next operand of the OR or the list follows
                break


def _search_key(cur: _Cursor, codec: str) -> SearchKey:
    """One search-key other than "(", NOT and OR, which L{_search_keys} reads."""
    char = cur.peek()
    if char == 0x2A or char in _DIGITS:
        return SearchKey("SEQUENCE-SET", cur.sequence_set())
    word = cur.keyword()
    if word in _SEARCH_FLAG_KEYS:
        return SearchKey(word)
    cur.sp()
    if word in _SEARCH_STRING_KEYS:
        return SearchKey(word, cur.astring().decode(codec, "replace"))
    if word in _SEARCH_DATE_KEYS:
        return SearchKey(word, cur.date())
    if word in ("KEYWORD", "UNKEYWORD"):
        return SearchKey(word, cur.atom())
    if word == "HEADER":
        field_name = cur.astring().decode(codec, "replace").upper()
        cur.sp()
        return SearchKey(word, cur.astring().decode(codec, "replace"), field_name)
    if word in ("LARGER", "SMALLER"):
        return SearchKey(word, cur.number())
    if word == "UID":
        return SearchKey(word, cur.sequence_set())
    if word == "MODSEQ":
        # RFC 7162 §3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer.
        if cur.peek() == 0x22:
            cur.quoted()
            cur.sp()
            if cur.keyword() not in ("PRIV", "SHARED", "ALL"):
                raise _SyntaxError("bad MODSEQ entry type")
            cur.sp()
        return SearchKey(word, cur.number(_MAX_MODSEQ))
    raise _SyntaxError(f"unknown search key {word}")


def _parse_search(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    return_options = _return_options(cur)
    charset: str | None = None
    codec = "utf-8"  # RFC 3501 says US-ASCII; clients send UTF-8 without CHARSET, so take it
    if cur.peek_keyword() == "CHARSET":
        cur.keyword()
        cur.sp()
        charset, codec = _charset(cur)
        cur.sp()
    return Search(tag, _search_keys(cur, codec), charset, return_options, uid)


def _parse_sort(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    return_options = _return_options(cur)
    criteria: list[SortCriterion] = []

    def criterion() -> None:
        word = cur.keyword()
        reverse = word == "REVERSE"
        if reverse:
            cur.sp()
            word = cur.keyword()
        if word not in _SORT_KEYS:
            raise _SyntaxError(f"unknown sort key {word}")
        criteria.append(SortCriterion(word, reverse))

    cur.parenthesized(criterion)
    cur.sp()
    charset, codec = _charset(cur)
    cur.sp()
    key = _search_keys(cur, codec)
    return Sort(tag, tuple(criteria), charset, key, return_options, uid)


def _parse_thread(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    # RFC 5256 §5: thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria, where
    # search-criteria = charset 1*(SP search-key): the charset is mandatory, as for SORT.
    cur.sp()
    algorithm = cur.keyword()
    if algorithm not in _THREAD_ALGORITHMS:
        raise _SyntaxError(f"unknown threading algorithm {algorithm}")
    cur.sp()
    charset, codec = _charset(cur)
    cur.sp()
    return Thread(tag, algorithm, charset, _search_keys(cur, codec), uid)


def _parse_expunge(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    if not uid:
        return Expunge(tag)
    cur.sp()
    return Expunge(tag, cur.sequence_set())


def _parse_enable(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    capabilities: list[str] = []
    cur.sp()
    capabilities.append(cur.keyword())
    while cur.try_sp():
        capabilities.append(cur.keyword())
    return Enable(tag, tuple(capabilities))


def _parse_id(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    cur.sp()
    if cur.peek_keyword() == "NIL":
        cur.keyword()
        return Id(tag, None)
    pairs: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = cur.string()
        cur.sp()
        value = cur.nstring()
        pairs.append((_utf8(key), None if value is None else _utf8(value)))

    cur.parenthesized(pair, allow_empty=True)
    # RFC 2971 §3.3's limits, refused as such.
    if len(pairs) > _MAX_ID_PAIRS:
        raise _SyntaxError(f"ID has more than {_MAX_ID_PAIRS} field-value pairs (RFC 2971)")
    for key, value in pairs:
        if len(key.encode("utf-8", "surrogateescape")) > _MAX_ID_FIELD:
            raise _SyntaxError(f"ID field longer than {_MAX_ID_FIELD} octets (RFC 2971)")
        if value is not None and len(value.encode("utf-8", "surrogateescape")) > _MAX_ID_VALUE:
            raise _SyntaxError(f"ID value longer than {_MAX_ID_VALUE} octets (RFC 2971)")
    return Id(tag, tuple(pairs))


def _parse_append(cur: _Cursor, tag: str, name: str, uid: bool) -> Command:
    # Reached only when the command ended without a message literal: APPEND's message must be one.
    raise _SyntaxError("APPEND needs the message as a literal")


_Reader: TypeAlias = Callable[[_Cursor, str, str, bool], Command]
_COMMANDS: Final[dict[str, _Reader]] = {
    **{name: _parse_simple for name in _SIMPLE_COMMANDS},
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "CREATE": _parse_mailbox_command,
    "DELETE": _parse_mailbox_command,
    "SUBSCRIBE": _parse_mailbox_command,
    "UNSUBSCRIBE": _parse_mailbox_command,
    "SELECT": _parse_select,
    "EXAMINE": _parse_select,
    "RENAME": _parse_rename,
    "LIST": _parse_list,
    "LSUB": _parse_lsub,
    "STATUS": _parse_status,
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _parse_copy,
    "MOVE": _parse_copy,
    "SEARCH": _parse_search,
    "SORT": _parse_sort,
    "THREAD": _parse_thread,
    "EXPUNGE": _parse_expunge,
    "ENABLE": _parse_enable,
    "ID": _parse_id,
    "APPEND": _parse_append,
}


def _command_name(cur: _Cursor) -> tuple[str, str, bool]:
    """The tag, the command name and whether UID came first."""
    tag = cur.run(_TAG_CHARS, "a tag").decode("ascii")
    cur.sp()
    name = cur.keyword()
    uid = name == "UID"
    if uid:
        cur.sp()
        name = cur.keyword()
        if name not in _UID_COMMANDS:
            raise _SyntaxError(f"UID {name} is not a command")
    return tag, name, uid


def _parse_command(text: bytes, literals: list[bytes]) -> Command | CommandError:
    """One whole command (literals in place) as its event, or the error that refuses it."""
    cur = _Cursor(text, literals)
    tag: str | None = _tag_of(text)
    try:
        tag, name, uid = _command_name(cur)
        reader = _COMMANDS.get(name)
        if reader is None:
            raise _SyntaxError(f"unknown command {name}")
        command = reader(cur, tag, name, uid)
        if not cur.at_end():
            raise _SyntaxError(f"unexpected characters after {name}")
    except _SyntaxError as e:
        return CommandError(tag, e.text, e.status, e.code)
    return command


_TAG: Final = re.compile(rb"([\x21-\x7e]+) ")


def _tag_of(text: bytes | bytearray) -> str | None:
    """The tag a command line starts with, when it is a valid one."""
    match = _TAG.match(text)
    if match is None or any(c not in _TAG_CHARS for c in match[1]):
        return None
    return match[1].decode("ascii")


@dataclass(frozen=True)
class _AppendHead:
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime.datetime | None


def _append_head(text: bytes, literals: list[bytes]) -> _AppendHead | None:
    """
    For a command that is about to send a literal: None unless it is APPEND whose mailbox is
    already given (the literal is then the message); raises L{_SyntaxError} for a malformed one.
    """
    cur = _Cursor(text, literals)
    try:
        _, name, _ = _command_name(cur)
    except _SyntaxError:
        return None  # not an APPEND we can see; the whole command is checked when it ends
    if name != "APPEND":
        return None
    cur.sp()
    if cur.at_end():
        return None  # this literal is the mailbox name
    mailbox = cur.mailbox()
    cur.sp()
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    if cur.peek() == 0x28:
        flags = cur.flag_list()
        cur.sp()
    if cur.peek() == 0x22:
        internal_date = cur.date_time()
        cur.sp()
    if not cur.at_end():
        raise _SyntaxError("bad APPEND arguments")
    return _AppendHead(mailbox, flags, internal_date)


# -- framing ---------------------------------------------------------------------------------------


class _Mode(enum.Enum):
    COMMAND = "command"  # reading command text
    LITERAL = "literal"  # reading a literal into the command
    AWAIT = "await"  # a synchronizing literal waits for accept_literal/reject_literal
    APPEND_DATA = "append data"  # streaming the APPEND message
    APPEND_END = "append end"  # the line after the APPEND message
    DISCARD_LINE = "discard line"  # dropping the rest of a refused command's line
    DISCARD_LITERAL = "discard literal"  # dropping a refused non-synchronizing literal
    IDLE = "idle"  # waiting for DONE
    AUTHENTICATE = "authenticate"  # waiting for a SASL response line


# RFC 3501 §9 literal = "{" number "}" CRLF; RFC 7888 §3 adds "+" before "}".
_LITERAL: Final = re.compile(rb"\{([0-9]+)(\+?)\}\Z")
_TAIL: Final = 32  # octets of a discarded line kept to see whether it announced a literal


class IMAPCommandParser:
    """
    One IMAP connection's client-to-server stream, parsed without I/O.

    Commands are parsed one at a time, only when L{next_event} is called, so what the server does
    with one command (STARTTLS, IDLE, AUTHENTICATE) decides how the bytes after it are read.
    """

    def __init__(self, limits: ParserLimits = _DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._mode = _Mode.COMMAND
        self._reset_command()

    def _reset_command(self) -> None:
        self._text = bytearray()  # the command so far, a NUL standing for each literal
        self._literals: list[bytes] = []
        self._literal = bytearray()
        self._remaining = 0  # octets still to come of the current literal
        self._literal_count = 0
        self._append: AppendStart | None = None
        self._tail = b""  # the end of a line being discarded

    # -- state ------------------------------------------------------------------------------------

    @property
    def awaiting_continuation(self) -> bool:
        """True while a synchronizing literal waits for L{accept_literal} or L{reject_literal}."""
        return self._mode is _Mode.AWAIT

    @property
    def in_append(self) -> bool:
        """True between L{AppendStart} and its L{AppendEnd} (or L{CommandError})."""
        return self._append is not None

    @property
    def buffered_size(self) -> int:
        """Octets held: unparsed input plus the part of a command assembled so far."""
        return (
            len(self._buffer)
            + len(self._text)
            + sum(len(literal) for literal in self._literals)
            + len(self._literal)
            + len(self._tail)
        )

    # -- input and control ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client, to be parsed by L{next_event}."""
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event, or L{NEED_DATA} (more bytes needed, or a literal awaits an answer)."""
        while True:
            mode = self._mode
            if mode is _Mode.AWAIT:
                return NEED_DATA
            if mode is _Mode.COMMAND:
                result = self._read_command_line()
            elif mode is _Mode.LITERAL:
                result = self._read_literal()
            elif mode is _Mode.APPEND_DATA:
                result = self._read_append_data()
            elif mode is _Mode.APPEND_END:
                result = self._read_append_end()
            elif mode is _Mode.DISCARD_LINE:
                result = self._discard_line()
            elif mode is _Mode.DISCARD_LITERAL:
                result = self._discard_literal()
            else:
                result = self._read_special_line()
            if result is not None:
                return result

    def accept_literal(self) -> None:
        """The server wrote ``+ ...``: read the synchronizing literal it was asked about."""
        if self._mode is not _Mode.AWAIT:
            raise RuntimeError("no literal is waiting for a continuation")
        self._mode = _Mode.APPEND_DATA if self._append is not None else _Mode.LITERAL

    def reject_literal(self) -> None:
        """
        The server refused the literal (and answered the tag): forget the command.

        Waiting for a continuation, the client sends nothing more of it.  During a LITERAL+ APPEND
        the rest of the message and of its line are read and thrown away.
        """
        if self._mode is _Mode.AWAIT:
            self._reset_command()
            self._mode = _Mode.COMMAND
        elif self._mode is _Mode.APPEND_DATA:
            remaining = self._remaining
            self._reset_command()
            self._remaining = remaining
            self._mode = _Mode.DISCARD_LITERAL
        elif self._mode is _Mode.APPEND_END:
            self._reset_command()
            self._mode = _Mode.DISCARD_LINE
        else:
            raise RuntimeError("no literal to reject")

    def discard_buffered(self) -> None:
        """
        Forget every byte received and not yet parsed, and any command half read.

        Call it on STARTTLS before starting TLS: nothing the client pipelined in the clear behind
        STARTTLS may be executed inside the TLS session (RFC 3501 §6.2.1, RFC 2595 §3.1).
        """
        self._buffer.clear()
        self._reset_command()
        self._mode = _Mode.COMMAND

    def start_idle(self) -> None:
        """After ``+ idling`` for IDLE (RFC 2177): the next line must be DONE (L{IdleDone})."""
        self._start_special(_Mode.IDLE)

    def expect_authenticate_response(self) -> None:
        """After a ``+ <challenge>``: the next line is a SASL response (RFC 3501 §6.2.2)."""
        self._start_special(_Mode.AUTHENTICATE)

    def _start_special(self, mode: _Mode) -> None:
        if self._mode is not _Mode.COMMAND or self._text:
            raise RuntimeError("a command is being read")
        self._mode = mode

    # -- reading ----------------------------------------------------------------------------------

    def _take_line(self, allowance: int) -> bytes | None | Literal[False]:
        """
        The next line (CR LF or bare LF removed) if it is at most ``allowance`` octets; None when it
        has not ended yet; False when it is too long (what was buffered of it is left in place).
        """
        buf = self._buffer
        end = buf.find(b"\n", 0, allowance + 2)
        if end < 0:
            # Without its LF a line of allowance+2 octets is too long even if its last is CR.
            return False if len(buf) >= allowance + 2 else None
        # RFC 3501 §2.2 wants CRLF; a bare LF is taken too, as Dovecot does.
        length = end - 1 if end and buf[end - 1] == 0x0D else end
        if length > allowance:
            return False
        line = bytes(buf[:length])
        del buf[: end + 1]
        return line

    def _is_id(self) -> bool:
        """Whether the command being read is ID (its tag and name are in already)."""
        return _ID_COMMAND.match(self._text or self._buffer[:64]) is not None

    def _read_command_line(self) -> Event | NeedData | None:
        limit = self.limits.max_line_length
        if limit < _MAX_ID_LINE and self._is_id():
            # A legal ID (RFC 2971 §3.3) is accepted even where lines are short (before login);
            # _parse_id refuses what goes beyond RFC 2971's limits.
            limit = _MAX_ID_LINE
        allowance = max(limit - len(self._text), 0)
        line = self._take_line(allowance)
        if line is None:
            return NEED_DATA
        if line is False:
            return self._refuse_rest("command line too long")
        if not line and not self._text:
            return None  # an empty line between commands is ignored
        if b"\x00" in line:
            return self._refuse_line(line, "NUL in command line")
        marker = _LITERAL.search(line)
        if marker is None:
            self._text += line
            event = _parse_command(bytes(self._text), self._literals)
            self._reset_command()
            return event
        self._text += line[: marker.start()]
        return self._literal_announced(marker)

    def _literal_announced(self, marker: re.Match[bytes]) -> Event | None:
        digits, synchronizing = marker[1], not marker[2]
        size = int(digits) if len(digits) <= 20 else 2**64
        tag = _tag_of(self._text)
        self._literal_count += 1
        if tag is None:
            return self._refuse_literal(None, size, synchronizing, "bad tag")
        # An ID may send each of its strings as a literal: 2 per pair (RFC 2971 §3.3).
        most = self.limits.max_literals
        if most < 2 * _MAX_ID_PAIRS and _ID_COMMAND.match(self._text):
            most = 2 * _MAX_ID_PAIRS
        if self._literal_count > most:
            return self._refuse_literal(tag, size, synchronizing, "too many literals")
        try:
            head = _append_head(bytes(self._text), self._literals)
        except _SyntaxError as e:
            return self._refuse_literal(tag, size, synchronizing, e.text)
        cap = self.limits.max_literal_size if head is None else self.limits.max_append_size
        if size > cap:
            return self._refuse_literal(tag, size, synchronizing, "literal too large", "TOOBIG")
        self._remaining = size
        if head is not None:
            self._append = AppendStart(
                tag, head.mailbox, head.flags, head.internal_date, size, synchronizing
            )
            self._text.clear()  # all of the command is in the event; hold nothing while it streams
            self._literals.clear()
            self._mode = _Mode.AWAIT if synchronizing else _Mode.APPEND_DATA
            return self._append
        self._text.append(_LITERAL_MARK)
        if synchronizing:
            self._mode = _Mode.AWAIT
            return ContinuationRequired(tag, size)
        self._mode = _Mode.LITERAL
        return None

    def _read_literal(self) -> NeedData | None:
        take = min(self._remaining, len(self._buffer))
        if take:
            self._literal += self._buffer[:take]
            del self._buffer[:take]
            self._remaining -= take
        if self._remaining:
            return NEED_DATA
        self._literals.append(bytes(self._literal))
        self._literal.clear()
        self._mode = _Mode.COMMAND
        return None

    def _read_append_data(self) -> Event | NeedData | None:
        append = self._append
        assert append is not None
        if not self._remaining:
            self._mode = _Mode.APPEND_END
            return None
        take = min(self._remaining, len(self._buffer))
        if not take:
            return NEED_DATA
        data = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._remaining -= take
        return AppendData(append.tag, data)

    def _read_append_end(self) -> Event | NeedData | None:
        append = self._append
        assert append is not None
        line = self._take_line(self.limits.max_line_length)
        if line is None:
            return NEED_DATA
        if line is False:
            return self._refuse_rest("command line too long", append.tag)
        if line:
            # MULTIAPPEND (RFC 3502) and CATENATE (RFC 4469) are not offered.
            return self._refuse_line(line, "unexpected characters after APPEND message", append.tag)
        self._reset_command()
        self._mode = _Mode.COMMAND
        return AppendEnd(append.tag)

    def _read_special_line(self) -> Event | NeedData | None:
        mode = self._mode
        line = self._take_line(self.limits.max_line_length)
        if line is None:
            return NEED_DATA
        if line is False:
            # Too long to be DONE or a sane SASL response: refuse it and drop it up to its end.
            self._mode = _Mode.DISCARD_LINE
            return IdleDone(False) if mode is _Mode.IDLE else AuthenticateResponse(None)
        self._mode = _Mode.COMMAND
        if mode is _Mode.IDLE:
            return IdleDone(line.upper() == b"DONE")
        if line == b"*":
            return AuthenticateCancelled()
        return AuthenticateResponse(_base64(line) if line else b"")

    # -- refusing ---------------------------------------------------------------------------------

    def _refuse_rest(self, text: str, tag: str | None = None) -> CommandError:
        """The line being read is too long: refuse it and drop the rest, up to its end."""
        if tag is None:
            tag = _tag_of(self._text or self._buffer[:256])
        self._reset_command()
        self._mode = _Mode.DISCARD_LINE
        return CommandError(tag, text)

    def _refuse_line(self, line: bytes, text: str, tag: str | None = None) -> CommandError:
        """A whole line was read and the command is refused: skip any literal it announces."""
        if tag is None:
            tag = _tag_of(self._text or line)
        self._reset_command()
        self._after_discarded_line(line)
        return CommandError(tag, text)

    def _refuse_literal(
        self, tag: str | None, size: int, synchronizing: bool, text: str, code: str | None = None
    ) -> CommandError:
        """
        Refuse a command as it announces a literal.  A synchronizing literal never comes (the
        client waits for a continuation that it will not get); a non-synchronizing one is read and
        thrown away, then the rest of its line.
        """
        self._reset_command()
        if synchronizing:
            self._mode = _Mode.COMMAND
        else:
            self._remaining = size
            self._mode = _Mode.DISCARD_LITERAL
        return CommandError(tag, text, "BAD", code)

    def _after_discarded_line(self, line_end: bytes) -> None:
        marker = _LITERAL.search(line_end)
        self._tail = b""
        if marker is not None and marker[2]:
            digits = marker[1]
            self._remaining = int(digits) if len(digits) <= 20 else 2**64
            self._mode = _Mode.DISCARD_LITERAL
        else:
            self._mode = _Mode.COMMAND

    def _discard_line(self) -> NeedData | None:
        buf = self._buffer
        end = buf.find(b"\n")
        if end < 0:
            self._tail = (self._tail + bytes(buf[-_TAIL:]))[-_TAIL:]
            buf.clear()
            return NEED_DATA
        line_end = (self._tail + bytes(buf[max(0, end - _TAIL) : end]))[-_TAIL - 1 :]
        del buf[: end + 1]
        if line_end.endswith(b"\r"):
            line_end = line_end[:-1]
        self._after_discarded_line(line_end)
        return None

    def _discard_literal(self) -> NeedData | None:
        take = min(self._remaining, len(self._buffer))
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining:
            return NEED_DATA
        self._mode = _Mode.DISCARD_LINE
        return None
